"""The violation message: Device Defender Detect's SNS alert format, used by every detection source.

Device Defender publishes one JSON object per violation as the `Message` of an SNS notification;
the built-in detector publishes the very same shape (built with `make_violation`), so the
auto-response function has one parser for both:

    {"violationId": "37e18651d207bbc74236c13faf146127", "thingName": "dev-IZWB",
     "securityProfileName": "MySecProfile",
     "behavior": {"name": "MessagesPub", "metric": "aws:num-messages-sent",
                  "criteria": {"comparisonOperator": "less-than", "value": {"count": 10}, ...}},
     "metricValue": {"count": 54}, "violationEventType": "in-alarm",
     "violationEventTime": 1573786800000}

Unknown keys are kept (Defender adds fields over time, e.g. violationEventAdditionalInfo).

Fleetwarden's additions (absent from Defender's own messages, so Defender's alerts parse unchanged):

* **Subject.** A violation is about exactly one subject: a thing (`thingName`, Defender's field) or
  a certificate (`certificateId`: the 64 lowercase hex characters IoT uses, the last part of the
  certificate ARN and the `principalId` of IoT's logs) with `thingName` absent. A certificate
  violation is for signals that AWS authenticated to a certificate but that no thing can be blamed
  for, e.g. refused Connects by a certificate not attached to the thing named by the client id it
  asked for. Its containment deactivates that certificate and touches no thing.
* **clientId** (optional, 1-128 chars): the client id the signal claimed. A claim, never a
  subject: it is shown to operators and never acted upon.
* **attribution**: `proven` or `unproven`: the source cannot prove whom the signal belongs to. Such
  a violation is recorded and reported, never contained automatically. The built-in detectors
  always write it. Device Defender's own messages never carry it: they count as proven, except for
  the metrics whose attribution Defender does not document (`aws:num-authorization-failures`,
  `aws:num-connection-attempts`: the cloud-side metrics page does not say whether a refused
  Connect is charged to the certificate or to the thing named by the client id it claimed, so
  anyone holding any certificate might raise them against any thing: unverified, worst case).

A certificate violation, as the built-in detectors publish it (`make_violation(certificate_id=...)`):

    {"violationId": "...", "certificateId": "<64 hex>", "clientId": "SN-B",
     "securityProfileName": "fleetwarden-prod-builtin",
     "behavior": {"name": "AuthorizationFailures", "metric": "aws:num-authorization-failures", ...},
     "metricValue": {"count": 50}, "violationEventType": "in-alarm", "violationEventTime": ...}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from . import topics  # relative: also imported as lambdas.shared.violations

THING_NAME_PATTERN = f"^{topics.THING_NAME_PATTERN}$"  # pydantic patterns search: anchored here
VIOLATION_ID_PATTERN = r"^[A-Za-z0-9_:-]{1,128}$"
# UpdateCertificate: "Length Constraints: Fixed length of 64. Pattern: (0x)?[a-fA-F0-9]+"
# (https://docs.aws.amazon.com/iot/latest/apireference/API_UpdateCertificate.html); IoT issues them in
# lowercase, and one spelling per certificate keeps incidents and counts of one certificate together.
CERTIFICATE_ID_PATTERN = r"^[0-9a-f]{64}$"
CLIENT_ID_MAX = 128  # MQTT client ids on IoT Core: 1-128 characters (DeleteConnection's clientId)

PROVEN = "proven"
UNPROVEN = "unproven"
# Defender metrics that a refused request under another device's client id may raise against
# that device: Defender's violations on them are reported, never contained (see above).
UNATTRIBUTED_DEFENDER_METRICS = frozenset({"aws:num-authorization-failures", "aws:num-connection-attempts"})
Attribution = Literal["proven", "unproven"]
THING = "thing"
CERTIFICATE = "certificate"
MAX_VIOLATION_BYTES = 256 * 1024  # an SNS message can be no larger

IN_ALARM = "in-alarm"
ALARM_CLEARED = "alarm-cleared"
ALARM_INVALIDATED = "alarm-invalidated"
EVENT_TYPES = (IN_ALARM, ALARM_CLEARED, ALARM_INVALIDATED)
EventType = Literal["in-alarm", "alarm-cleared", "alarm-invalidated"]


class InvalidViolation(ValueError):
    """The text is not a violation message; `reason` says why in one short line (safe to log)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Behavior(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: StrictStr = Field(min_length=1, max_length=128)
    metric: StrictStr | None = Field(default=None, max_length=256)  # absent for some custom behaviours
    criteria: dict[str, Any] | None = None


class Violation(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    violationId: StrictStr = Field(pattern=VIOLATION_ID_PATTERN)
    thingName: StrictStr | None = Field(default=None, pattern=THING_NAME_PATTERN)
    certificateId: StrictStr | None = Field(default=None, pattern=CERTIFICATE_ID_PATTERN)
    clientId: StrictStr | None = Field(default=None, min_length=1, max_length=CLIENT_ID_MAX)
    attribution: Attribution | None = None  # absent: a Defender message (model_dump(exclude_none) keeps its shape)
    securityProfileName: StrictStr = Field(min_length=1, max_length=128)
    behavior: Behavior
    # {"count": n} | {"number": x} | {"numbers": [...]} | {"cidrs": [...]} | {"ports": [...]}
    metricValue: dict[str, Any] | None = None
    violationEventType: EventType
    violationEventTime: StrictInt = Field(ge=0)  # epoch milliseconds; a bool or a string is rejected

    @model_validator(mode="after")
    def _one_subject(self) -> Violation:
        if (self.thingName is None) == (self.certificateId is None):
            raise ValueError("exactly one of thingName and certificateId is required")
        return self

    @property
    def in_alarm(self) -> bool:
        return self.violationEventType == IN_ALARM

    @property
    def kind(self) -> str:
        """THING or CERTIFICATE: what the violation is about."""
        return THING if self.thingName is not None else CERTIFICATE

    @property
    def subject(self) -> str:
        """The thing name or the certificate id."""
        return self.thingName if self.thingName is not None else str(self.certificateId)

    @property
    def proven(self) -> bool:
        if self.attribution is None and self.thingName is not None:  # Device Defender's own message
            return self.behavior.metric not in UNATTRIBUTED_DEFENDER_METRICS
        return self.attribution != UNPROVEN


def _reason(err: ValidationError) -> str:
    """The first error as `field: message`, short and free of the offending value."""
    first = err.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "message"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"[:300]


def parse_violation(text: str | bytes) -> Violation:
    """The SNS `Message` string -> Violation, or InvalidViolation(reason)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidViolation("not UTF-8") from None
    if not isinstance(text, str):
        raise InvalidViolation(f"message is {type(text).__name__}, not a string")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_VIOLATION_BYTES:
        raise InvalidViolation("message larger than 256 KB")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidViolation(f"not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise InvalidViolation(f"not a JSON object but {type(data).__name__}")
    try:
        return Violation.model_validate(data)
    except ValidationError as err:
        raise InvalidViolation(_reason(err)) from None


def derive_violation_id(*, thing: str | None = None, profile: str, behavior_name: str, window: str | int,
                        certificate_id: str | None = None) -> str:
    """Deterministic id: the same (subject, profile, behaviour, window) always yields the same id,
    so a detector that re-evaluates a window re-publishes a duplicate, not a new incident. A
    certificate's subject is `@<id>`: `@` is not allowed in thing names, so no thing shares it."""
    if (thing is None) == (certificate_id is None):
        raise ValueError("exactly one of thing and certificate_id")
    subject = thing if thing is not None else f"@{certificate_id}"
    digest = hashlib.sha256(f"{subject}|{profile}|{behavior_name}|{window}".encode()).hexdigest()
    return digest[:32]


def make_violation(
    *,
    thing: str | None = None,
    profile: str,
    behavior_name: str,
    metric: str | None,
    criteria: dict[str, Any] | None,
    metric_value: dict[str, Any] | None,
    event_type: str = IN_ALARM,
    event_time_ms: int,
    violation_id: str | None = None,
    window: str | int | None = None,
    certificate_id: str | None = None,
    client_id: str | None = None,
    attribution: str = PROVEN,
) -> dict[str, Any]:
    """A violation in Defender's shape (validated; InvalidViolation otherwise), ready for json.dumps.

    About a thing (`thing`) or a certificate (`certificate_id`, no thing); `client_id` is the
    claimed client id (informational); `attribution="unproven"` asks for report-only handling.
    The default id hashes subject|profile|behavior_name|window, or the event time when no window
    is given (use the evaluation window start so re-evaluations of one window share an id).
    """
    if (thing is None) == (certificate_id is None):
        raise InvalidViolation("exactly one of thing and certificate_id is required")
    if violation_id is None:
        violation_id = derive_violation_id(
            thing=thing, certificate_id=certificate_id, profile=profile, behavior_name=behavior_name,
            window=event_time_ms if window is None else window)
    behavior: dict[str, Any] = {"name": behavior_name}
    if metric is not None:
        behavior["metric"] = metric
    if criteria is not None:
        behavior["criteria"] = criteria
    message: dict[str, Any] = {"violationId": violation_id}
    if thing is not None:
        message["thingName"] = thing
    else:
        message["certificateId"] = certificate_id
    if client_id is not None:
        message["clientId"] = client_id
    message["attribution"] = attribution  # always written: absent means a Defender message
    message.update({
        "securityProfileName": profile,
        "behavior": behavior,
        "violationEventType": event_type,
        "violationEventTime": event_time_ms,
    })
    if metric_value is not None:
        message["metricValue"] = metric_value
    try:
        Violation.model_validate(message)
    except ValidationError as err:
        raise InvalidViolation(_reason(err)) from None
    return message


def violation_json(message: dict[str, Any]) -> str:
    """The compact JSON string to publish as the SNS Message."""
    return json.dumps(message, separators=(",", ":"), sort_keys=False)
