"""Decide whether IoT fleet provisioning may register a device. Deny unless every check passes.

Plain functions over injected dependencies (tokens/audit tables, IoT client, clock, time budget),
so the decision logic is tested without AWS. Nothing here raises: evaluate() turns every failure
into a denial with a short reason (used as a metric dimension, so the set of reasons is fixed).

The event is the hook input of payload version 2020-04-01 ("Pre-provisioning hooks", AWS IoT
developer guide, https://docs.aws.amazon.com/iot/latest/developerguide/pre-provisioning-hook.html):
claimCertificateId, certificateId (the device's new certificate), certificatePem, templateArn,
clientId and `parameters` (the RegisterThing request's parameters). IoT proceeds only on
`"allowProvisioning": true`, treats a failed function as ACCESS_DENIED, and fails the request
unless the function returns within 5 seconds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from boto3.dynamodb.types import TypeDeserializer

from shared import audit
from identity.tokens import MAX_TOKEN_LENGTH, hash_token, validate_serial

CERTIFICATE_ID = re.compile(r"[0-9a-f]{64}")  # IoT certificate ids are 64 lowercase hex digits
MAX_CLIENT_ID = 128  # the MQTT client id limit in IoT Core

# A token is consumed by one certificate: the first use records it, and only that certificate may
# use the token again (a RegisterThing retried after its reply was lost), for the same serial and
# within the token's lifetime. One conditional UpdateItem decides, so of two certificates racing
# for one token exactly one is recorded and the other fails the condition.
CONSUME_CONDITION = (
    "attribute_exists(token_hash) AND serial = :serial AND expires_at > :now"
    " AND (attribute_not_exists(used_at) OR used_by_certificate = :cert)"
)
CONSUME_UPDATE = (
    "SET used_at = if_not_exists(used_at, :now), used_by_certificate = :cert,"
    " used_by_client = if_not_exists(used_by_client, :client), last_used_at = :now ADD uses :one"
)
# A retry re-runs the template, whose certificate resource says Status ACTIVE: it must not undo a
# containment that deactivated or revoked the certificate since the first use.
RETRYABLE_CERTIFICATE_STATUSES = frozenset({"ACTIVE", "PENDING_ACTIVATION"})


@dataclass(frozen=True)
class Request:
    serial: str
    token: str
    certificate_id: str
    client_id: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "allowed", "retry" (allowed again, same certificate) or one denial reason
    serial: str | None = None  # only once validated, so logs never carry attacker-sized strings
    certificate_id: str | None = None
    detail: str | None = None  # for the log line; never contains the token


class Denied(Exception):
    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass
class Budget:
    """IoT's deadline as an instant of `clock`, and the longest one AWS call may take (its
    connect + read timeouts, one attempt). A call that might not finish in time is not started:
    the hook denies with reason "deadline" instead of letting IoT time out on it unlogged."""

    deadline: float
    per_call: float
    clock: Callable[[], float] = field(default=time.monotonic)

    def start(self, call: str) -> None:
        left = self.deadline - self.clock()
        if left < self.per_call:
            raise Denied("deadline", f"{call} not started: one attempt may take {self.per_call:.2f} s, "
                                     f"{max(left, 0):.2f} s left of IoT's 5 s")


def parse_event(event: Any, pattern: re.Pattern[str]) -> Request:
    """The 2020-04-01 hook payload, strictly: anything unexpected is a denial."""
    if not isinstance(event, dict) or not isinstance(event.get("parameters"), dict):
        raise Denied("malformed-event", "event or parameters is not an object")
    certificate_id, client_id = event.get("certificateId"), event.get("clientId")
    if not isinstance(certificate_id, str) or not CERTIFICATE_ID.fullmatch(certificate_id):
        raise Denied("malformed-event", "certificateId missing or not a certificate id")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
        raise Denied("malformed-event", "clientId missing or invalid")
    params = event["parameters"]
    serial, token = params.get("SerialNumber"), params.get("ProvisioningToken")
    if not validate_serial(serial, pattern):
        raise Denied("invalid-serial")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise Denied("invalid-token-format")
    return Request(serial=serial, token=token, certificate_id=certificate_id, client_id=client_id)


def check_thing(iot: Any, serial: str, certificate_id: str) -> None:
    """The thing may be new, or already bound only to this very certificate (a retried registration).

    Any other principal means the serial belongs to another device: provisioning would let a
    token holder take over its name, so deny, before the token is consumed.
    """
    try:
        page = iot.list_thing_principals(thingName=serial)
    except iot.exceptions.ResourceNotFoundException:
        return  # no such thing yet: the template will create it
    principals = page.get("principals", [])
    foreign = [p for p in principals if not p.endswith(f":cert/{certificate_id}")]
    if foreign or page.get("nextToken"):  # a further page can only hold other principals
        raise Denied("thing-bound-elsewhere", f"{len(principals)} principal(s) attached")


def check_certificate_not_contained(iot: Any, certificate_id: str) -> None:
    """For a retry only: the certificate is still new or active (containment sets INACTIVE or REVOKED)."""
    status = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]
    if status not in RETRYABLE_CERTIFICATE_STATUSES:
        raise Denied("certificate-not-active", f"retry with a {status} certificate")


def _plain(item: dict[str, Any] | None) -> dict[str, Any]:
    """The item DynamoDB returns with a failed condition is in wire format; decode it."""
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in (item or {}).items()}


def _rejection_reason(old: dict[str, Any], request: Request, now: int) -> str:
    """Only labels a denial for logs and metrics; the conditional write already decided it."""
    if not old:
        return "token-unknown"
    if "used_at" in old and old.get("used_by_certificate") != request.certificate_id:
        return "token-replayed"  # used by another certificate
    if old.get("serial") != request.serial:
        return "token-wrong-serial"
    if old.get("expires_at", 0) <= now:
        return "token-expired"
    return "token-rejected"


def consume_token(table: Any, request: Request, now: int) -> dict[str, Any]:
    """Record the token's use by this certificate with ONE conditional UpdateItem (see
    CONSUME_CONDITION). Returns the token item after the update: `uses` > 1 marks a retry by the
    certificate that consumed it; `issued_by` is the audit actor."""
    try:
        response = table.update_item(
            Key={"token_hash": hash_token(request.token)},
            UpdateExpression=CONSUME_UPDATE,
            ConditionExpression=CONSUME_CONDITION,
            ExpressionAttributeValues={
                ":serial": request.serial,
                ":now": now,
                ":cert": request.certificate_id,
                ":client": request.client_id,
                ":one": 1,
            },
            ReturnValues="ALL_NEW",
            # The old item comes back with the failure: a reason to log without a second read.
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except table.meta.client.exceptions.ConditionalCheckFailedException as failed:
        raise Denied(_rejection_reason(_plain(failed.response.get("Item")), request, now)) from None
    return response["Attributes"]


def evaluate(
    event: Any,
    *,
    tokens_table: Any,
    audit_table: Any,
    iot: Any,
    pattern: re.Pattern[str],
    now: Callable[[], float],
    budget: Budget,
    logger: Any = None,
) -> Decision:
    """Run the checks in order; the first failure denies. Unexpected errors deny too.

    At most four AWS calls, each started only if one attempt fits in `budget`:
    ListThingPrincipals, UpdateItem, DescribeCertificate (retries only), PutItem.
    """
    request: Request | None = None
    stage = "malformed-event"  # reason for an unexpected error, by the step that raised it
    try:
        request = parse_event(event, pattern)
        stage = "iot-error"
        budget.start("ListThingPrincipals")
        check_thing(iot, request.serial, request.certificate_id)  # before the token: a denial here keeps it
        stage = "dynamodb-error"
        budget.start("UpdateItem")
        token_item = consume_token(tokens_table, request, int(now()))
        retry = int(token_item.get("uses", 1)) > 1
        if retry:
            stage = "iot-error"
            budget.start("DescribeCertificate")
            check_certificate_not_contained(iot, request.certificate_id)
        # Fail closed: a provisioning that cannot be audited does not happen. The token stays
        # consumed by this certificate, so the device's retry can still succeed.
        stage = "audit-error"
        budget.start("PutItem")
        audit.record(
            audit_table,
            action="provisioning-token.retry" if retry else "provisioning-token.use",
            actor=str(token_item["issued_by"]),
            target=request.serial,
            details={
                "certificateId": request.certificate_id,
                "clientId": request.client_id,
                "token_hash_prefix": str(token_item["token_hash"])[:8],
                "uses": int(token_item.get("uses", 1)),
            },
            now=now,
            logger=logger,
        )
    except Denied as denied:
        return _deny(denied.reason, request, denied.detail)
    except Exception as exc:  # noqa: BLE001 - the hook must answer, and the answer is no
        return _deny(stage, request, f"{type(exc).__name__}: {exc}"[:300])
    return Decision(True, "retry" if retry else "allowed", request.serial, request.certificate_id)


def _deny(reason: str, request: Request | None, detail: str | None) -> Decision:
    if request is None:
        return Decision(False, reason, detail=detail)
    return Decision(False, reason, request.serial, request.certificate_id, detail)
