"""Device alerts: the one definition the alert processor and the alerts API share.

Devices publish `{"header": {"fw", "code", "fields"}, "trace": "<base64>"}` on `dt/<thing>/alerts`;
an IoT rule stores each message unchanged in the data bucket under
`alerts/<thing>/<yyyy>/<mm>/<dd>/<epoch-ms>-<uuid>.json`. The processor validates each object
against `Alert`, indexes the valid ones in the alerts table (`index_item`) and quarantines the
rest under `QUARANTINE_PREFIX`. This module is the standard library only: `Alert` and
`AlertHeader` (pydantic) are defined in alerts.schema and loaded from here on first use.

Alerts table: partition key `thing` (S), sort key `alert_id` (S), GSI `by_alert_id` (partition
key `alert_id`). `alert_id` starts with the fixed-width receive time, so a thing's alerts sort
by time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.schema import Alert, AlertHeader  # noqa: F401

MAX_ALERT_BYTES = 262_144  # 256 KiB: larger objects are quarantined without being read
MAX_FIELDS = 64
MAX_CODE = 2**31 - 1
QUARANTINE_PREFIX = "quarantine/"
# The reasons an object is quarantined; each is also the path segment under QUARANTINE_PREFIX.
QUARANTINE_REASONS = ("unexpected-key", "oversized", "invalid-json", "invalid-alert")

# Use parse_alert_key (fullmatch), not ALERT_KEY.match: '$' would accept a trailing newline.
ALERT_KEY = re.compile(
    r"^alerts/(?P<thing>[A-Za-z0-9_-]{1,128})/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})"
    r"/(?P<name>[A-Za-z0-9_.-]{1,200})\.json$",
    re.ASCII,
)

# The parts of the layout on their own (always fullmatch): a thing name, and an alert_id as
# alert_id_for makes it (fixed-width UTC time, '#', 12 hex digits).
THING_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)
ALERT_ID_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z#[0-9a-f]{12}", re.ASCII)

ALERTS_TABLE_PARTITION_KEY = "thing"
ALERTS_TABLE_SORT_KEY = "alert_id"
ALERT_ID_INDEX = "by_alert_id"  # GSI: partition key alert_id

def decode_base64(value: str) -> bytes:
    """Strict standard base64: alphabet, padding and canonical form checked; at least one byte."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise ValueError("trace is not valid base64") from exc
    if not raw:
        raise ValueError("trace must not be empty")
    if base64.b64encode(raw).decode("ascii") != value:  # non-zero pad bits, i.e. not canonical
        raise ValueError("trace is not canonical base64")
    return raw


class InvalidAlertJSON(ValueError):
    """The object is not a UTF-8 JSON document (quarantine reason `invalid-json`)."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidAlertJSON(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def load_alert_json(raw: bytes) -> Any:
    """Decode the object: strict UTF-8, duplicate keys refused. Raises InvalidAlertJSON."""
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except InvalidAlertJSON:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidAlertJSON(type(exc).__name__) from None


def parse_alert(raw: bytes) -> Alert:
    """Object bytes to an Alert. Raises InvalidAlertJSON, or pydantic.ValidationError (`invalid-alert`)."""
    from alerts.schema import Alert  # pydantic, on first use (see __getattr__)

    return Alert.model_validate(load_alert_json(raw))


def __getattr__(name: str) -> Any:
    """`Alert` and `AlertHeader` (alerts.schema) on first access: importing the contract does not
    load pydantic (~60 ms of cold start), which only the processor needs, and only once it reads an
    object."""
    if name in ("Alert", "AlertHeader"):
        from alerts import schema

        return getattr(schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_alert_key(key: object) -> str | None:
    """The thing name of an alert object key, or None if the key is not an alert key."""
    if not isinstance(key, str):
        return None
    match = ALERT_KEY.fullmatch(key)
    return match.group("thing") if match else None


def quarantine_key(reason: str, key: str) -> str:
    """`quarantine/<reason>/<original key>`; a key too long for S3 that way is replaced by its hash."""
    if reason not in QUARANTINE_REASONS:
        raise ValueError(f"unknown quarantine reason {reason!r}")
    target = f"{QUARANTINE_PREFIX}{reason}/{key}"
    if len(target.encode("utf-8", "surrogatepass")) > 1024:  # S3's key length limit
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        target = f"{QUARANTINE_PREFIX}{reason}/_long-key/{digest}"
    return target


def normalise_event_time(event_time: str) -> str:
    """S3 eventTime (ISO-8601) to fixed-width `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC. Raises ValueError."""
    if not isinstance(event_time, str) or not event_time:
        raise ValueError("event time must be a non-empty string")
    text = event_time.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    match = re.fullmatch(r"(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)", text, re.ASCII)
    if match:  # older Pythons' fromisoformat takes only 3 or 6 fraction digits
        text = f"{match[1]}.{match[2][:6].ljust(6, '0')}{match[3]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        m = moment.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 9999 with a negative offset
        raise ValueError("event time out of range") from exc
    # Formatted by hand: strftime('%Y') does not zero-pad years before 1000 on every platform.
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
            f".{m.microsecond // 1000:03d}Z")


def object_digest(bucket: str, key: str, version: str | None) -> str:
    """First 12 hex chars of SHA-256 over bucket, key and version (NUL-separated: unambiguous)."""
    material = "\x00".join((bucket, key, version or ""))
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def alert_id_for(event_time: str, bucket: str, key: str, version: str | None) -> str:
    """`<received_at ISO>#<digest>`: sorts by time, unique per object version."""
    return f"{normalise_event_time(event_time)}#{object_digest(bucket, key, version)}"


def index_item(
    *,
    thing: str,
    alert: Alert,
    event_time: str,
    bucket: str,
    key: str,
    version: str | None,
    size: int | None = None,
) -> dict[str, Any]:
    """The alerts-table item for one valid alert (no trace: the table never holds it). `size`: the bytes of
    the object version that was read, which the trace download is checked against."""
    received_at = normalise_event_time(event_time)
    item: dict[str, Any] = {
        "thing": thing,
        "alert_id": f"{received_at}#{object_digest(bucket, key, version)}",
        "received_at": received_at,
        "code": alert.header.code,
        "fw": alert.header.fw,
        "field_count": len(alert.header.fields),
        "bucket": bucket,
        "key": key,
    }
    if version:
        item["version_id"] = version
    if size is not None:
        item["size"] = size
    return item
