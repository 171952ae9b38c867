"""Contain the device named in a violation message. Plain logic over injected clients and a clock.

Why a Lambda and not a Step Functions state machine: SNS cannot start one, so it would add a hop
(a Lambda, or SQS + an EventBridge Pipe) in a stack owned elsewhere right now, and every state
transition adds latency to containment (the cost, $0.025 per 1000 transitions, decides nothing).
The decision (two lookups, the plan) stays code, the claim on violationId is still needed at the
start, and moto runs ASL only through an opt-in interpreter. Async retries plus the on-failure
destination already retry and park failures; the incident's `steps` map is the checkpoint.

One incident item per violation id (the incidents table) drives everything, so SNS duplicates and
Lambda's async retries are safe:

  * `alarm-cleared` / `alarm-invalidated` -> recorded, nothing else (no automatic reinstatement).
    Defender keeps one violation id across a violation's events, so a clearance normally lands on
    the in-alarm incident: `cleared_event_type/_time/_at` are added and its status is kept. With
    no incident yet, the clearance creates one with status `recorded`; an in-alarm event arriving
    after it (SNS does not keep order) still contains the device.
  * `in-alarm` -> the incident is claimed under a lease (`in-progress`), the thing looked up and
    an outcome and ordered plan decided, then the plan's steps run:
        contained: quarantine, shutdown_command, certificate:<id>..., notify
        exempt / dry-run: notify (dry-run also records `planned`, what containment would do)
        unknown-thing: no step
        protected (a certificate holding a protected policy, i.e. the claim certificate every
          field device ships with): notify only. Deactivating it would stop field provisioning
          for the whole fleet, and anyone holding it could trigger that.
    Each result lands in `steps` (`done`, `skipped:<why>`, `failed:<code>`). A failing AWS call
    records `failed:<code>`, releases the lease and raises, so Lambda retries the invocation; the
    retry claims the incident again and runs only the steps not `done`/`skipped`.
  * an incident that is finished, or claimed under a live lease (a concurrent duplicate delivery)
    -> duplicate: counted, logged, no AWS call.

Lookups cost at most two IoT calls: ListThingPrincipals answers both "does the thing exist"
(ResourceNotFoundException) and "which certificates", and ListThingGroupsForThing runs only when
an exempt group is configured. A contained device with one certificate costs 5 IoT+SNS calls
(4 without an exempt group), 2 for the signed shutdown job (KMS Sign, CreateJob; plus GetPublicKey once
per container) and 4 DynamoDB writes.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from aws_lambda_powertools import Logger
from boto3.dynamodb.conditions import Attr, ConditionBase, Key
from botocore.exceptions import BotoCoreError, ClientError
from defense.auto_response.commands import QUEUED
from defense.auto_response.outcomes import (
    CONTAINED,
    DRY_RUN,
    DUPLICATE,
    DUPLICATE_METRIC,
    EXEMPT,
    IN_PROGRESS,
    MALFORMED,
    MALFORMED_METRIC,
    OUTCOME_METRIC,
    PROTECTED,
    RECEIVED,
    RECORDED,
    RECORDED_METRIC,
    REPEAT,
    REPORTED,
    RESUMED_METRIC,
    STEP_FAILED_METRIC,
    UNKNOWN_CERTIFICATE,
    UNKNOWN_THING,
)
from shared.audit import iso_utc
from shared.runtime import error_code
from shared.writes import put_new
from shared.violations import (
    ALARM_CLEARED, ALARM_INVALIDATED, PROVEN, UNPROVEN, InvalidViolation, Violation, parse_violation,
)

_logger = Logger(child=True)

# Revocation modes, and the certificate status each one sets.
QUARANTINE_ONLY = "quarantine-only"
DEACTIVATE = "deactivate"
REVOKE = "revoke"
MODES = frozenset({QUARANTINE_ONLY, DEACTIVATE, REVOKE})
CERTIFICATE_STATUS = {DEACTIVATE: "INACTIVE", REVOKE: "REVOKED"}

# Steps (a certificate step is `certificate:<id>`, a repeat step `repeat:<open incident id>`),
# and the lookup before them.
QUARANTINE = "quarantine"
SHUTDOWN = "shutdown_command"
CERTIFICATE = "certificate"
DISCONNECT = "disconnect"
REPEAT_STEP = "repeat"
NOTIFY = "notify"
LOOKUP = "lookup"
DONE = "done"
NOT_CONNECTED = "skipped:not-connected"

# The incident table's indexes: a subject's incidents, newest first.
BY_THING, BY_CERTIFICATE = "by_thing", "by_certificate"
OPEN_LOOKBACK = 10  # newest incidents of a subject read to find its open one (a repeat points to it)
# Certificate statuses that no longer connect anyone (UpdateCertificate: "Devices cannot use a
# certificate that is not in the ACTIVE state to reconnect").
CUT_OFF_STATUSES = frozenset({"INACTIVE", "REVOKED"})

MAX_RAW_BYTES = 8 * 1024
DEFAULT_LEASE_SECONDS = 60
LEASE_MARGIN_SECONDS = 5
CERT_ARN = re.compile(r":cert/([A-Za-z0-9]{1,128})$")
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})
# What an in-alarm event writes over an incident its clearance created first.
ALARM_FIELDS = ("event_type", "event_time", "status", "mode", "steps", "violation", "attempts", "lease_until")


class ConfigurationError(ValueError):
    """The function's environment is wrong: every invocation fails (and is retried) until fixed."""


class ContainmentError(Exception):
    """A step failed; the incident records which. Raised so Lambda retries the invocation."""

    def __init__(self, violation_id: str, step: str, code: str):
        super().__init__(f"incident {violation_id}: step {step} failed ({code})")
        self.violation_id, self.step, self.code = violation_id, step, code


@dataclass(frozen=True)
class Settings:
    incidents_table: str
    quarantine_group: str
    ops_topic_arn: str
    data_endpoint: str = ""  # the account's iot:Data-ATS endpoint (host name), for DeleteConnection
    revocation: str = DEACTIVATE
    exempt_group: str | None = None
    dry_run: bool = False
    # Policies whose certificates are shared by the fleet (the claim policy): never deactivated.
    protected_policies: frozenset[str] = frozenset()
    # The signed shutdown command (commands.ShutdownQueue): the stage's signing key, the thing ARN prefix
    # (arn:<partition>:iot:<region>:<account>:thing/) and the job settings the issuer uses too.
    signing_key_arn: str = ""
    signing_key_id: str = ""  # SHA-256 of the key's DER SPKI, read at deploy time (spares GetPublicKey)
    thing_arn_prefix: str = ""
    job_timeout_minutes: int = 60
    shutdown_lifetime_seconds: int = 7 * 24 * 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        required = ("INCIDENTS_TABLE", "QUARANTINE_GROUP", "OPS_TOPIC_ARN", "IOT_DATA_ENDPOINT",
                    "SIGNING_KEY_ARN", "THING_ARN_PREFIX")
        missing = [k for k in required if not env.get(k)]
        if missing:
            raise ConfigurationError(f"missing environment: {', '.join(missing)}")
        revocation = (env.get("REVOCATION") or DEACTIVATE).strip().lower()
        if revocation not in MODES:
            raise ConfigurationError(f"REVOCATION must be one of {sorted(MODES)}, not {revocation!r}")
        dry_run = (env.get("DRY_RUN") or "").strip().lower()
        if dry_run not in TRUE | FALSE:
            raise ConfigurationError(f"DRY_RUN must be true or false, not {dry_run!r}")
        return cls(
            incidents_table=env["INCIDENTS_TABLE"],
            quarantine_group=env["QUARANTINE_GROUP"],
            ops_topic_arn=env["OPS_TOPIC_ARN"],
            data_endpoint=env["IOT_DATA_ENDPOINT"].strip(),
            revocation=revocation,
            exempt_group=(env.get("EXEMPT_GROUP") or "").strip() or None,
            dry_run=dry_run in TRUE,
            protected_policies=frozenset(p.strip() for p in (env.get("PROTECTED_POLICIES") or "").split(",")
                                         if p.strip()),
            signing_key_arn=env["SIGNING_KEY_ARN"].strip(),
            signing_key_id=(env.get("SIGNING_KEY_ID") or "").strip(),
            thing_arn_prefix=env["THING_ARN_PREFIX"].strip(),
            job_timeout_minutes=_whole(env, "JOB_TIMEOUT_MINUTES", 60, 1, 10080),
            shutdown_lifetime_seconds=_whole(env, "SHUTDOWN_LIFETIME_SECONDS", 7 * 24 * 3600, 60, 30 * 24 * 3600),
        )


def _whole(env: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = (env.get(key) or str(default)).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigurationError(f"{key} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


@dataclass
class Outcome:
    """What one message led to (returned by the handler, used by tests and logs)."""

    status: str  # a final incident status, or DUPLICATE / MALFORMED
    violation_id: str | None = None
    thing: str | None = None
    steps: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


def _complete(result: Any) -> bool:
    return isinstance(result, str) and (result == DONE or result.startswith("skipped"))


def _truncate(text: str, limit: int = MAX_RAW_BYTES) -> str:
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


def _malformed_reason(reason: str) -> str:
    return "not-json" if reason.startswith(("not JSON", "not UTF-8", "not a JSON object")) else "invalid"


def decision(settings: Settings, certificates: list[str], exempt: bool, *, thing: bool = True) -> dict[str, Any]:
    """`outcome` and `plan` for an in-alarm violation of a known thing (or, `thing=False`, of one
    known certificate: only that certificate, no group, no session of a client id that is only a
    claim). A dry run also records `planned`: what containment would have run."""
    certificate_steps = [f"{CERTIFICATE}:{c}" for c in certificates]
    if thing:
        # The session is ended last: once the certificates no longer connect anyone and the group's
        # deny applies, a reconnect is refused (see _disconnect).
        containment = [QUARANTINE, SHUTDOWN, *certificate_steps, DISCONNECT, NOTIFY]
    else:
        containment = [*certificate_steps, NOTIFY]
    if exempt:
        return {"outcome": EXEMPT, "plan": [NOTIFY]}
    if settings.dry_run:
        return {"outcome": DRY_RUN, "plan": [NOTIFY], "planned": containment[:-1]}
    return {"outcome": CONTAINED, "plan": containment}


def notification(v: Violation, incident: Mapping[str, Any], settings: Settings) -> dict[str, str]:
    """The ops topic's message about a decided incident: Subject and Message for sns.publish."""
    outcome, thing, mode = incident["outcome"], v.thingName, incident.get("mode")
    what = f"{v.securityProfileName}/{v.behavior.name}"
    # The steps so far: not this notification's own (a retry would show its earlier failure).
    steps = {k: v for k, v in (incident.get("steps") or {}).items() if k != NOTIFY}
    named = f"device {thing}" if thing is not None else f"certificate {v.certificateId}"
    claimed = f" (it claimed client id {v.clientId!r}, a claim only)" if v.clientId else ""
    short = f"device {thing}" if thing is not None else f"certificate {str(v.certificateId)[:12]}..."  # Subject <= 100
    if outcome == PROTECTED:
        subject = f"Fleetwarden: shared {short} reported, not contained"
        line = (f"{named[0].upper()}{named[1:]} violated {what}{claimed}. It holds the protected policy "
                f"{incident.get('protected_policy')} (every field device ships with it), so it was not "
                f"deactivated: that would stop field provisioning for the whole fleet, and anyone holding it "
                f"could trigger it. If it is being abused, rotate the claim certificate (README: Field devices).")
    elif outcome == REPORTED:
        subject = f"Fleetwarden: {short} reported, not contained"
        line = (f"{named[0].upper()}{named[1:]} violated {what}{claimed}, but the source cannot prove whom "
                f"the signal belongs to (attribution unproven): recorded and reported only, nothing was changed.")
    elif outcome == REPEAT:
        subject = f"Fleetwarden: contained {short} still violating"
        line = (f"{named[0].upper()}{named[1:]}, contained by incident {incident.get('repeat_of')}, violated "
                f"{what} again{claimed}. Recorded on that incident; further repeats are recorded there "
                f"without a notification.")
    elif outcome == DRY_RUN:
        subject = f"Fleetwarden: dry run, {short} would be contained"
        line = (f"DRY RUN: {named} violated {what}{claimed}. Containment would run "
                f"{', '.join(incident.get('planned') or [])} (mode {mode}); nothing was changed.")
    elif thing is None:
        subject = f"Fleetwarden: {short} contained"
        line = (f"Certificate {v.certificateId} violated {what}{claimed} and was handled with mode {mode}: "
                f"no thing was touched. Reactivating it is an explicit operator action.")
    elif outcome == EXEMPT:
        subject = f"Fleetwarden: exempt device {thing} violated {v.behavior.name}"
        line = (f"Device {thing} violated {what} but is in the exempt group "
                f"{settings.exempt_group}: no action was taken.")
    else:
        handled = sum(1 for s in steps if s.startswith(f"{CERTIFICATE}:"))
        session = {DONE: "its live session was ended", NOT_CONNECTED: "it had no live session"}.get(
            str(steps.get(DISCONNECT)), "its live session was not ended")
        subject = f"Fleetwarden: device {thing} contained"
        line = (f"Device {thing} violated {what} and was contained: added to thing group "
                f"{settings.quarantine_group}, {handled} certificate(s) handled with mode "
                f"{mode}, {session}. Reinstating it is an explicit operator action.")
    details: dict[str, Any] = {
        "thing": thing,
        "certificate": v.certificateId,
        "attribution": PROVEN if v.proven else UNPROVEN,
        "outcome": outcome,
        "mode": mode,
        "violation": {
            "violationId": v.violationId,
            "securityProfileName": v.securityProfileName,
            "behavior": v.behavior.name,
            "metric": v.behavior.metric,
            "metricValue": v.metricValue,
            "violationEventType": v.violationEventType,
            "violationEventTime": v.violationEventTime,
            "clientId": v.clientId,
        },
        "steps": steps,
        "certificates": list(incident.get("certificates") or []),
    }
    if outcome == DRY_RUN:
        details["planned"] = list(incident.get("planned") or [])
    if outcome == REPEAT:
        details["repeat_of"] = incident.get("repeat_of")
    return {"Subject": subject[:100], "Message": line + "\n\n" + json.dumps(details, default=str, indent=1)}


def update_expression(*, attrs: Mapping[str, Any], steps: Mapping[str, str], add: Mapping[str, int],
                      remove: tuple[str, ...]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """UpdateExpression, names and values: SET `attrs` and entries of the `steps` map, ADD `add`,
    REMOVE `remove`. Every name is a placeholder (`status` is a reserved word; step keys hold ':')."""
    names = {**{f"#a{i}": k for i, k in enumerate(attrs)}, **{f"#s{i}": k for i, k in enumerate(steps)},
             **{f"#d{i}": k for i, k in enumerate(add)}, **{f"#r{i}": k for i, k in enumerate(remove)}}
    values = {**{f":a{i}": v for i, v in enumerate(attrs.values())},
              **{f":s{i}": v for i, v in enumerate(steps.values())},
              **{f":d{i}": v for i, v in enumerate(add.values())}}
    if steps:
        names["#steps"] = "steps"
    sets = [f"#a{i} = :a{i}" for i in range(len(attrs))] + [f"#steps.#s{i} = :s{i}" for i in range(len(steps))]
    clauses = [("SET", sets), ("ADD", [f"#d{i} :d{i}" for i in range(len(add))]),
               ("REMOVE", [f"#r{i}" for i in range(len(remove))])]
    return " ".join(f"{verb} {', '.join(parts)}" for verb, parts in clauses if parts), names, values


class Responder:
    def __init__(
        self,
        *,
        iot: Any,
        sns: Any,
        table: Any,
        iot_data: Any = None,
        settings: Settings,
        count: Callable[..., None],
        now: Callable[[], float] = time.time,
        logger: Logger | None = None,
        queue_shutdown: Callable[..., str],
    ):
        self.iot, self.sns, self.table, self.settings = iot, sns, table, settings
        self.iot_data = iot_data  # the data-plane client (DeleteConnection), on the account's endpoint
        self.count, self.now, self.log = count, now, logger or _logger
        self.queue_shutdown = queue_shutdown

    # ---- one message ----------------------------------------------------------------------------

    def handle(self, message: str | bytes, *, remaining_ms: Callable[[], int] | None = None) -> Outcome:
        """One SNS Message string. Returns the outcome; raises ContainmentError (or a DynamoDB
        error) when the invocation must be retried."""
        self.count(RECEIVED)
        try:
            v = parse_violation(message)
        except InvalidViolation as bad:
            self.log.warning("violation rejected", extra={"reason": bad.reason})
            self.count(MALFORMED_METRIC, reason=_malformed_reason(bad.reason))
            return Outcome(MALFORMED, detail=bad.reason)

        raw = message if isinstance(message, str) else message.decode("utf-8")
        if not v.in_alarm:
            return self._record_clearance(v, raw)
        incident = self._claim(v, raw, self._lease_until(remaining_ms))
        if incident is None:
            return Outcome(DUPLICATE, v.violationId, v.thingName)
        unsaved: dict[str, Any] = {}
        if "plan" not in incident:  # new, or an earlier attempt failed in the lookup
            unsaved = self._decide(v)
            incident.update(unsaved)
        return self._run_plan(v, incident, unsaved)

    def _lease_until(self, remaining_ms: Callable[[], int] | None) -> int:
        """Until this invocation times out (plus a margin): then a retry may take the incident over."""
        try:
            seconds = int(remaining_ms()) // 1000 + LEASE_MARGIN_SECONDS  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - no context clock: the default lease
            seconds = DEFAULT_LEASE_SECONDS
        return int(self.now()) + seconds

    # ---- the incident item ----------------------------------------------------------------------

    def _new_item(self, v: Violation, raw: str, **fields: Any) -> dict[str, Any]:
        at = iso_utc(self.now())
        item: dict[str, Any] = {
            "violation_id": v.violationId,
            # One subject attribute, so the item is in exactly one of the indexes by_thing, by_certificate.
            **({"thing": v.thingName} if v.thingName is not None else {"certificate_id": v.certificateId}),
            "profile": v.securityProfileName,
            "behavior": v.behavior.name,
            "event_type": v.violationEventType,
            "event_time": v.violationEventTime,
            "received_at": at,
            "updated_at": at,
            "mode": self.settings.revocation,
            "steps": {},
            "violation": _truncate(raw),
            **fields,
        }
        if v.behavior.metric:
            item["metric"] = v.behavior.metric
        if not v.proven:
            item["attribution"] = v.attribution
        if v.clientId is not None:
            item["client_id"] = v.clientId
        return item

    def _create(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """Put the item unless its violation id exists: None when created (also by this request's
        first attempt, re-sent by botocore: shared.writes), else the existing item."""
        return put_new(self.table, item, "violation_id")

    def _update(self, violation_id: str, *, attrs: Mapping[str, Any] | None = None,
                steps: Mapping[str, str] | None = None, add: Mapping[str, int] | None = None,
                remove: tuple[str, ...] = (), condition: ConditionBase | None = None) -> dict[str, Any] | None:
        """One UpdateItem (see update_expression; updated_at is always set). Under a `condition`:
        the item as written, or None if the condition failed. Unconditional: {} (asking for the
        whole item back would cost a few ms on every step)."""
        expression, names, values = update_expression(
            attrs={"updated_at": iso_utc(self.now()), **(attrs or {})}, steps=steps or {}, add=add or {},
            remove=remove)
        request: dict[str, Any] = {"Key": {"violation_id": violation_id}, "UpdateExpression": expression,
                                   "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
        if condition is not None:
            request.update(ConditionExpression=condition, ReturnValues="ALL_NEW")
        try:
            return dict(self.table.update_item(**request).get("Attributes") or {})
        except self.table.meta.client.exceptions.ConditionalCheckFailedException:
            return None

    def _duplicate(self, v: Violation, **extra: Any) -> None:
        self.log.info("duplicate violation", extra={"violation_id": v.violationId, "thing": v.thingName,
                                                    "event_type": v.violationEventType, **extra})
        self.count(DUPLICATE_METRIC)

    def _record_clearance(self, v: Violation, raw: str) -> Outcome:
        """alarm-cleared / alarm-invalidated: a new `recorded` incident, or the cleared_* fields
        added to the existing one (its status kept). Nothing else: no automatic reinstatement."""
        clearance = {"cleared_event_type": v.violationEventType, "cleared_event_time": v.violationEventTime,
                     "cleared_at": iso_utc(self.now())}
        existing = self._create(self._new_item(v, raw, status=RECORDED, **clearance))
        if existing is not None:
            first_clearance = Attr("violation_id").exists() & Attr("cleared_at").not_exists()
            if self._update(v.violationId, attrs=clearance, condition=first_clearance) is None:
                self._duplicate(v, status=existing.get("status"))
                return Outcome(DUPLICATE, v.violationId, v.thingName)
        self.log.info("violation recorded", extra={"violation_id": v.violationId, "thing": v.thingName,
                                                   "event_type": v.violationEventType,
                                                   "status": existing.get("status") if existing else RECORDED})
        self.count(RECORDED_METRIC)
        return Outcome(RECORDED, v.violationId, v.thingName)

    def _claim(self, v: Violation, raw: str, lease_until: int) -> dict[str, Any] | None:
        """The in-alarm incident, held under a lease until `lease_until`: created now, taken over
        from its clearance, or resumed if unfinished and not leased. None: a duplicate."""
        item = self._new_item(v, raw, status=IN_PROGRESS, attempts=1, lease_until=lease_until)
        old = self._create(item)
        if old is None:
            return item
        claimed = None
        if old.get("event_type") in (ALARM_CLEARED, ALARM_INVALIDATED):
            # Its clearance arrived first (SNS does not keep order): the device did misbehave, so it is
            # contained all the same (reinstating stays a human decision). The cleared_* fields stay.
            claimed = self._update(v.violationId, attrs={k: item[k] for k in ALARM_FIELDS},
                                   condition=Attr("event_type").is_in([ALARM_CLEARED, ALARM_INVALIDATED]))
        elif old.get("status") == IN_PROGRESS:
            # An earlier attempt failed (lease released) or died (lease expired). A live lease means
            # another invocation is on it right now: a concurrent duplicate.
            free = Attr("lease_until").not_exists() | Attr("lease_until").lt(int(self.now()))
            claimed = self._update(v.violationId, attrs={"lease_until": lease_until}, add={"attempts": 1},
                                   condition=Attr("status").eq(IN_PROGRESS) & free)
            if claimed is not None:
                self.log.info("resuming containment", extra={
                    "violation_id": v.violationId, "thing": v.thingName, "steps": claimed.get("steps"),
                    "attempts": int(claimed.get("attempts", 0))})
                self.count(RESUMED_METRIC)
        if claimed is None:
            self._duplicate(v, status=old.get("status"))
        return claimed

    # ---- the decision ---------------------------------------------------------------------------

    def _decide(self, v: Violation) -> dict[str, Any]:
        """Look the subject up and decide: `outcome`, `plan`, and what the lookup found, to be
        stored with the first step's result. An unknown subject is an outcome with no step.

        * attribution unproven: report only, no lookup (nothing may be contained on its word);
        * a thing: ListThingPrincipals (exists? which certificates?) and ListThingGroupsForThing
          (exempt? already quarantined?);
        * a certificate: DescribeCertificate (exists? still ACTIVE?) and, when protected policies are
          configured, ListAttachedPolicies (the claim certificate is reported, never deactivated).
        A subject that is already cut off (in the quarantine group / certificate not ACTIVE) and has an
        open incident (contained, not reinstated) is a repeat: recorded on that incident, no new
        containment, at most one notification per open incident."""
        if not v.proven:
            return {"outcome": REPORTED, "plan": [NOTIFY]}
        try:
            if v.thingName is not None:
                certificates, others = self._principals(v.thingName)
                groups = self._groups(v.thingName)
                exempt = bool(self.settings.exempt_group) and self.settings.exempt_group in groups
                cut_off = self.settings.quarantine_group in groups
            else:
                certificates, others, exempt = [v.certificateId], 0, False
                status, certificate_arn = self._describe_certificate(str(v.certificateId))
                cut_off = status in CUT_OFF_STATUSES
                protected = self._protected_policy(certificate_arn)
                if protected is not None:
                    return {"outcome": PROTECTED, "plan": [NOTIFY], "certificates": certificates,
                            "protected_policy": protected}
        except self.iot.exceptions.ResourceNotFoundException:
            self.log.warning(f"violation for an unknown {v.kind}", extra={"violation_id": v.violationId,
                                                                          v.kind: v.subject})
            return {"outcome": UNKNOWN_THING if v.thingName is not None else UNKNOWN_CERTIFICATE, "plan": []}
        except (ClientError, BotoCoreError) as err:
            raise self._fail(v, LOOKUP, error_code(err)) from err
        try:
            open_incident = self._open_incident(v) if cut_off and not exempt else None
        except (ClientError, BotoCoreError) as err:
            raise self._fail(v, LOOKUP, error_code(err)) from err
        if open_incident is not None:
            first = not int(open_incident.get("repeat_count", 0))
            repeat_step = f"{REPEAT_STEP}:{open_incident['violation_id']}"
            return {"outcome": REPEAT, "plan": [repeat_step, NOTIFY] if first else [repeat_step],
                    "repeat_of": open_incident["violation_id"], "certificates": certificates}
        decided = {**decision(self.settings, certificates, exempt, thing=v.thingName is not None),
                   "certificates": certificates}
        if others:
            decided["other_principals"] = others
        return decided

    def _open_incident(self, v: Violation) -> dict[str, Any] | None:
        """The subject's open incident: the newest contained, not reinstated one, found through its
        newest incidents (a repeat points to the incident it was recorded on). None if there is none:
        e.g. quarantined by hand, or reinstated (device_admin marks `reinstated_at`)."""
        index, key = (BY_THING, "thing") if v.thingName is not None else (BY_CERTIFICATE, "certificate_id")
        items = self.table.query(IndexName=index, KeyConditionExpression=Key(key).eq(v.subject),
                                 ScanIndexForward=False, Limit=OPEN_LOOKBACK).get("Items", [])
        for item in items:
            if item.get("violation_id") == v.violationId:
                continue
            candidate = item.get("repeat_of") if item.get("status") == REPEAT else item.get("violation_id")
            if item.get("status") not in (CONTAINED, REPEAT) or not candidate:
                continue
            # The index is eventually consistent: read the incident itself.
            found = self.table.get_item(Key={"violation_id": candidate}, ConsistentRead=True).get("Item")
            if found and found.get("status") == CONTAINED and "reinstated_at" not in found:
                return found
            return None
        return None

    def _principals(self, thing: str) -> tuple[list[str], int]:
        """The certificate ids attached to the thing, and how many other principals it has.
        Raises ResourceNotFoundException when the thing does not exist."""
        pages = self.iot.get_paginator("list_thing_principals").paginate(thingName=thing)
        matches = [CERT_ARN.search(p) for page in pages for p in page.get("principals", [])]
        return sorted({m.group(1) for m in matches if m}), sum(1 for m in matches if m is None)

    def _groups(self, thing: str) -> set[str]:
        pages = self.iot.get_paginator("list_thing_groups_for_thing").paginate(thingName=thing)
        return {g.get("groupName") for page in pages for g in page.get("thingGroups", [])}

    def _describe_certificate(self, certificate_id: str) -> tuple[str, str]:
        """(status, ARN). Raises ResourceNotFoundException when the certificate does not exist."""
        description = self.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        return str(description["status"]), str(description.get("certificateArn") or "")

    def _protected_policy(self, certificate_arn: str) -> str | None:
        """The first protected policy attached to the certificate, or None (no call when none is
        configured). ListAttachedPolicies takes a certificate ARN as its target
        (https://docs.aws.amazon.com/iot/latest/apireference/API_ListAttachedPolicies.html)."""
        protected = self.settings.protected_policies
        if not protected:
            return None
        pages = self.iot.get_paginator("list_attached_policies").paginate(target=certificate_arn)
        attached = {p.get("policyName") for page in pages for p in page.get("policies", [])}
        return min(attached & protected, default=None)

    # ---- the steps ------------------------------------------------------------------------------

    def _run_plan(self, v: Violation, incident: dict[str, Any], unsaved: dict[str, Any]) -> Outcome:
        """Run the steps not yet complete, in order, then write the final status. A step that
        changed something is saved at once; a skipped one, and `unsaved` attributes, ride along
        with the next write (the last step's result with the final status)."""
        plan, steps = incident["plan"], incident.setdefault("steps", {})
        unsaved_steps: dict[str, str] = {}
        for step in plan:
            if _complete(steps.get(step)):
                continue
            kind, _, argument = step.partition(":")
            if kind not in self.STEPS:
                raise ValueError(f"unknown step {step!r}")  # a corrupt plan: fail loudly
            try:
                result = self.STEPS[kind](self, v, incident, argument)
            except (ClientError, BotoCoreError) as err:
                code = error_code(err)
                failed = {**unsaved_steps, step: f"failed:{code}"}
                raise self._fail(v, step, code, steps=failed, attrs=unsaved) from err
            steps[step] = unsaved_steps[step] = result
            if result == DONE and step != plan[-1]:
                self._update(v.violationId, steps=unsaved_steps, attrs=unsaved)
                unsaved_steps, unsaved = {}, {}

        outcome = incident["outcome"]
        self._update(v.violationId, steps=unsaved_steps, attrs={**unsaved, "status": outcome},
                     remove=("lease_until", "error"))
        self.log.info(f"violation handled: {outcome}", extra={
            "violation_id": v.violationId, "thing": v.thingName, "status": outcome, "steps": steps,
            "mode": incident.get("mode")})
        self.count(OUTCOME_METRIC[outcome])
        return Outcome(outcome, v.violationId, v.thingName, dict(steps))

    def _fail(self, v: Violation, step: str, code: str, *, steps: Mapping[str, str] | None = None,
              attrs: Mapping[str, Any] | None = None) -> ContainmentError:
        """Record the failed step (with what is unsaved), release the lease, log and count it;
        returns the error to raise, so Lambda retries the invocation."""
        self._update(v.violationId, steps=steps, attrs={**(attrs or {}), "error": f"{step}:{code}", "lease_until": 0})
        self.log.error("containment step failed; the invocation will be retried",
                       extra={"violation_id": v.violationId, "thing": v.thingName, "step": step, "code": code})
        self.count(STEP_FAILED_METRIC, reason=step.partition(":")[0])
        return ContainmentError(v.violationId, step, code)

    def _quarantine(self, v: Violation, incident: Mapping[str, Any], _: str) -> str:
        self.iot.add_thing_to_thing_group(thingGroupName=self.settings.quarantine_group, thingName=v.thingName)
        return DONE

    def _shutdown_command(self, v: Violation, incident: Mapping[str, Any], _: str) -> str:
        result = self.queue_shutdown(v.thingName, self.iot, incident_id=v.violationId)
        return DONE if result == QUEUED else f"skipped:{result}"

    def _certificate(self, v: Violation, incident: Mapping[str, Any], certificate_id: str) -> str:
        new_status = CERTIFICATE_STATUS.get(str(incident.get("mode")))
        if new_status is None:
            return f"skipped:{QUARANTINE_ONLY}"
        try:
            self.iot.update_certificate(certificateId=certificate_id, newStatus=new_status)
        except self.iot.exceptions.ResourceNotFoundException:
            return "skipped:not-found"  # deleted since the lookup: it connects no one
        except self.iot.exceptions.CertificateStateException:
            return "skipped:certificate-state"  # e.g. already REVOKED, or mid-transfer
        return DONE

    def _disconnect(self, v: Violation, incident: Mapping[str, Any], _: str) -> str:
        """End the device's live MQTT session at once (data-plane DeleteConnection; the client id is
        the thing name, the only one the device policy lets it connect with). Runs after the
        certificates are handled: "Devices cannot use a certificate that is not in the ACTIVE state to
        reconnect" (https://docs.aws.amazon.com/iot/latest/apireference/API_UpdateCertificate.html),
        while IoT itself disconnects them only "within a few minutes" of the update.
        cleanSession=True: "delete all session information, including subscriptions and queued
        messages" of a persistent session, so nothing the contained device set up survives into a
        reinstatement; preventWillMessage=True: its Last Will (a message it wrote) is not published
        (https://docs.aws.amazon.com/iot/latest/apireference/API_iotdata_DeleteConnection.html).
        ResourceNotFoundException ("the specified resource does not exist") is read as "not
        connected": the worst case is a device that was offline, which is the goal."""
        try:
            self.iot_data.delete_connection(clientId=v.thingName, cleanSession=True, preventWillMessage=True)
        except self.iot_data.exceptions.ResourceNotFoundException:
            return NOT_CONNECTED
        return DONE

    def _repeat(self, v: Violation, incident: Mapping[str, Any], open_id: str) -> str:
        """Record this violation on the open incident: repeat_count + 1, the last repeat's id and
        time. Conditional on this violation not being the last one recorded, so a retry of this step
        (its result not saved) does not count it twice."""
        recorded = self._update(open_id, attrs={"last_repeat_violation_id": v.violationId,
                                                "last_repeat_event_time": v.violationEventTime,
                                                "last_repeat_behavior": v.behavior.name,
                                                "last_repeat_at": iso_utc(self.now())},
                                add={"repeat_count": 1},
                                condition=Attr("violation_id").exists()
                                & (Attr("last_repeat_violation_id").not_exists()
                                   | Attr("last_repeat_violation_id").ne(v.violationId)))
        return DONE if recorded is not None else "skipped:already-recorded"

    def _notify(self, v: Violation, incident: Mapping[str, Any], _: str) -> str:
        self.sns.publish(TopicArn=self.settings.ops_topic_arn, **notification(v, incident, self.settings))
        return DONE

    # A step's kind -> what runs it: (responder, violation, incident, argument) -> its result.
    STEPS: Mapping[str, Callable[[Responder, Violation, dict[str, Any], str], str]] = {
        QUARANTINE: _quarantine,
        SHUTDOWN: _shutdown_command,
        CERTIFICATE: _certificate,
        DISCONNECT: _disconnect,
        REPEAT_STEP: _repeat,
        NOTIFY: _notify,
    }
