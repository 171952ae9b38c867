"""Per-device counts over one Lambda tumbling window of the device Kinesis stream (pure: no AWS).

IoT rules put these kinds of record on the stream, partition key = the connection's client id
(the certificate for refused connections), so all of a subject's records land on one shard and
Lambda's tumbling window (TumblingWindowInSeconds = WINDOW_SECONDS) hands every batch of that
shard's window the state the previous batch returned:

    telemetry  {"payload": "<base64>", "thing", "client_id", "principal", "received_at"}
               (the telemetry rule's envelope) -> messages +1, bytes += decoded payload length,
               and the message itself judged against MAX_TELEMETRY_BYTES
    telemetry-batch  {"kind": "telemetry-batch", "client_id", "batch", "messages", "bytes",
               "max_bytes", "spoofed"} (one per connection per Firehose batch, from the telemetry
               transform: telemetry/transform/aggregates.py; it replaces the telemetry tap) ->
               messages += messages, bytes += bytes, the largest message judged against
               MAX_TELEMETRY_BYTES (the transform sends a batch's aggregates once: a Firehose
               retry sends none, so nothing about batches is kept here)
    telemetry-batches  {"kind": "telemetry-batches", "aggregates": [<telemetry-batch>, ...]}: the
               aggregates of the connections one shard takes, packed in one record (the
               transform routes it with ExplicitHashKey to that shard) -> each as above
    alert      {"kind": "alert", "client_id", "b64_length"} (the alert count rule: the length of
               the payload's base64, so the alert itself stays off the stream) -> messages +1,
               bytes += its size, and the message judged against MAX_ALERT_BYTES
    message    {"kind": "message", "client_id"}: every other message a device sends (shadow
               requests; stacks/defense/builtin_detector.py) -> messages +1
    presence   {"kind": "presence", "event": "connected" | "disconnected" | "connect_failed",
                "client_id", "timestamp", "principal"?, "session"?, "version"?,
                "disconnect_reason"?} (a lifecycle event as the presence rules select it:
                https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html)
               -> connected / disconnected: connects or disconnects +1 of the client id;
                  connect_failed: connects +1 and authorization failures +1 of the certificate
    metrics    {"kind": "metrics", "thing", "client_id", "report": <Defender device-side report>}
               (the metrics rule: thing = topic(2) of shared.topics.metrics_report_topic,
               client_id = clientid()) -> messages +1 of the client id, and its own report
               (thing == client_id) judged at once (detector/reports.py): any listening TCP/UDP
               port, or more than MAX_ESTABLISHED_TCP established connections, is a violation

Everything counts against what AWS authenticated, not against what a record claims
(defense/attribution.py):
  * an accepted connection's client id is a thing its certificate is attached to (the device
    policy admits iot:Connect only as client/${iot:Connection.Thing.ThingName} with IsAttached),
    so telemetry, messages, reports and connected / disconnected events count against the client
    id; telemetry whose `thing` differs from its `client_id` counts against the client id (and is
    counted as spoofed), a metrics record the same way (it must carry its `client_id`: a
    report naming another thing is judged as the sender's own, never the named thing's);
  * a claim connection (client id `claim-*`, the claim policy's only ones) is no thing: its
    presence counts against its certificate (`principal`);
  * a refused Connect (`connect_failed`) claims any client id it likes: it counts against its
    certificate `@<certificate id>`, whose violation is a certificate violation carrying the
    claimed `clientId`; the handler turns it into that thing's violation only when the
    certificate is attached to that thing (one ListThingPrincipals call, once per crossing).
    A principal that is not a certificate names nothing: counted in FoldStats.unattributed.

Lifecycle events "might be sent out of order" and "You might receive duplicate messages"
(life-cycle-events.html). Order does not matter to a count; a duplicate must not count twice: a
presence event with a sessionIdentifier is counted once per window, recognised by a CRC-32 of
(client id, event, timestamp, sessionIdentifier, versionNumber) kept per subject while the count
it belongs to is within its limit (beyond it the alarm is raised already). So a flaky link that
reconnects within its limits, delivered twice, stays within them.

`fold(state, records, limits, window)` -> (new state, violations). It never mutates its inputs,
so a batch retried with the previous state (Lambda re-sends it on a retry) gives the same
result, the same violations with the same ids, and no double count. A device crossing a limit
gives ONE violation per behaviour per window, in the batch where it crosses; the state remembers
it (a bit per behaviour) so later batches of the window do not repeat it, and its violationId is
a hash of thing|profile|behaviour|window start (shared.violations.derive_violation_id), so a
republished duplicate is recognisable downstream.

Message size is judged per message and per kind of topic, as the Defender profile's
`aws:message-byte-size` behaviours are (one per TOPIC_FILTER dimension: TelemetryMessageByteSize,
AlertMessageByteSize): an alert may legitimately be far larger than a telemetry message, so one
large alert never trips the telemetry limit. The window's byte total (MessageBytes) is a separate,
Fleetwarden-only behaviour (metric `fleetwarden:bytes-per-window`: Defender's
aws:message-byte-size is the size of one message, "Cloud-side metrics",
https://docs.aws.amazon.com/iot-device-defender/latest/devguide/detect-cloud-side-metrics.html).

State (returned to Lambda, at most 1 MB per shard), compact JSON:
    {"v": 2, "w": <window start, epoch s>, "n": <records seen this window>,
     "e": <subjects evicted this window>,
     "t": {"<client id>" | "@<certificate id>": [messages, bytes, connects, disconnects,
                                                 alarmed bitmask, authorization failures]},
     "p": {"<subject>": [CRC-32 of each presence event counted]}}
At most `limits.max_tracked` subjects (and about `limits.state_budget_bytes` of state, the
fingerprints included) are kept per shard: when full, the quarter with the least traffic
relative to its limits is dropped (alarmed ones are kept first), counted in "e" and in
FoldStats.evicted, and counting goes on for the biggest. A state of another window (or version)
is discarded: every window starts empty.

Malformed records (bad base64, JSON, kind, field types, an id that is not a thing name) are
counted by reason in FoldStats and skipped; nothing here raises for any record content.

The hot path (telemetry) is stdlib only; the violation builder (pydantic) is imported on the
first violation, so a healthy invocation never loads it.
"""

from __future__ import annotations

import binascii
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, NamedTuple

from defense.attribution import CLAIM_CLIENT_PREFIX, certificate_id
from defense.detector.reports import InvalidReport, parse_report
from defense.env_settings import read_limits
from shared.topics import THING_NAME

STATE_VERSION = 2
MAX_WINDOW_SECONDS = 900  # Lambda's tumbling-window maximum
ENTRY_OVERHEAD = 52  # state bytes per subject besides its id: quotes, brackets, separators, digits
PRINTS_OVERHEAD = 6  # state bytes per subject with fingerprints besides its id: quotes, colon, brackets
PRINT_BYTES = 11  # state bytes per fingerprint: up to 10 digits and a comma
MAX_INVALID_REPORTS_NOTED = 20
# A telemetry-batch record's `batch` (telemetry/transform/aggregates.py: 2**32 + a 32-bit digest).
BATCH_KEY_MIN, BATCH_KEY_END = 1 << 32, 1 << 33
CERTIFICATE_KEY = "@"  # a certificate's subject key: "@<id>" ('@' is in no thing name)

# An entry: [messages, bytes, connects, disconnects, alarmed bitmask, authorization failures]
MESSAGES, BYTES, CONNECTS, DISCONNECTS, ALARMED, AUTH_FAILURES = range(6)
ENTRY_LENGTH = 6

# The ids that may be counted and named in a violation: Defender's thing-name pattern.
THING_ID = THING_NAME
_safe_id = THING_ID.fullmatch


class Behavior(NamedTuple):
    bit: int  # in the entry's alarmed bitmask
    name: str  # behavior.name in the violation
    metric: str  # behavior.metric


MESSAGES_SENT = Behavior(1, "MessagesSent", "aws:num-messages-sent")
MESSAGE_BYTES = Behavior(2, "MessageBytes", "fleetwarden:bytes-per-window")
CONNECTION_ATTEMPTS = Behavior(4, "ConnectionAttempts", "aws:num-connection-attempts")
DISCONNECTS_ = Behavior(8, "Disconnects", "aws:num-disconnects")
LISTENING_TCP_PORTS = Behavior(16, "ListeningTcpPorts", "aws:num-listening-tcp-ports")
LISTENING_UDP_PORTS = Behavior(32, "ListeningUdpPorts", "aws:num-listening-udp-ports")
ESTABLISHED_TCP = Behavior(64, "EstablishedTcpConnections", "aws:num-established-tcp-connections")
AUTHORIZATION_FAILURES = Behavior(128, "AuthorizationFailures", "aws:num-authorization-failures")
TELEMETRY_MESSAGE_SIZE = Behavior(256, "TelemetryMessageByteSize", "aws:message-byte-size")
ALERT_MESSAGE_SIZE = Behavior(512, "AlertMessageByteSize", "aws:message-byte-size")
BEHAVIORS = (MESSAGES_SENT, MESSAGE_BYTES, CONNECTION_ATTEMPTS, DISCONNECTS_, LISTENING_TCP_PORTS,
             LISTENING_UDP_PORTS, ESTABLISHED_TCP, AUTHORIZATION_FAILURES, TELEMETRY_MESSAGE_SIZE,
             ALERT_MESSAGE_SIZE)

# Malformed-record reasons: stable strings (metric dimensions depend on them).
BAD_RECORD = "bad-record"  # not a Kinesis record with string data
BAD_DATA = "bad-data"  # data is not base64 of UTF-8 JSON
NOT_OBJECT = "not-object"
UNKNOWN_KIND = "unknown-kind"
BAD_FIELDS = "bad-fields"  # a field is missing or of the wrong type / value
BAD_PAYLOAD = "bad-payload"  # telemetry payload is not a base64 string
UNSAFE_ID = "unsafe-id"  # the client id / thing is not a thing name, or a claim-*: it cannot be named
MALFORMED_REASONS = (BAD_RECORD, BAD_DATA, NOT_OBJECT, UNKNOWN_KIND, BAD_FIELDS, BAD_PAYLOAD, UNSAFE_ID)


@dataclass(frozen=True)
class Limits:
    """Per device, per window; the defaults are the stage defaults in stacks/config.py."""

    max_messages: int = 600
    max_bytes: int = 5_242_880
    max_connects: int = 10
    max_disconnects: int = 10
    max_established_tcp: int = 10
    max_auth_failures: int = 10
    max_telemetry_bytes: int = 8192  # one message; stage settings max_telemetry_bytes / max_alert_bytes
    max_alert_bytes: int = 131_072
    window_seconds: int = 300
    profile: str = "fleetwarden-builtin"
    max_tracked: int = 10_000
    state_budget_bytes: int = 800_000


# Environment variable -> (Limits field, lowest, highest).
_ENV_LIMITS = {
    "MAX_MESSAGES": ("max_messages", 1, 10**12),
    "MAX_BYTES": ("max_bytes", 1, 10**15),
    "MAX_CONNECTS": ("max_connects", 1, 10**9),
    "MAX_DISCONNECTS": ("max_disconnects", 1, 10**9),
    "MAX_ESTABLISHED_TCP": ("max_established_tcp", 0, 10**6),
    "MAX_AUTH_FAILURES": ("max_auth_failures", 0, 10**9),
    "MAX_TELEMETRY_BYTES": ("max_telemetry_bytes", 1, 10**9),
    "MAX_ALERT_BYTES": ("max_alert_bytes", 1, 10**9),
    "WINDOW_SECONDS": ("window_seconds", 1, MAX_WINDOW_SECONDS),
    "MAX_TRACKED_THINGS": ("max_tracked", 10, 100_000),
}


def limits_from_env(env: Mapping[str, str] | None = None) -> tuple[Limits, list[str]]:
    """Limits from the environment (set by the stack) -> (limits, problems). A missing or invalid
    value keeps its default and is named in `problems` (the handler logs them): a typo must not
    stop detection for the whole fleet."""
    env = os.environ if env is None else env
    values, problems = read_limits(env, _ENV_LIMITS,
                                   optional=frozenset({"MAX_TRACKED_THINGS", "MAX_AUTH_FAILURES",
                                                       "MAX_TELEMETRY_BYTES", "MAX_ALERT_BYTES"}))
    return Limits(**values), problems


@dataclass
class FoldStats:
    """What one fold saw (for metrics and logs); fold adds to it."""

    records: int = 0
    telemetry: int = 0
    messages: int = 0  # "message" records (shadow requests)
    alerts: int = 0
    presence: int = 0  # presence events counted (duplicates excluded)
    connect_failed: int = 0  # refused connections counted against their certificate
    duplicates: int = 0  # presence events seen before in this window: not counted again
    unattributed: int = 0  # refused / claim connections whose principal is not a certificate
    reports: int = 0
    spoofed: int = 0
    reports_invalid: int = 0
    evicted: int = 0
    state_reset: int = 0  # a non-empty state of another window or version was discarded
    window_missing: int = 0  # the event had no usable window: the current aligned window was used
    tracked: int = 0  # subjects in the returned state
    state_bytes: int = 0  # estimated size of the returned state
    malformed: dict[str, int] = field(default_factory=dict)  # reason -> records
    invalid_reports: list[tuple[str, str]] = field(default_factory=list)  # (thing, reason), first few

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


_iso = datetime.fromisoformat


def window_start(window: Any) -> int | None:
    """The window's start in epoch seconds, or None if `window` has no parseable start."""
    start = window.get("start") if type(window) is dict else None
    if type(start) is not str or len(start) > 40:
        return None
    try:
        moment = _iso(start[:-1] + "+00:00" if start.endswith("Z") else start)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp())


_make_violation: Callable[..., dict[str, Any]] | None = None


def _builder() -> Callable[..., dict[str, Any]]:
    """shared.violations.make_violation, imported on the first violation (pydantic stays off the
    healthy path)."""
    global _make_violation
    if _make_violation is None:
        from shared.violations import make_violation

        _make_violation = make_violation
    return _make_violation


def build_violation(subject: str, behavior: Behavior, limit: int, observed: int, limits: Limits,
                    start: int, now_ms: int, *, windowed: bool, claimed: str | None = None) -> dict[str, Any]:
    """One violation message in Device Defender's SNS alert format, about a thing or (subject
    "@<id>") a certificate with the client id it `claimed`; its id is derived from subject,
    profile, behaviour and window start (shared.violations.derive_violation_id)."""
    criteria: dict[str, Any] = {"comparisonOperator": "greater-than", "value": {"count": limit}}
    if windowed:
        criteria["durationSeconds"] = limits.window_seconds
    certificate = subject[1:] if subject.startswith(CERTIFICATE_KEY) else None
    return _builder()(
        thing=None if certificate else subject, certificate_id=certificate,
        client_id=claimed if certificate else None, profile=limits.profile, behavior_name=behavior.name,
        metric=behavior.metric, criteria=criteria, metric_value={"count": observed}, event_time_ms=now_ms,
        window=start,
    )


def _valid_entry(entry: Any) -> bool:
    return (type(entry) is list and len(entry) == ENTRY_LENGTH and type(entry[0]) is int
            and type(entry[1]) is int and type(entry[2]) is int and type(entry[3]) is int
            and type(entry[4]) is int and type(entry[5]) is int)


def _valid_prints(prints: Any) -> bool:
    return type(prints) is list and all(type(p) is int for p in prints)


def _score(entry: Any, limits: Limits) -> tuple[int, float]:
    """How much an entry matters: alarmed first, then traffic relative to the nearest limit."""
    if not _valid_entry(entry):
        return (-1, 0.0)
    return (1 if entry[ALARMED] else 0,
            max(entry[MESSAGES] / limits.max_messages, entry[BYTES] / limits.max_bytes,
                entry[CONNECTS] / limits.max_connects, entry[DISCONNECTS] / limits.max_disconnects,
                entry[AUTH_FAILURES] / max(1, limits.max_auth_failures)))


def _entry_size(key: str, prints: dict[str, list[int]]) -> int:
    """A subject's share of the state: its entry, and its fingerprints if it has any."""
    size = len(key) + ENTRY_OVERHEAD
    held = prints.get(key)
    if held is not None:
        size += len(key) + PRINTS_OVERHEAD + PRINT_BYTES * len(held)
    return size


def _evict(things: dict[str, Any], prints: dict[str, list[int]], touched: dict[str, list[int]],
           limits: Limits) -> int:
    """Drop the least important subjects until a quarter of the room is free; returns how many."""
    keep_count = max(1, limits.max_tracked * 3 // 4)
    keep_bytes = limits.state_budget_bytes * 3 // 4
    ranked = sorted(things.items(), key=lambda item: (_score(item[1], limits), item[0]), reverse=True)
    size = 0
    kept = 0
    for key, _entry in ranked:
        size += _entry_size(key, prints)
        if kept >= keep_count or size > keep_bytes:
            break
        kept += 1
    dropped = ranked[kept:]
    for key, _entry in dropped:
        del things[key]
        prints.pop(key, None)
        touched.pop(key, None)
    return len(dropped)


class _Skipped(Exception):
    """A record that is not counted, for `reason` (one of MALFORMED_REASONS)."""

    def __init__(self, reason: str):
        self.reason = reason


_a2b = binascii.a2b_base64
_loads = json.loads


def _decode(record: Any) -> dict[str, Any]:
    """A Kinesis record -> the JSON object its data carries (base64 checked strictly)."""
    try:
        data = record["kinesis"]["data"]
    except (TypeError, KeyError):
        raise _Skipped(BAD_RECORD) from None
    if type(data) is not str:
        raise _Skipped(BAD_RECORD)
    try:
        doc = _loads(_a2b(data, strict_mode=True).decode())
    except (ValueError, RecursionError):
        raise _Skipped(BAD_DATA) from None
    if type(doc) is not dict:
        raise _Skipped(NOT_OBJECT)
    return doc


def _decoded_length(payload: str) -> int:
    """The length base64 `payload` decodes to, without decoding: 3 bytes per 4 characters, less
    the padding."""
    length = len(payload)
    if length & 3:
        raise _Skipped(BAD_PAYLOAD)
    nbytes = (length >> 2) * 3
    if length and payload[-1] == "=":
        nbytes -= 2 if payload[-2] == "=" else 1
    return nbytes


def _state_size(things: dict[str, Any], prints: dict[str, list[int]]) -> int:
    return (sum(map(len, things)) + ENTRY_OVERHEAD * len(things)
            + sum(len(key) + PRINTS_OVERHEAD + PRINT_BYTES * len(held) for key, held in prints.items()))


def _fingerprint(client: str, event: str, doc: dict[str, Any]) -> int:
    """A presence event's identity: client id, event type, timestamp, sessionIdentifier and
    versionNumber (the same event delivered twice has all five equal)."""
    return zlib.crc32(f"{client}|{event}|{doc.get('timestamp')}|{doc.get('session')}|{doc.get('version')}"
                      .encode("utf-8", "surrogatepass"))


class _WindowCounts:
    """The window's per-subject counts while one batch is folded in. The previous state is only
    read: an entry (or fingerprint list) is copied on its first change in the batch, so the
    caller's state never changes and a retried batch starts from the same counts."""

    def __init__(self, state: Any, start: int, limits: Limits, now_ms: int, stats: FoldStats):
        self.start, self.limits, self.now_ms, self.stats = start, limits, now_ms, stats
        if (type(state) is dict and state.get("v") == STATE_VERSION and state.get("w") == start
                and type(state.get("t")) is dict):
            evicted, seen, prints = state.get("e"), state.get("n"), state.get("p")
            self.things: dict[str, Any] = dict(state["t"])
            self.prints: dict[str, list[int]] = (
                {k: v for k, v in prints.items() if _valid_prints(v) and k in self.things}
                if type(prints) is dict else {})
            self.evicted = evicted if type(evicted) is int else 0
            self.seen = seen if type(seen) is int else 0
        else:
            if state:
                stats.state_reset += 1
            self.things, self.prints, self.evicted, self.seen = {}, {}, 0, 0
        self.size = _state_size(self.things, self.prints)
        self.touched: dict[str, list[int]] = {}
        self.violations: list[dict[str, Any]] = []

    def entry(self, key: Any) -> list[int]:
        """The writable entry of thing `key`; _Skipped(UNSAFE_ID) if key is not a thing name, or is
        a claim connection's client id (no thing: the claim policy lets it publish nothing counted
        here)."""
        entry = self.touched.get(key) if type(key) is str else None
        if entry is not None:
            return entry
        if type(key) is not str or not _safe_id(key) or key.startswith(CLAIM_CLIENT_PREFIX):
            raise _Skipped(UNSAFE_ID)
        return self._first_touch(key)

    def _first_touch(self, key: str) -> list[int]:
        old = self.things.get(key)
        if old is not None and _valid_entry(old):
            entry = old.copy()
        else:
            if old is None:
                self._make_room(key)
            entry = [0, 0, 0, 0, 0, 0]
        self.things[key] = self.touched[key] = entry
        return entry

    def certificate_entry(self, principal: Any) -> tuple[str, list[int]] | None:
        """(key, writable entry) of the certificate `principal` is, or None (counted in
        FoldStats.unattributed) if it is not a certificate id."""
        certificate = certificate_id(principal)
        if certificate is None:
            self.stats.unattributed += 1
            return None
        key = CERTIFICATE_KEY + certificate
        entry = self.touched.get(key)
        return key, entry if entry is not None else self._first_touch(key)

    def _make_room(self, key: str) -> None:
        """Account for a new subject, first evicting the least important ones if the state is full."""
        limits = self.limits
        if (len(self.things) >= limits.max_tracked
                or self.size + len(key) + ENTRY_OVERHEAD > limits.state_budget_bytes):
            self._evict()
        self.size += len(key) + ENTRY_OVERHEAD

    def _evict(self) -> None:
        dropped = _evict(self.things, self.prints, self.touched, self.limits)
        self.evicted += dropped
        self.stats.evicted += dropped
        self.size = _state_size(self.things, self.prints)

    def _alarm(self, key: str, entry: list[int], behavior: Behavior, limit: int, observed: int, *,
               windowed: bool, claimed: str | None = None) -> None:
        """A violation, unless this subject already had one for this behaviour in this window."""
        if not entry[ALARMED] & behavior.bit:
            entry[ALARMED] |= behavior.bit
            self.violations.append(build_violation(key, behavior, limit, observed, self.limits, self.start,
                                                   self.now_ms, windowed=windowed, claimed=claimed))

    def _first_time(self, key: str, print_: int, keep: bool) -> bool:
        """False if the presence event `print_` of `key` was counted before in this window;
        otherwise remembers it (when `keep`: its count is still within the limit) and says True."""
        held = self.prints.get(key)
        if held is not None and print_ in held:
            self.stats.duplicates += 1
            return False
        if keep:
            # A new list: the previous state is read-only.
            self.prints[key] = [print_] if held is None else held + [print_]
            self.size += PRINT_BYTES + (len(key) + PRINTS_OVERHEAD if held is None else 0)
            if self.size > self.limits.state_budget_bytes:  # e.g. the whole fleet reconnecting at once
                self._evict()
        return True

    def telemetry(self, doc: dict[str, Any]) -> None:
        payload, client = doc.get("payload"), doc.get("client_id")
        if type(payload) is not str or type(client) is not str:
            raise _Skipped(BAD_FIELDS)
        nbytes = _decoded_length(payload)
        entry = self.entry(client)
        stats = self.stats
        if doc.get("thing") != client:
            stats.spoofed += 1
        entry[MESSAGES] += 1
        entry[BYTES] += nbytes
        stats.telemetry += 1
        if nbytes > self.limits.max_telemetry_bytes:
            self._alarm(client, entry, TELEMETRY_MESSAGE_SIZE, self.limits.max_telemetry_bytes, nbytes,
                        windowed=False)

    def telemetry_batch(self, doc: dict[str, Any]) -> None:
        """A connection's telemetry in one Firehose batch."""
        client, batch = doc.get("client_id"), doc.get("batch")
        counts = [doc.get(name) for name in ("messages", "bytes", "max_bytes", "spoofed")]
        if (type(client) is not str or type(batch) is not int or not BATCH_KEY_MIN <= batch < BATCH_KEY_END
                or any(type(n) is not int or n < 0 for n in counts)):
            raise _Skipped(BAD_FIELDS)
        messages, nbytes, largest, spoofed = counts
        if messages < 1 or spoofed > messages or largest > nbytes:
            raise _Skipped(BAD_FIELDS)
        entry = self.entry(client)
        limits = self.limits
        entry[MESSAGES] += messages
        entry[BYTES] += nbytes
        stats = self.stats
        stats.telemetry += messages
        stats.spoofed += spoofed
        if largest > limits.max_telemetry_bytes:
            self._alarm(client, entry, TELEMETRY_MESSAGE_SIZE, limits.max_telemetry_bytes, largest,
                        windowed=False)

    def telemetry_batches(self, doc: dict[str, Any]) -> None:
        """Packed aggregates: each counted as a telemetry-batch record, a malformed one skipped alone."""
        aggregates = doc.get("aggregates")
        if type(aggregates) is not list:
            raise _Skipped(BAD_FIELDS)
        malformed = self.stats.malformed
        for aggregate in aggregates:
            try:
                if type(aggregate) is not dict:
                    raise _Skipped(NOT_OBJECT)
                self.telemetry_batch(aggregate)
            except _Skipped as skipped:
                malformed[skipped.reason] = malformed.get(skipped.reason, 0) + 1

    def alert(self, doc: dict[str, Any]) -> None:
        """An alert: one more message of its size, judged against the alert limit. The size is the
        least the base64 length allows (up to 2 bytes under the truth): never over, so an alert
        exactly at the limit is not taken for one over it."""
        client, b64_length = doc.get("client_id"), doc.get("b64_length")
        if type(client) is not str or type(b64_length) is not int or b64_length < 0 or b64_length & 3:
            raise _Skipped(BAD_FIELDS)
        nbytes = max(0, b64_length // 4 * 3 - 2)
        entry = self.entry(client)
        entry[MESSAGES] += 1
        entry[BYTES] += nbytes
        self.stats.alerts += 1
        if nbytes > self.limits.max_alert_bytes:
            self._alarm(client, entry, ALERT_MESSAGE_SIZE, self.limits.max_alert_bytes, nbytes, windowed=False)

    def message(self, doc: dict[str, Any]) -> None:
        """Any other message the connection sent (shadow requests): one more message."""
        client = doc.get("client_id")
        if type(client) is not str:
            raise _Skipped(BAD_FIELDS)
        self.entry(client)[MESSAGES] += 1
        self.stats.messages += 1

    def presence(self, doc: dict[str, Any]) -> None:
        event, client = doc.get("event"), doc.get("client_id")
        if event == "connected":
            slot, limit = CONNECTS, self.limits.max_connects
        elif event == "disconnected":
            slot, limit = DISCONNECTS, self.limits.max_disconnects
        elif event == "connect_failed":
            return self._connect_failed(doc, client)
        else:
            raise _Skipped(BAD_FIELDS)
        if type(client) is str and client.startswith(CLAIM_CLIENT_PREFIX):
            found = self.certificate_entry(doc.get("principal"))  # a claim connection is no thing
            if found is None:
                return
            key, entry = found
        else:
            entry = self.entry(client)
            key = client
        if type(doc.get("session")) is str and not self._first_time(
                key, _fingerprint(client, event, doc), entry[slot] < limit):
            return
        entry[slot] += 1
        self.stats.presence += 1

    def _connect_failed(self, doc: dict[str, Any], client: Any) -> None:
        """A refused Connect: one more attempt and authorization failure of its certificate,
        judged at once (the claimed client id goes into the violation)."""
        found = self.certificate_entry(doc.get("principal"))
        if found is None:
            return
        key, entry = found
        limits = self.limits
        claimed = client if type(client) is str and 0 < len(client) <= 128 else None
        if type(doc.get("session")) is str and not self._first_time(
                key, _fingerprint(str(claimed), "connect_failed", doc),
                entry[AUTH_FAILURES] < limits.max_auth_failures or entry[CONNECTS] < limits.max_connects):
            return
        entry[CONNECTS] += 1
        entry[AUTH_FAILURES] += 1
        self.stats.connect_failed += 1
        if entry[AUTH_FAILURES] > limits.max_auth_failures:
            self._alarm(key, entry, AUTHORIZATION_FAILURES, limits.max_auth_failures, entry[AUTH_FAILURES],
                        windowed=True, claimed=claimed)
        if entry[CONNECTS] > limits.max_connects:
            self._alarm(key, entry, CONNECTION_ATTEMPTS, limits.max_connects, entry[CONNECTS], windowed=True,
                        claimed=claimed)

    def report(self, doc: dict[str, Any]) -> None:
        """A device-side metrics report: one more message, and judged at once (its limits are
        not windowed)."""
        thing, client = doc.get("thing"), doc.get("client_id")
        if type(thing) is not str or type(client) is not str:
            raise _Skipped(BAD_FIELDS)
        entry = self.entry(client)
        stats = self.stats
        if thing != client:  # a report naming another device: judged as the sender's own
            stats.spoofed += 1
        entry[MESSAGES] += 1
        stats.reports += 1
        try:
            counts = parse_report(doc.get("report"))
        except InvalidReport as exc:
            stats.reports_invalid += 1
            if len(stats.invalid_reports) < MAX_INVALID_REPORTS_NOTED:
                stats.invalid_reports.append((client, exc.reason))
            return
        if counts.listening_tcp_ports:
            self._alarm(client, entry, LISTENING_TCP_PORTS, 0, counts.listening_tcp_ports, windowed=False)
        if counts.listening_udp_ports:
            self._alarm(client, entry, LISTENING_UDP_PORTS, 0, counts.listening_udp_ports, windowed=False)
        established = counts.established_tcp_connections
        if established is not None and established > self.limits.max_established_tcp:
            self._alarm(client, entry, ESTABLISHED_TCP, self.limits.max_established_tcp, established,
                        windowed=False)

    def check_windowed_limits(self) -> None:
        """Once per subject touched in this batch: a limit is reported in the batch that crosses it."""
        limits = self.limits
        max_messages, max_bytes = limits.max_messages, limits.max_bytes
        max_connects, max_disconnects = limits.max_connects, limits.max_disconnects
        for key, entry in self.touched.items():
            if (entry[MESSAGES] > max_messages or entry[BYTES] > max_bytes or entry[CONNECTS] > max_connects
                    or entry[DISCONNECTS] > max_disconnects):  # rare: only then find which
                for slot, behavior, limit in ((MESSAGES, MESSAGES_SENT, max_messages),
                                              (BYTES, MESSAGE_BYTES, max_bytes),
                                              (CONNECTS, CONNECTION_ATTEMPTS, max_connects),
                                              (DISCONNECTS, DISCONNECTS_, max_disconnects)):
                    if entry[slot] > limit:
                        self._alarm(key, entry, behavior, limit, entry[slot], windowed=True)

    def state(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "w": self.start, "n": self.seen, "e": self.evicted, "t": self.things,
                "p": self.prints}


def fold(
    state: Any,
    records: Any,
    limits: Limits,
    window: Any,
    *,
    now_ms: int | None = None,
    stats: FoldStats | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state of this window so far, a batch of Kinesis records) -> (new state, new violations).

    Pure: inputs are not modified, and the result depends only on the arguments (now_ms only sets
    violationEventTime). `window` is the event's {"start", "end"}; without a usable start the
    window containing now_ms is used (and counted in stats.window_missing).
    """
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if stats is None:
        stats = FoldStats()
    start = window_start(window)
    if start is None:
        stats.window_missing += 1
        start = now_ms // 1000 // limits.window_seconds * limits.window_seconds
    counts = _WindowCounts(state, start, limits, now_ms, stats)
    if type(records) is not list:
        records = []

    malformed = stats.malformed
    for record in records:
        try:
            doc = _decode(record)
            kind = doc.get("kind")
            if kind == "telemetry-batches":  # the hot path
                counts.telemetry_batches(doc)
            elif kind == "telemetry-batch":
                counts.telemetry_batch(doc)
            elif kind is None or kind == "telemetry":  # the rule's envelope: the former tap, whose
                counts.telemetry(doc)                   # records may still be on the stream (24 h)
            elif kind == "alert":
                counts.alert(doc)
            elif kind == "message":
                counts.message(doc)
            elif kind == "presence":
                counts.presence(doc)
            elif kind == "metrics":
                counts.report(doc)
            else:
                raise _Skipped(UNKNOWN_KIND)
        except _Skipped as skipped:
            malformed[skipped.reason] = malformed.get(skipped.reason, 0) + 1
        except Exception:  # noqa: BLE001 - observation data: one odd record must never fail the batch
            malformed[BAD_RECORD] = malformed.get(BAD_RECORD, 0) + 1
    counts.seen += len(records)
    stats.records += len(records)
    counts.check_windowed_limits()

    stats.tracked = len(counts.things)
    stats.state_bytes = counts.size
    return counts.state(), counts.violations


def alarmed_count(state: Any) -> int:
    """How many (subject, behaviour) violations a state records (for the end-of-window summary)."""
    things = state.get("t") if type(state) is dict else None
    if type(things) is not dict:
        return 0
    return sum(bin(entry[ALARMED]).count("1") for entry in things.values() if _valid_entry(entry))
