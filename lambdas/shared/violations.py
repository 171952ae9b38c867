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
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

THING_NAME_PATTERN = r"^[A-Za-z0-9:_-]{1,128}$"
VIOLATION_ID_PATTERN = r"^[A-Za-z0-9_:-]{1,128}$"
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
    thingName: StrictStr = Field(pattern=THING_NAME_PATTERN)
    securityProfileName: StrictStr = Field(min_length=1, max_length=128)
    behavior: Behavior
    # {"count": n} | {"number": x} | {"numbers": [...]} | {"cidrs": [...]} | {"ports": [...]}
    metricValue: dict[str, Any] | None = None
    violationEventType: EventType
    violationEventTime: StrictInt = Field(ge=0)  # epoch milliseconds; a bool or a string is rejected

    @property
    def in_alarm(self) -> bool:
        return self.violationEventType == IN_ALARM


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


def derive_violation_id(*, thing: str, profile: str, behavior_name: str, window: str | int) -> str:
    """Deterministic id: the same (thing, profile, behaviour, window) always yields the same id,
    so a detector that re-evaluates a window re-publishes a duplicate, not a new incident."""
    digest = hashlib.sha256(f"{thing}|{profile}|{behavior_name}|{window}".encode()).hexdigest()
    return digest[:32]


def make_violation(
    *,
    thing: str,
    profile: str,
    behavior_name: str,
    metric: str | None,
    criteria: dict[str, Any] | None,
    metric_value: dict[str, Any] | None,
    event_type: str = IN_ALARM,
    event_time_ms: int,
    violation_id: str | None = None,
    window: str | int | None = None,
) -> dict[str, Any]:
    """A violation in Defender's shape (validated; InvalidViolation otherwise), ready for json.dumps.

    The default id hashes thing|profile|behavior_name|window, or the event time when no window
    is given (use the evaluation window start so re-evaluations of one window share an id).
    """
    if violation_id is None:
        violation_id = derive_violation_id(
            thing=thing, profile=profile, behavior_name=behavior_name,
            window=event_time_ms if window is None else window)
    behavior: dict[str, Any] = {"name": behavior_name}
    if metric is not None:
        behavior["metric"] = metric
    if criteria is not None:
        behavior["criteria"] = criteria
    message: dict[str, Any] = {
        "violationId": violation_id,
        "thingName": thing,
        "securityProfileName": profile,
        "behavior": behavior,
        "violationEventType": event_type,
        "violationEventTime": event_time_ms,
    }
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
