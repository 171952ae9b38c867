"""Contain the device named in a violation message. Plain logic over injected clients and a clock.

One incident item per violation id (the incidents table), created with a conditional put, drives
everything, so SNS duplicates and Lambda's async retries are safe:

  * `alarm-cleared` / `alarm-invalidated` -> recorded, nothing else (no automatic reinstatement).
    Defender keeps one violation id across a violation's events, so a clearance normally lands on
    the in-alarm incident: `cleared_event_type/_time/_at` are added and its status is kept. With
    no incident yet, the clearance creates one with status `recorded`; an in-alarm event arriving
    after it (SNS does not keep order) still contains the device.
  * new `in-alarm` -> status `in-progress` with a lease; look the thing up (its certificates, and the
    exempt group), decide the outcome and the ordered plan of steps, then run the steps:
        contained: quarantine, shutdown_command, certificate:<id>..., notify
        exempt / dry-run: notify (dry-run also records `planned`, what containment would do)
        unknown-thing: no step
    Each step's result is written to `steps` as it completes (`done`, `skipped:<why>`,
    `failed:<code>`). A failing AWS call records `failed:<code>`, releases the lease and raises,
    so Lambda retries the invocation; the retry claims the incident and runs only the steps that
    are not `done`/`skipped`. Then the final status is written.
  * an existing incident that is finished, or in progress under a live lease (a concurrent
    duplicate delivery) -> duplicate: counted, logged, no AWS call.

Lookups cost at most two IoT calls: ListThingPrincipals answers both "does the thing exist"
(ResourceNotFoundException) and "which certificates", and ListThingGroupsForThing runs only when
an exempt group is configured. A contained device with one certificate costs 5 IoT+SNS calls
(4 without an exempt group) and 4 DynamoDB writes.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from defense.auto_response.commands import QUEUED, queue_shutdown_command
from aws_lambda_powertools import Logger
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError
from shared.audit import iso_utc
from shared.violations import (
    ALARM_CLEARED,
    ALARM_INVALIDATED,
    IN_ALARM,
    InvalidViolation,
    Violation,
    parse_violation,
)

_logger = Logger(child=True)

# Incident statuses.
CONTAINED = "contained"
RECORDED = "recorded"
DRY_RUN = "dry-run"
EXEMPT = "exempt"
UNKNOWN_THING = "unknown-thing"
IN_PROGRESS = "in-progress"
FINAL_STATUSES = frozenset({CONTAINED, RECORDED, DRY_RUN, EXEMPT, UNKNOWN_THING})
# Outcomes of one message that are not incident statuses.
DUPLICATE = "duplicate"
MALFORMED = "malformed"

CLEARANCES = frozenset({ALARM_CLEARED, ALARM_INVALIDATED})

# Revocation modes.
QUARANTINE_ONLY = "quarantine-only"
DEACTIVATE = "deactivate"
REVOKE = "revoke"
CERTIFICATE_STATUS = {DEACTIVATE: "INACTIVE", REVOKE: "REVOKED"}
MODES = frozenset({QUARANTINE_ONLY, DEACTIVATE, REVOKE})

# Steps and their results.
QUARANTINE = "quarantine"
SHUTDOWN = "shutdown_command"
CERTIFICATE = "certificate"  # step key: certificate:<id>
NOTIFY = "notify"
DONE = "done"

# Metric names (all Count); the reason dimension, where given, comes from a fixed set.
RECEIVED = "ViolationsReceived"
MALFORMED_METRIC = "ViolationsMalformed"  # reason: not-sns | not-json | invalid
DUPLICATE_METRIC = "ViolationsDuplicate"
RECORDED_METRIC = "ViolationsRecorded"
UNKNOWN_THING_METRIC = "ViolationsUnknownThing"
EXEMPT_METRIC = "ViolationsExempt"
DRY_RUN_METRIC = "ViolationsDryRun"
CONTAINED_METRIC = "DevicesContained"
RESUMED_METRIC = "ContainmentsResumed"
# reason: lookup | quarantine | shutdown_command | certificate | notify
STEP_FAILED_METRIC = "ContainmentStepFailures"

MAX_RAW_BYTES = 8 * 1024
DEFAULT_LEASE_SECONDS = 60
LEASE_MARGIN_SECONDS = 5
CERT_ARN = re.compile(r":cert/([A-Za-z0-9]{1,128})$")
NOT_FOUND = "ResourceNotFoundException"
CERTIFICATE_STATE = "CertificateStateException"
CONDITION_FAILED = "ConditionalCheckFailedException"
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


class ConfigurationError(ValueError):
    """The function's environment is wrong: every invocation fails (and is retried) until fixed."""


class ContainmentError(Exception):
    """A step failed; the incident records which. Raised so Lambda retries the invocation."""

    def __init__(self, violation_id: str, step: str, code: str):
        super().__init__(f"incident {violation_id}: step {step} failed ({code})")
        self.violation_id, self.step, self.code = violation_id, step, code


class CountFn(Protocol):
    def __call__(self, name: str, reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class Settings:
    incidents_table: str
    quarantine_group: str
    ops_topic_arn: str
    revocation: str = DEACTIVATE
    exempt_group: str | None = None
    dry_run: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        missing = [k for k in ("INCIDENTS_TABLE", "QUARANTINE_GROUP", "OPS_TOPIC_ARN") if not env.get(k)]
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
            revocation=revocation,
            exempt_group=(env.get("EXEMPT_GROUP") or "").strip() or None,
            dry_run=dry_run in TRUE,
        )


@dataclass
class Outcome:
    """What one message led to (returned by the handler, used by tests and logs)."""

    status: str  # a final incident status, IN_PROGRESS never; or DUPLICATE / MALFORMED
    violation_id: str | None = None
    thing: str | None = None
    steps: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


def _code(err: Exception) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code") or "ClientError")
    return type(err).__name__


def _plain(item: Mapping[str, Any] | None) -> dict[str, Any]:
    """An item returned with a failed condition is in wire format; decode it."""
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in (item or {}).items()}


def _complete(result: Any) -> bool:
    return isinstance(result, str) and (result == DONE or result.startswith("skipped"))


def _truncate(text: str, limit: int = MAX_RAW_BYTES) -> str:
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")


def _malformed_reason(reason: str) -> str:
    return "not-json" if reason.startswith(("not JSON", "not UTF-8", "not a JSON object")) else "invalid"


class Responder:
    def __init__(
        self,
        *,
        iot: Any,
        sns: Any,
        table: Any,
        settings: Settings,
        count: CountFn,
        now: Callable[[], float] = time.time,
        logger: Logger | None = None,
        queue_shutdown: Callable[..., str] = queue_shutdown_command,
    ):
        self.iot, self.sns, self.table, self.settings = iot, sns, table, settings
        self.count, self.now, self.log = count, now, logger or _logger
        self.queue_shutdown = queue_shutdown

    # ---- one message ----------------------------------------------------------------------

    def handle(self, message: Any, *, remaining_ms: Callable[[], int] | None = None) -> Outcome:
        """One SNS Message string. Returns the outcome; raises ContainmentError (or a DynamoDB
        error) when the invocation must be retried."""
        self.count(RECEIVED)
        try:
            violation = parse_violation(message)
        except InvalidViolation as bad:
            self.log.warning("violation rejected", extra={"reason": bad.reason})
            self.count(MALFORMED_METRIC, _malformed_reason(bad.reason))
            return Outcome(MALFORMED, detail=bad.reason)

        raw = message if isinstance(message, str) else message.decode("utf-8")
        if not violation.in_alarm:
            return self._record_clearance(violation, raw)
        item = self._open_incident(violation, raw, self._lease_until(remaining_ms))
        if item is None:
            return Outcome(DUPLICATE, violation.violationId, violation.thingName)

        if "plan" not in item:
            decided = self._decide(violation, item)
            if decided is None:  # unknown thing: recorded, nothing to do
                return Outcome(UNKNOWN_THING, violation.violationId, violation.thingName)
            item.update(decided)
            pending = dict(decided)  # written with the first step's result
        else:
            pending = {}
        return self._run_plan(violation, item, pending)

    # ---- the incident item ------------------------------------------------------------------

    def _lease_until(self, remaining_ms: Callable[[], int] | None) -> int:
        seconds = DEFAULT_LEASE_SECONDS
        if remaining_ms is not None:
            with contextlib.suppress(Exception):  # a context without a working clock: the default lease
                seconds = int(remaining_ms()) // 1000 + LEASE_MARGIN_SECONDS
        return int(self.now()) + seconds

    def _new_item(self, v: Violation, raw: str) -> dict[str, Any]:
        at = iso_utc(self.now())
        item: dict[str, Any] = {
            "violation_id": v.violationId,
            "thing": v.thingName,
            "profile": v.securityProfileName,
            "behavior": v.behavior.name,
            "event_type": v.violationEventType,
            "event_time": v.violationEventTime,
            "received_at": at,
            "updated_at": at,
            "status": IN_PROGRESS if v.in_alarm else RECORDED,
            "mode": self.settings.revocation,
            "steps": {},
            "violation": _truncate(raw),
        }
        if v.behavior.metric:
            item["metric"] = v.behavior.metric
        return item

    def _put_new(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """Conditional put; None when created, else the existing item."""
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(violation_id)",
                                ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return None
        except ClientError as err:
            if _code(err) != CONDITION_FAILED:
                raise
            return _plain(err.response.get("Item")) or self.table.get_item(
                Key={"violation_id": item["violation_id"]}, ConsistentRead=True).get("Item") or {}

    def _duplicate(self, v: Violation, message: str = "duplicate violation", **extra: Any) -> None:
        self.log.info(message, extra={"violation_id": v.violationId, "thing": v.thingName,
                                      "event_type": v.violationEventType, **extra})
        self.count(DUPLICATE_METRIC)

    def _record_clearance(self, v: Violation, raw: str) -> Outcome:
        """alarm-cleared / alarm-invalidated: recorded, nothing else (no automatic reinstatement).

        Defender keeps the violation id across a violation's events, so the clearance usually
        lands on the in-alarm incident: it is added to it (cleared_*), its status is kept."""
        at = iso_utc(self.now())
        clearance = {"cleared_event_type": v.violationEventType, "cleared_event_time": v.violationEventTime,
                     "cleared_at": at}
        existing = self._put_new({**self._new_item(v, raw), "status": RECORDED, **clearance})
        if existing is not None:
            try:
                self.table.update_item(
                    Key={"violation_id": v.violationId},
                    UpdateExpression="SET cleared_event_type = :type, cleared_event_time = :time,"
                                     " cleared_at = :at, updated_at = :at",
                    ConditionExpression="attribute_exists(violation_id) AND attribute_not_exists(cleared_at)",
                    ExpressionAttributeValues={":type": v.violationEventType, ":time": v.violationEventTime,
                                               ":at": at},
                )
            except ClientError as err:
                if _code(err) != CONDITION_FAILED:
                    raise
                self._duplicate(v)
                return Outcome(DUPLICATE, v.violationId, v.thingName)
        self.log.info("violation recorded", extra={"violation_id": v.violationId, "thing": v.thingName,
                                                   "event_type": v.violationEventType,
                                                   "status": existing.get("status") if existing else RECORDED})
        self.count(RECORDED_METRIC)
        return Outcome(RECORDED, v.violationId, v.thingName)

    def _open_incident(self, v: Violation, raw: str, lease_until: int) -> dict[str, Any] | None:
        """Create the in-alarm incident, or claim an unfinished one; None for a duplicate."""
        item = {**self._new_item(v, raw), "status": IN_PROGRESS, "attempts": 1, "lease_until": lease_until}
        old = self._put_new(item)
        if old is None:
            return item
        if old.get("event_type") in CLEARANCES:
            return self._upgrade(v, item)
        return self._claim(v, old, lease_until)

    def _upgrade(self, v: Violation, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """The clearance arrived first (SNS does not keep order): the in-alarm event still contains
        the device (it did misbehave; reinstating stays a human decision). Keeps the cleared_* fields."""
        fields = {k: item[k] for k in ("event_type", "event_time", "status", "mode", "steps", "violation",
                                       "attempts", "lease_until", "updated_at")}
        names = {f"#f{i}": k for i, k in enumerate(fields)}
        values = {f":f{i}": value for i, value in enumerate(fields.values())}
        try:
            answer = self.table.update_item(
                Key={"violation_id": v.violationId},
                UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
                ConditionExpression="#f0 <> :in_alarm",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={**values, ":in_alarm": IN_ALARM},
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _code(err) != CONDITION_FAILED:
                raise
            self._duplicate(v, "duplicate violation: incident in progress elsewhere")
            return None
        return dict(answer["Attributes"])

    def _claim(self, v: Violation, old: Mapping[str, Any], lease_until: int) -> dict[str, Any] | None:
        keys = {"violation_id": v.violationId, "thing": v.thingName}
        if old.get("status") != IN_PROGRESS:
            self._duplicate(v, status=old.get("status"))
            return None
        # Unfinished: an earlier attempt failed (lease released) or died (lease expired). A live
        # lease means another invocation is working on it right now: a concurrent duplicate.
        try:
            answer = self.table.update_item(
                Key={"violation_id": v.violationId},
                UpdateExpression="SET lease_until = :lease, attempts = if_not_exists(attempts, :zero) + :one,"
                                 " updated_at = :at",
                ConditionExpression="#st = :in_progress AND (attribute_not_exists(lease_until)"
                                    " OR lease_until < :now)",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={":lease": lease_until, ":zero": 0, ":one": 1,
                                           ":at": iso_utc(self.now()), ":in_progress": IN_PROGRESS,
                                           ":now": int(self.now())},
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _code(err) != CONDITION_FAILED:
                raise
            self._duplicate(v, "duplicate violation: incident in progress elsewhere")
            return None
        item = dict(answer["Attributes"])
        self.log.info("resuming containment", extra={**keys, "steps": item.get("steps"),
                                                     "attempts": int(item.get("attempts", 0))})
        self.count(RESUMED_METRIC)
        return item

    def _write(self, violation_id: str, *, steps: Mapping[str, str] | None = None,
               attrs: Mapping[str, Any] | None = None, remove: tuple[str, ...] = ()) -> None:
        """One UpdateItem: step results into the `steps` map, attributes, removals."""
        steps, attrs = steps or {}, attrs or {}
        names: dict[str, str] = {"#steps": "steps"}
        values: dict[str, Any] = {":at": iso_utc(self.now())}
        sets = ["updated_at = :at"]
        for i, (step, result) in enumerate(steps.items()):
            names[f"#s{i}"], values[f":s{i}"] = step, result
            sets.append(f"#steps.#s{i} = :s{i}")
        for i, (name, value) in enumerate(attrs.items()):
            names[f"#a{i}"], values[f":a{i}"] = name, value
            sets.append(f"#a{i} = :a{i}")
        expression = "SET " + ", ".join(sets)
        if remove:
            for i, name in enumerate(remove):
                names[f"#r{i}"] = name
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        if not steps:
            del names["#steps"]
        self.table.update_item(Key={"violation_id": violation_id}, UpdateExpression=expression,
                               ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    # ---- lookups and the decision -------------------------------------------------------------

    def _certificates(self, thing: str) -> tuple[list[str], int]:
        """Certificate ids attached to the thing, and how many other principals it has.
        Raises ClientError ResourceNotFoundException when the thing does not exist."""
        certificates: list[str] = []
        others = 0
        kwargs: dict[str, Any] = {"thingName": thing}
        while True:
            page = self.iot.list_thing_principals(**kwargs)
            for principal in page.get("principals", []):
                match = CERT_ARN.search(principal)
                if match:
                    certificates.append(match.group(1))
                else:
                    others += 1
            if not page.get("nextToken"):
                return sorted(set(certificates)), others
            kwargs["nextToken"] = page["nextToken"]

    def _in_group(self, thing: str, group: str) -> bool:
        kwargs: dict[str, Any] = {"thingName": thing}
        while True:
            page = self.iot.list_thing_groups_for_thing(**kwargs)
            if any(g.get("groupName") == group for g in page.get("thingGroups", [])):
                return True
            if not page.get("nextToken"):
                return False
            kwargs["nextToken"] = page["nextToken"]

    def _decide(self, v: Violation, item: dict[str, Any]) -> dict[str, Any] | None:
        """Outcome and plan for an in-alarm violation, or None (unknown thing, recorded here)."""
        thing, vid = v.thingName, v.violationId
        keys = {"violation_id": vid, "thing": thing}
        try:
            certificates, others = self._certificates(thing)
            exempt = bool(self.settings.exempt_group) and self._in_group(thing, self.settings.exempt_group)
        except (ClientError, BotoCoreError) as err:
            code = _code(err)
            if code == NOT_FOUND:
                self._write(vid, attrs={"status": UNKNOWN_THING}, remove=("lease_until",))
                self.log.warning("violation for an unknown thing", extra={**keys, "status": UNKNOWN_THING})
                self.count(UNKNOWN_THING_METRIC)
                return None
            self._write(vid, attrs={"error": f"lookup:{code}", "lease_until": 0})
            self.log.error("thing lookup failed; the invocation will be retried",
                           extra={**keys, "code": code})
            self.count(STEP_FAILED_METRIC, "lookup")
            raise ContainmentError(vid, "lookup", code) from err

        containment = [QUARANTINE, SHUTDOWN, *(f"{CERTIFICATE}:{c}" for c in certificates), NOTIFY]
        decided: dict[str, Any] = {"certificates": certificates}
        if others:
            decided["other_principals"] = others
        if exempt:
            decided.update(outcome=EXEMPT, plan=[NOTIFY])
        elif self.settings.dry_run:
            decided.update(outcome=DRY_RUN, plan=[NOTIFY], planned=containment[:-1])
        else:
            decided.update(outcome=CONTAINED, plan=containment)
        return decided

    # ---- the steps ----------------------------------------------------------------------------

    def _run_plan(self, v: Violation, item: dict[str, Any], pending: dict[str, Any]) -> Outcome:
        vid, thing = v.violationId, v.thingName
        keys = {"violation_id": vid, "thing": thing}
        steps: dict[str, str] = {k: str(r) for k, r in (item.get("steps") or {}).items()}
        plan = [str(s) for s in item["plan"]]
        outcome = str(item["outcome"])
        unwritten: dict[str, str] = {}
        for index, step in enumerate(plan):
            if _complete(steps.get(step)):
                continue
            try:
                result = self._run_step(step, v, item, steps)
            except (ClientError, BotoCoreError) as err:
                code = _code(err)
                failed = {**unwritten, step: f"failed:{code}"}
                self._write(vid, steps=failed, attrs={**pending, "error": f"{step}:{code}", "lease_until": 0})
                self.log.error("containment step failed; the invocation will be retried",
                               extra={**keys, "step": step, "code": code})
                self.count(STEP_FAILED_METRIC, step.split(":", 1)[0])
                raise ContainmentError(vid, step, code) from err
            steps[step] = unwritten[step] = result
            # A step that changed something is written at once; a skipped one rides with the next
            # write, and the last step with the final status.
            if result == DONE and index < len(plan) - 1:
                self._write(vid, steps=unwritten, attrs=pending)
                unwritten, pending = {}, {}

        self._write(vid, steps=unwritten, attrs={**pending, "status": outcome},
                    remove=("lease_until", "error"))
        self.log.info(f"violation handled: {outcome}", extra={**keys, "status": outcome, "steps": steps,
                                                              "mode": item.get("mode")})
        self.count({CONTAINED: CONTAINED_METRIC, EXEMPT: EXEMPT_METRIC, DRY_RUN: DRY_RUN_METRIC}[outcome])
        return Outcome(outcome, vid, thing, steps)

    def _run_step(self, step: str, v: Violation, item: Mapping[str, Any], steps: Mapping[str, str]) -> str:
        thing = v.thingName
        if step == QUARANTINE:
            self.iot.add_thing_to_thing_group(thingGroupName=self.settings.quarantine_group, thingName=thing)
            return DONE
        if step == SHUTDOWN:
            result = self.queue_shutdown(thing, self.iot, incident_id=v.violationId)
            return DONE if result == QUEUED else f"skipped:{result}"
        if step.startswith(f"{CERTIFICATE}:"):
            new_status = CERTIFICATE_STATUS.get(str(item.get("mode")))
            if new_status is None:
                return f"skipped:{QUARANTINE_ONLY}"
            try:
                self.iot.update_certificate(certificateId=step.split(":", 1)[1], newStatus=new_status)
            except ClientError as err:
                code = _code(err)
                if code == NOT_FOUND:
                    return "skipped:not-found"  # deleted since the lookup: it connects no one
                if code == CERTIFICATE_STATE:
                    return "skipped:certificate-state"  # e.g. already REVOKED, or mid-transfer
                raise
            return DONE
        if step == NOTIFY:
            self._notify(v, item, steps)
            return DONE
        raise ValueError(f"unknown step {step!r}")  # a corrupt plan: fail loudly

    def _notify(self, v: Violation, item: Mapping[str, Any], steps: Mapping[str, str]) -> None:
        outcome, thing = str(item["outcome"]), v.thingName
        what = f"{v.securityProfileName}/{v.behavior.name}"
        if outcome == EXEMPT:
            subject = f"Fleetwarden: exempt device {thing} violated {v.behavior.name}"
            line = (f"Device {thing} violated {what} but is in the exempt group "
                    f"{self.settings.exempt_group}: no action was taken.")
        elif outcome == DRY_RUN:
            subject = f"Fleetwarden: dry run, device {thing} would be contained"
            line = (f"DRY RUN: device {thing} violated {what}. Containment would run "
                    f"{', '.join(item.get('planned') or [])} (mode {item.get('mode')}); nothing was changed.")
        else:
            certs = [s.split(":", 1)[1] for s in steps if s.startswith(f"{CERTIFICATE}:")]
            line = (f"Device {thing} violated {what} and was contained: added to thing group "
                    f"{self.settings.quarantine_group}, {len(certs)} certificate(s) handled with mode "
                    f"{item.get('mode')}. Reinstating it is an explicit operator action.")
            subject = f"Fleetwarden: device {thing} contained"
        details = {
            "thing": thing,
            "outcome": outcome,
            "mode": item.get("mode"),
            "violation": {
                "violationId": v.violationId,
                "securityProfileName": v.securityProfileName,
                "behavior": v.behavior.name,
                "metric": v.behavior.metric,
                "metricValue": v.metricValue,
                "violationEventType": v.violationEventType,
                "violationEventTime": v.violationEventTime,
            },
            "steps": dict(steps),
            "certificates": list(item.get("certificates") or []),
        }
        if outcome == DRY_RUN:
            details["planned"] = list(item.get("planned") or [])
        self.sns.publish(
            TopicArn=self.settings.ops_topic_arn,
            Subject=subject[:100],
            Message=line + "\n\n" + json.dumps(details, default=str, indent=1),
        )
