"""Operator actions on one device, invoked by `fleetctl` (lambda invoke). Plain logic over injected
clients, tables and a clock.

Event: {"action": "quarantine" | "reinstate", "thing": "<name>", "actor": "<caller ARN>",
        "reason": "<free text, at most 256 characters>"}

Never raises: every problem is `{"ok": false, "error": "..."}`. Nothing happens unaudited: after
validation and the (read-only) thing lookup, an audit record with status `requested` is written
BEFORE any change; if it cannot be written nothing is done. After the change a second record
(status `completed`, or `failed` with what was done) closes it; if that one cannot be written the
answer is not a success either.

  * quarantine: AddThingToThingGroup(quarantine group); certificates untouched.
  * reinstate: every INACTIVE certificate of the thing -> ACTIVE (DescribeCertificate reads the
    status; REVOKED ones are never touched, only reported: the device then needs a new
    certificate), then RemoveThingFromThingGroup, so the device is let back in only once its
    certificates are done, then the thing's contained incidents are marked reinstated (a failure
    there fails the request: every step is idempotent, so the operator's re-run completes it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from aws_lambda_powertools import Logger
from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError
from shared import audit
from shared.runtime import error_code
from shared.topics import THING_NAME

_logger = Logger(child=True)

QUARANTINE = "quarantine"
REINSTATE = "reinstate"
ACTIONS = (QUARANTINE, REINSTATE)
FIELDS = frozenset({"action", "thing", "actor", "reason"})
THING = THING_NAME  # shared.topics: no pydantic at cold start
# What `aws sts get-caller-identity` returns: an IAM user/role ARN or an assumed-role session ARN.
ACTOR = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::\d{12}:[\x21-\x7e]{1,1900}")
MAX_REASON = 256
CERT_ARN = re.compile(r":cert/([A-Za-z0-9]{1,128})$")
MAX_INCIDENTS = 50  # newest incidents of the thing looked at when reinstating

# Metric names (all Count).
REINSTATED = "DevicesReinstated"
QUARANTINED = "DevicesQuarantinedByOperator"
REACTIVATED = "CertificatesReactivated"
REJECTED = "DeviceAdminRejected"  # reason: invalid-request | unknown-thing | audit-error | iot-error
#                                   | internal-error | configuration-error


class Rejected(Exception):
    def __init__(self, error: str, reason: str, **extra: Any):
        super().__init__(error)
        self.error, self.reason, self.extra = error, reason, extra


@dataclass(frozen=True)
class Request:
    action: str
    thing: str
    actor: str
    reason: str


def parse_request(event: Any) -> Request:
    if not isinstance(event, dict):
        raise Rejected("the event must be a JSON object", "invalid-request")
    unknown = sorted(str(k)[:40] for k in set(event) - FIELDS)
    if unknown:
        raise Rejected(f"unexpected field(s): {', '.join(unknown[:5])}", "invalid-request")
    action, thing, actor, reason = (event.get(k) for k in ("action", "thing", "actor", "reason"))
    if action not in ACTIONS:
        raise Rejected(f"action must be one of {', '.join(ACTIONS)}", "invalid-request")
    if not isinstance(thing, str) or not THING.fullmatch(thing):
        raise Rejected("thing must be a thing name (1-128 of A-Z a-z 0-9 : _ -)", "invalid-request")
    if not isinstance(actor, str) or not actor:
        raise Rejected("actor is required (the caller ARN from sts get-caller-identity)", "invalid-request")
    if not ACTOR.fullmatch(actor):
        raise Rejected("actor must be an IAM or STS ARN", "invalid-request")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise Rejected(f"reason must be text of at most {MAX_REASON} characters", "invalid-request")
    return Request(action, thing, actor, reason)


class DeviceAdmin:
    def __init__(
        self,
        *,
        iot: Any,
        audit_table: Any,
        incidents_table: Any,
        quarantine_group: str,
        count: Callable[..., None] = lambda *a, **k: None,
        now: Callable[[], float] = time.time,
        logger: Logger | None = None,
    ):
        self.iot, self.audit_table, self.incidents_table = iot, audit_table, incidents_table
        self.group, self.count, self.now, self.log = quarantine_group, count, now, logger or _logger

    def handle(self, event: Any) -> dict[str, Any]:
        try:
            request = parse_request(event)
            return self._act(request)
        except Rejected as rejected:
            self.log.warning("device admin request rejected", extra={"error": rejected.error,
                                                                     "reason": rejected.reason})
            self.count(REJECTED, reason=rejected.reason)
            return {"ok": False, "error": rejected.error, **rejected.extra}
        except Exception as exc:  # noqa: BLE001 - the CLI always gets an answer
            self.log.exception("device admin request failed")
            self.count(REJECTED, reason="internal-error")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    # ---- audit ------------------------------------------------------------------------------------

    def _audit(self, request: Request, status: str, details: Mapping[str, Any]) -> str:
        item = audit.record(
            self.audit_table,
            action=f"device.{request.action}",
            actor=request.actor,
            target=request.thing,
            details={"status": status, "reason": request.reason, "quarantine_group": self.group, **details},
            now=self.now,
            logger=self.log,
        )
        return str(item["event_id"])

    # ---- the actions ------------------------------------------------------------------------------

    def _certificates(self, thing: str) -> list[str]:
        """The certificate ids attached to the thing; an unknown thing is rejected."""
        pages = self.iot.get_paginator("list_thing_principals").paginate(thingName=thing)
        try:
            principals = [p for page in pages for p in page.get("principals", [])]
        except self.iot.exceptions.ResourceNotFoundException:
            raise Rejected("unknown thing", "unknown-thing") from None
        except (ClientError, BotoCoreError) as err:
            raise Rejected(f"could not look the thing up ({error_code(err)})", "iot-error") from None
        return sorted({m.group(1) for p in principals if (m := CERT_ARN.search(p))})

    def _act(self, request: Request) -> dict[str, Any]:
        certificates = self._certificates(request.thing)  # also: does the thing exist
        try:
            requested_id = self._audit(request, "requested", {})
        except Exception as exc:  # noqa: BLE001 - no audit record, no action
            self.log.error("audit record failed; nothing done",
                           extra={"error": f"{type(exc).__name__}: {exc}"})
            raise Rejected("the audit record could not be written; nothing was done", "audit-error") from None

        summary: dict[str, Any] = {"action": request.action, "thing": request.thing,
                                   "quarantine_group": self.group}
        try:
            if request.action == QUARANTINE:
                self.iot.add_thing_to_thing_group(thingGroupName=self.group, thingName=request.thing)
                summary["added_to_group"] = True
            else:
                self._reinstate(request.thing, certificates, summary)
                # Part of the action, not best effort: an incident left `contained` would make a later
                # violation of the device, once quarantined again, a repeat of that closed incident
                # (auto-response, _open_incident) instead of a new containment. A re-run completes it.
                summary["incidents_updated"] = self._mark_incidents(request)
        except (ClientError, BotoCoreError) as err:
            code = error_code(err)
            self.log.error("device admin action failed", extra={**summary, "code": code})
            details = {"error": code, **self._audit_details(summary)}
            try:
                self._audit(request, "failed", details)
            except Exception:  # noqa: BLE001 - the requested record stands; the log line has the rest
                self.log.exception("audit record of the failure could not be written")
            raise Rejected(f"{request.action} failed ({code}); partly done: see done", "iot-error",
                           done=summary, audit_event_ids=[requested_id]) from None

        try:
            completed_id = self._audit(request, "completed", self._audit_details(summary))
        except Exception as exc:  # noqa: BLE001 - the change happened but is not fully audited
            self.log.error("completion audit record failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            raise Rejected("the action was carried out but its completion audit record could not be written",
                           "audit-error", done=summary, audit_event_ids=[requested_id]) from None

        if request.action == REINSTATE:
            self.count(REINSTATED)
            if summary["reactivated"]:
                self.count(REACTIVATED, value=len(summary["reactivated"]))
        else:
            self.count(QUARANTINED)
        self.log.info(f"device {request.action} done", extra={**summary, "actor": request.actor})
        return {"ok": True, **summary, "audit_event_ids": [requested_id, completed_id]}

    def _reinstate(self, thing: str, certificates: list[str], summary: dict[str, Any]) -> None:
        summary.update(reactivated=[], already_active=[], revoked_left_alone=[], other_left_alone={},
                       removed_from_group=False)
        for certificate_id in certificates:
            answer = self.iot.describe_certificate(certificateId=certificate_id)
            status = answer["certificateDescription"]["status"]
            if status == "INACTIVE":
                self.iot.update_certificate(certificateId=certificate_id, newStatus="ACTIVE")
                summary["reactivated"].append(certificate_id)
            elif status == "ACTIVE":
                summary["already_active"].append(certificate_id)
            elif status == "REVOKED":
                summary["revoked_left_alone"].append(certificate_id)
            else:  # PENDING_TRANSFER, REGISTER_INACTIVE, ...: not ours to change
                summary["other_left_alone"][certificate_id] = status
        # Last: the quarantine deny is the switch, flipped only once the certificates are done.
        self.iot.remove_thing_from_thing_group(thingGroupName=self.group, thingName=thing)
        summary["removed_from_group"] = True
        if summary["revoked_left_alone"]:
            summary["warning"] = ("revoked certificates cannot be reactivated: the device needs a new "
                                  "certificate before it can connect")
        if not summary["reactivated"] and not summary["already_active"]:
            summary.setdefault("warning", "the thing has no usable certificate; it cannot connect yet")

    @staticmethod
    def _audit_details(summary: Mapping[str, Any]) -> dict[str, Any]:
        """Audit details are strings and numbers: lists become comma-separated ids."""
        details: dict[str, Any] = {}
        for key in ("reactivated", "already_active", "revoked_left_alone"):
            if key in summary:
                details[key] = ",".join(summary[key])
        if summary.get("other_left_alone"):
            details["other_left_alone"] = ",".join(f"{k}={v}" for k, v in summary["other_left_alone"].items())
        for key in ("added_to_group", "removed_from_group"):
            if key in summary:
                details[key] = "true" if summary[key] else "false"
        return details

    def _mark_incidents(self, request: Request) -> int:
        """Mark the thing's contained incidents as reinstated (how many); a DynamoDB error raises
        (the request fails, and its re-run marks what is left)."""
        if self.incidents_table is None:
            return 0
        items = self.incidents_table.query(
            IndexName="by_thing", KeyConditionExpression=Key("thing").eq(request.thing),
            ScanIndexForward=False, Limit=MAX_INCIDENTS)["Items"]
        marked = 0
        for item in items:
            if item.get("status") != "contained" or "reinstated_at" in item:
                continue
            self.incidents_table.update_item(
                Key={"violation_id": item["violation_id"]},
                UpdateExpression="SET reinstated_at = :at, reinstated_by = :by, updated_at = :at",
                ConditionExpression="attribute_exists(violation_id)",
                ExpressionAttributeValues={":at": audit.iso_utc(self.now()), ":by": request.actor},
            )
            marked += 1
        return marked
