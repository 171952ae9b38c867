"""Authorization failures from IoT Core's logs, decoded and tallied per client and window (pure).

A CloudWatch Logs subscription filter on the IoT log group (AWSIotLogsV2) with the pattern
`{ $.reason = "AUTHORIZATION_FAILURE" }` invokes the function with
    {"awslogs": {"data": "<base64 of gzip of JSON>"}}
whose JSON is {"messageType": "DATA_MESSAGE" | "CONTROL_MESSAGE", "logGroup", "logStream",
"subscriptionFilters", "logEvents": [{"id", "timestamp": <ms>, "message": "<IoT log line>"}]}
and each IoT v2 log line is JSON such as
    {"timestamp": "2017-08-10 15:37:23.476", "logLevel": "ERROR", "traceId": "...",
     "accountId": "123456789012", "status": "Failure", "eventType": "Connect" | "Publish-In" |
     "Subscribe" | ..., "protocol": "MQTT", "clientId": "...", "principalId": "...",
     "sourceIp": "...", "sourcePort": 13490, "reason": "AUTHORIZATION_FAILURE",
     "details": "Authorization Failure"}

Only lines whose reason is AUTHORIZATION_FAILURE count (the filter may be wider). Each failure
is counted against what AWS authenticated, never against a claim (defense/attribution.py):
    * a refused `Connect`: its client id is whatever the caller asked for, so it counts against
      the certificate (`principalId`); a certificate crossing the limit is checked against the
      thing it claimed (counter.py) and names that thing only if attached to it;
    * a failure on an accepted MQTT connection (Publish-In, Subscribe, ...): against the
      connected thing, i.e. the client id. Fleetwarden's device policy admits iot:Connect only
      as `client/${iot:Connection.Thing.ThingName}` with `iot:Connection.Thing.IsAttached`, so
      an accepted connection's client id is a thing its certificate is attached to; the claim
      policy admits only `claim-*` client ids, which are not things and count against the
      certificate;
    * anything else (HTTP, a claim connection): against the certificate;
    * a principal that is not a certificate (IAM, a custom authorizer): counted as UNATTRIBUTED,
      logged, never a violation (a violation needs a thing or a certificate).
A failure belongs to the aligned window floor(t / WINDOW_SECONDS) * WINDOW_SECONDS of its log
event's timestamp (the line's own "timestamp", read as UTC, when the event has none), so every
invocation, container and retry puts it in the same counter.

The delivery is read with Powertools' CloudWatchLogsEvent.parse_logs_data(), inflated with the
limits Powertools' own decompression lacks (strict base64, gzip only, a bounded size); the log
events are then checked one by one here (a delivery may hold anything, and one odd event must
not lose the others).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from aws_lambda_powertools.utilities.data_classes import CloudWatchLogsEvent
from aws_lambda_powertools.utilities.data_classes.cloud_watch_logs_event import CloudWatchLogsDecodedData

from defense.attribution import CLAIM_CLIENT_PREFIX, THING_NAME, certificate_id

AUTH_FAILURE = "AUTHORIZATION_FAILURE"
DATA_MESSAGE = "DATA_MESSAGE"
CONTROL_MESSAGE = "CONTROL_MESSAGE"
MAX_CLIENT_ID_BYTES = 128  # IoT Core's limit on an MQTT client id
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024  # a delivery is at most ~1 MB of log events; refuse a gzip bomb
TTL_AFTER_WINDOW_SECONDS = 86_400
COUNTER_PREFIX = "auth#"

# Subjects a failure counts against.
THING = "thing"
CERTIFICATE = "certificate"
UNATTRIBUTED = "principal"  # not a certificate: counted and logged, never a violation
CONNECT = "Connect"
MQTT = "MQTT"

# Malformed reasons: stable strings (metric dimensions depend on them).
NOT_SUBSCRIPTION = "not-subscription"  # no awslogs.data string
BAD_BASE64 = "bad-base64"
BAD_GZIP = "bad-gzip"
BAD_JSON = "bad-json"
BAD_MESSAGE_TYPE = "bad-message-type"
BAD_LOG_EVENT = "bad-log-event"  # a log event is not {"id", "timestamp", "message"}
BAD_LINE = "bad-line"  # the message is not an IoT log line (JSON object)
BAD_TIMESTAMP = "bad-timestamp"


class MalformedEvent(ValueError):
    """The invocation is not a CloudWatch Logs subscription delivery; `reason` is a fixed text."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def window_of(timestamp_ms: int, window_seconds: int) -> int:
    """The aligned window start (epoch seconds) of a time in epoch milliseconds."""
    return timestamp_ms // 1000 // window_seconds * window_seconds


def counter_key(kind: str, subject: str, window_start: int) -> str:
    return f"{COUNTER_PREFIX}{kind}:{subject}#{window_start}"


def subject_of(line: Mapping[str, Any]) -> tuple[str, str]:
    """(THING, client id) | (CERTIFICATE, certificate id) | (UNATTRIBUTED, principal): whom an
    authorization failure log line counts against (see the module docstring)."""
    client_id = line.get("clientId")
    if (line.get("eventType") != CONNECT and line.get("protocol") == MQTT and type(client_id) is str
            and THING_NAME.fullmatch(client_id) and not client_id.startswith(CLAIM_CLIENT_PREFIX)):
        return THING, client_id
    principal = line.get("principalId")
    certificate = certificate_id(principal)
    if certificate is not None:
        return CERTIFICATE, certificate
    if isinstance(principal, str) and principal:
        return UNATTRIBUTED, principal[:MAX_CLIENT_ID_BYTES]
    return UNATTRIBUTED, "unknown"


def expires_at(window_start: int, window_seconds: int) -> int:
    """The counter's TTL: one day after its window ends."""
    return window_start + window_seconds + TTL_AFTER_WINDOW_SECONDS


def batch_token(event_ids: list[str]) -> str:
    """The same failures always give the same token: it marks a delivery as counted, so a
    retried or redelivered one is not counted twice."""
    return hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:24]


def _inflate(data: str) -> bytes:
    """base64 of gzip -> its bytes, refusing anything else and anything inflating past
    MAX_DECOMPRESSED_BYTES."""
    try:
        compressed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvent(BAD_BASE64) from None
    try:
        inflater = zlib.decompressobj(wbits=31)  # gzip only
        raw = inflater.decompress(compressed, MAX_DECOMPRESSED_BYTES)
    except zlib.error:
        raise MalformedEvent(BAD_GZIP) from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise MalformedEvent(BAD_GZIP)
    return raw


class SubscriptionEvent(CloudWatchLogsEvent):
    """CloudWatchLogsEvent whose parse_logs_data() inflates through `_inflate` (Powertools'
    decompress_logs_data has no size limit: a small delivery could inflate to gigabytes)."""

    @property
    def decompress_logs_data(self) -> bytes:
        return _inflate(self.raw_logs_data)


def decode_event(event: Any) -> CloudWatchLogsDecodedData:
    """The subscription delivery -> its decoded document (an object with a string messageType)."""
    awslogs = event.get("awslogs") if isinstance(event, dict) else None
    if not isinstance(awslogs, dict) or not isinstance(awslogs.get("data"), str):
        raise MalformedEvent(NOT_SUBSCRIPTION)
    try:
        doc = SubscriptionEvent(event).parse_logs_data()
    except MalformedEvent:
        raise
    except (ValueError, RecursionError):  # not UTF-8 JSON
        raise MalformedEvent(BAD_JSON) from None
    if not isinstance(doc.raw_event, dict) or not isinstance(doc.get("messageType"), str):
        raise MalformedEvent(BAD_MESSAGE_TYPE)
    return doc


@dataclass
class Tally:
    """Failures per (subject kind, subject, window start): their log event ids, in order of
    arrival, and the client id the last of them claimed."""

    failures: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    claimed: dict[tuple[str, str, int], str] = field(default_factory=dict)
    lines: int = 0  # log events seen
    counted: int = 0  # authorization failures tallied
    ignored: int = 0  # valid lines with another reason
    malformed: dict[str, int] = field(default_factory=dict)

    def bad(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


def _line_time_ms(line: dict[str, Any]) -> int | None:
    """The IoT line's own timestamp ("2017-08-10 15:37:23.476", UTC) in epoch ms, if readable."""
    text = line.get("timestamp")
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    ms = int(moment.timestamp() * 1000)
    return ms if ms >= 0 else None


def tally(doc: Mapping[str, Any], window_seconds: int) -> Tally:
    """A DATA_MESSAGE document -> its authorization failures per (client id, window). Never raises
    for content: every odd log event is counted in Tally.malformed and skipped."""
    result = Tally()
    events = doc.get("logEvents")
    if not isinstance(events, list):
        result.bad(BAD_LOG_EVENT)
        return result
    for log_event in events:
        result.lines += 1
        if not isinstance(log_event, dict) or not isinstance(log_event.get("message"), str):
            result.bad(BAD_LOG_EVENT)
            continue
        message = log_event["message"]
        try:
            line = json.loads(message)
        except (ValueError, RecursionError):
            result.bad(BAD_LINE)
            continue
        if not isinstance(line, dict):
            result.bad(BAD_LINE)
            continue
        if line.get("reason") != AUTH_FAILURE:
            result.ignored += 1
            continue
        client_id = line.get("clientId")
        if (not isinstance(client_id, str) or not client_id
                or len(client_id.encode("utf-8", "surrogatepass")) > MAX_CLIENT_ID_BYTES):
            client_id = None  # a claim only: the failure still counts against its principal
        timestamp = log_event.get("timestamp")
        if type(timestamp) is not int or timestamp < 0:
            timestamp = _line_time_ms(line)
            if timestamp is None:
                result.bad(BAD_TIMESTAMP)
                continue
        event_id = log_event.get("id")
        if not isinstance(event_id, str) or not event_id:
            # CloudWatch always gives one; otherwise the content identifies the failure.
            event_id = hashlib.sha256(f"{timestamp}\n{message}".encode("utf-8", "surrogatepass")).hexdigest()
        kind, subject = subject_of(line)
        key = (kind, subject, window_of(timestamp, window_seconds))
        result.failures.setdefault(key, []).append(event_id)
        if client_id is not None:
            result.claimed[key] = client_id
        result.counted += 1
    return result
