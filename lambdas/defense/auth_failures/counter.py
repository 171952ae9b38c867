"""Authorization-failure counters in DynamoDB, and ONE violation per client and window.

Counters table (COUNTERS_TABLE): partition key `pk` (S) = "auth#<kind>:<subject>#<window start, epoch s>"
(kind: thing, certificate or principal; see failures.subject_of);
attributes `count` (N), `seen` (SS: tokens of the deliveries already counted), `expires_at`
(N, the TTL attribute: window end + 1 day), `alarmed` (S: the token of the delivery that alarmed the
window) and `published` (BOOL, once its violation is published).

Per subject and window in one delivery, `record` makes ONE UpdateItem:
    ADD count :n, seen {token}  SET expires_at = :ttl   IF NOT contains(seen, token)
    ReturnValues ALL_NEW, ReturnValuesOnConditionCheckFailure ALL_OLD
The token is a hash of the delivery's log event ids for that client, so a retried invocation or
a redelivery adds nothing (the condition fails and the item as it was comes back instead): the
count is exactly-once per log event. ALL_NEW rather than UPDATED_NEW returns `alarmed` too (same
write cost), so an already alarmed window needs no second write. When the count is over
MAX_AUTH_FAILURES and the window has not alarmed, a second, conditional UpdateItem
    SET alarmed = <token>  IF attribute_not_exists(alarmed)
elects one winner among concurrent invocations, the delivery whose token it holds; only the winner
publishes the violation, then marks the window `published` (an outbox: the mark says the work is
done, `alarmed` only whose it is). If that publish fails, `alarmed` is removed again before the
error propagates, so the retry (or the next failure) can alarm and publish. If the invocation dies
or loses an answer between the mark and the publish (the fault sweep, tests/faults), the retry of
the same delivery finds `alarmed` = its own token without `published` and publishes then; and a
botocore re-send of the mark that fails its condition against its own first attempt is recognised
by the token. The violationId is deterministic (client|behaviour|window), so a second copy is a
duplicate downstream (the auto-response is idempotent on it). A window marked by an older
version (`alarmed` = true) counts as published.

Over the limit, a thing's counter publishes a violation of that thing; a certificate's counter
publishes a certificate violation (certificateId, the claimed clientId), unless the certificate
is attached to the thing it claimed, which one ListThingPrincipals call (defense.attribution,
only for the winner of the alarm) turns into that thing's violation. An UNATTRIBUTED principal
(not a certificate) is counted and alarms like any other, but is only logged: a violation names
a thing or a certificate. The only DynamoDB action used is UpdateItem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from defense.attribution import Attachments, resolve
from defense.auth_failures.failures import CERTIFICATE, THING, batch_token, counter_key, expires_at
from defense.env_settings import read_limits

BEHAVIOR_NAME = "AuthorizationFailures"
METRIC = "aws:num-authorization-failures"
MAX_WINDOW_SECONDS = 900
ALARMED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Settings:
    table: str
    topic: str | None
    profile: str = "fleetwarden-builtin"
    window_seconds: int = 300
    max_failures: int = 10


def settings_from_env(env: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """Settings from the environment -> (settings, problems). A bad limit keeps its default and is
    named in problems; COUNTERS_TABLE has no default (KeyError)."""
    env = os.environ if env is None else env
    table = env["COUNTERS_TABLE"]
    values, problems = read_limits(env, {"WINDOW_SECONDS": ("window_seconds", 1, MAX_WINDOW_SECONDS),
                                         "MAX_AUTH_FAILURES": ("max_failures", 0, 10**9)})
    topic = env.get("VIOLATION_TOPIC_ARN") or None
    if topic is None:
        problems.append("VIOLATION_TOPIC_ARN is not set")
    return Settings(table=table, topic=topic, **values), problems


@dataclass
class Outcome:
    kind: str  # failures.THING | CERTIFICATE | UNATTRIBUTED
    subject: str
    window_start: int
    added: int  # failures in this delivery
    applied: bool  # False: this delivery had been counted before (a retry or redelivery)
    count: int  # the window's count afterwards (0 if unknown: skipped)
    alarmed: bool  # the window has alarmed (before or by this call)
    violation: dict[str, Any] | None = None  # published by this call
    unreportable: bool = False  # alarmed by this call, but the principal is not a certificate
    skipped: bool = False  # not written: this container already saw the window alarmed


def build_violation(kind: str, subject: str, settings: Settings, count: int, window_start: int,
                    now_ms: int, claimed: str | None = None) -> dict[str, Any]:
    """The violation of a thing (kind THING) or of a certificate (kind CERTIFICATE, with the
    client id it claimed); its id is deterministic per subject, behaviour and window."""
    from shared.violations import make_violation

    return make_violation(
        thing=subject if kind == THING else None,
        certificate_id=subject if kind == CERTIFICATE else None,
        client_id=claimed if kind == CERTIFICATE else None, profile=settings.profile,
        behavior_name=BEHAVIOR_NAME, metric=METRIC,
        criteria={"comparisonOperator": "greater-than", "value": {"count": settings.max_failures},
                  "durationSeconds": settings.window_seconds},
        metric_value={"count": count}, event_time_ms=now_ms, window=window_start,
    )


class FailureCounter:
    """`client`: a boto3 DynamoDB client; `publish(violation)` raises if it was not published;
    `attachments` proves a certificate's thing (defense.attribution)."""

    def __init__(self, client: Any, settings: Settings, publish: Callable[[dict[str, Any]], None], *,
                 attachments: Attachments, now_ms: Callable[[], int], logger: Any):
        self.client = client
        self.attachments = attachments
        # The client's modeled error for a failed condition (a ClientError carrying the response).
        self.condition_failed = client.exceptions.ConditionalCheckFailedException
        self.settings = settings
        self.publish = publish
        self.now_ms = now_ms
        self.logger = logger
        # Windows this container knows have alarmed: further failures in them need no write.
        self.alarmed: set[str] = set()

    def _remember(self, pk: str) -> None:
        if len(self.alarmed) >= ALARMED_CACHE_SIZE:
            self.alarmed.clear()
        self.alarmed.add(pk)

    def record(self, kind: str, subject: str, window_start: int, event_ids: list[str],
               claimed: str | None = None) -> Outcome:
        """Count `event_ids` (failures of `subject` in the window; `claimed`: the client id the
        last of them asked for) and publish the violation if this call crosses the limit."""
        settings = self.settings
        pk = counter_key(kind, subject, window_start)
        if pk in self.alarmed:
            return Outcome(kind, subject, window_start, len(event_ids), applied=False, count=0, alarmed=True,
                           skipped=True)
        key = {"pk": {"S": pk}}
        token = batch_token(event_ids)
        try:
            response = self.client.update_item(
                TableName=settings.table, Key=key,
                UpdateExpression="ADD #count :n, #seen :tokens SET #expires = :expires",
                ConditionExpression="NOT contains(#seen, :token)",
                ExpressionAttributeNames={"#count": "count", "#seen": "seen", "#expires": "expires_at"},
                ExpressionAttributeValues={
                    ":n": {"N": str(len(event_ids))}, ":tokens": {"SS": [token]}, ":token": {"S": token},
                    ":expires": {"N": str(expires_at(window_start, settings.window_seconds))}},
                ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            item, applied = response.get("Attributes") or {}, True
        except self.condition_failed as err:
            item, applied = err.response.get("Item") or {}, False
        count = int(item.get("count", {}).get("N", "0"))
        outcome = Outcome(kind, subject, window_start, len(event_ids), applied=applied, count=count,
                          alarmed="alarmed" in item)
        if outcome.alarmed and not self._ours_unpublished(item, token):
            self._remember(pk)  # published, or another delivery's to publish
            return outcome
        if count <= settings.max_failures:
            return outcome

        if not outcome.alarmed:
            try:
                self.client.update_item(
                    TableName=settings.table, Key=key, UpdateExpression="SET #alarmed = :token",
                    ConditionExpression="attribute_not_exists(#alarmed)",
                    ExpressionAttributeNames={"#alarmed": "alarmed"},
                    ExpressionAttributeValues={":token": {"S": token}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except self.condition_failed as err:
                if not self._ours_unpublished(err.response.get("Item") or {}, token):
                    outcome.alarmed = True  # another invocation won: it publishes
                    self._remember(pk)
                    return outcome
                # else: this very request, re-sent by botocore after its answer was lost
        outcome.alarmed = True
        if kind not in (THING, CERTIFICATE):
            outcome.unreportable = True
            self._remember(pk)
            return outcome
        try:
            violation = build_violation(kind, subject, settings, count, window_start, self.now_ms(), claimed)
            violation = resolve(violation, self.attachments, window=window_start)
            self.publish(violation)
        except Exception:
            # Attribution or publish failed: give the alarm back, so the retry of this delivery
            # (or the next failure) publishes.
            try:
                self.client.update_item(TableName=settings.table, Key=key, UpdateExpression="REMOVE #alarmed",
                                        ExpressionAttributeNames={"#alarmed": "alarmed"})
            except Exception:  # noqa: BLE001 - the publish error is the one to raise
                self.logger.exception("could not release the alarm after a failed publish; this "
                                      "window's violation is lost", extra={"subject": subject,
                                                                           "window_start": window_start})
            raise
        self.client.update_item(TableName=settings.table, Key=key, UpdateExpression="SET #published = :true",
                                ExpressionAttributeNames={"#published": "published"},
                                ExpressionAttributeValues={":true": {"BOOL": True}})
        self._remember(pk)
        outcome.violation = violation
        return outcome

    @staticmethod
    def _ours_unpublished(item: Mapping[str, Any], token: str) -> bool:
        """The window was alarmed by this delivery (`token`) and its violation is not yet published."""
        return item.get("alarmed", {}).get("S") == token and "published" not in item
