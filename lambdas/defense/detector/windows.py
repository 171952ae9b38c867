"""Per-device counts over one Lambda tumbling window of the device Kinesis stream (pure: no AWS).

IoT rules put three kinds of record on the stream, partition key = the thing / client id, so all
of a device's records land on one shard and Lambda's tumbling window (TumblingWindowInSeconds =
WINDOW_SECONDS) hands every batch of that shard's window the state the previous batch returned:

    telemetry  {"payload": "<base64>", "thing", "client_id", "principal", "received_at"}
               (the telemetry rule's envelope) -> messages +1, bytes += decoded payload length
    presence   {"kind": "presence", "event": "connected" | "disconnected", "client_id",
                "timestamp", "disconnect_reason"?} -> connects or disconnects +1
    metrics    {"kind": "metrics", "thing", "report": <Defender device-side report>}
               -> judged at once (detector/reports.py): any listening TCP/UDP port, or more than
               MAX_ESTABLISHED_TCP established connections, is a violation

Everything counts against the connection, not against what a record claims: telemetry whose
`thing` differs from its `client_id` counts against the client id (and is counted as spoofed);
a metrics record carrying a `client_id` counts against it the same way.

`fold(state, records, limits, window)` -> (new state, violations). It never mutates its inputs,
so a batch retried with the previous state (Lambda re-sends it on a retry) gives the same
result, the same violations with the same ids, and no double count. A device crossing a limit
gives ONE violation per behaviour per window, in the batch where it crosses; the state remembers
it (a bit per behaviour) so later batches of the window do not repeat it, and its violationId is
a hash of thing|profile|behaviour|window start (shared.violations.derive_violation_id), so a
republished duplicate is recognisable downstream.

State (returned to Lambda, at most 1 MB per shard), compact JSON:
    {"v": 1, "w": <window start, epoch s>, "n": <records seen this window>,
     "e": <things evicted this window>, "t": {"<client id>": [messages, bytes, connects,
                                                             disconnects, alarmed bitmask]}}
At most `limits.max_tracked` things (and about `limits.state_budget_bytes` of state) are kept per
shard: when full, the quarter with the least traffic relative to its limits is dropped (alarmed
things are kept first), counted in "e" and in FoldStats.evicted, and counting goes on for the
biggest. A state of another window (or version) is discarded: every window starts empty.

Malformed records (bad base64, JSON, kind, field types, an id that is not a thing name) are
counted by reason in FoldStats and skipped; nothing here raises for any record content.

The hot path (telemetry) is stdlib only; the violation builder (pydantic) is imported on the
first violation, so a healthy invocation never loads it.
"""

from __future__ import annotations

import binascii
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, NamedTuple

from defense.detector.reports import InvalidReport, parse_report
from defense.env_settings import read_limits

STATE_VERSION = 1
MAX_WINDOW_SECONDS = 900  # Lambda's tumbling-window maximum
ENTRY_OVERHEAD = 48  # state bytes per thing besides its id: quotes, brackets, separators, digits
MAX_INVALID_REPORTS_NOTED = 20

# An entry: [messages, bytes, connects, disconnects, alarmed bitmask]
MESSAGES, BYTES, CONNECTS, DISCONNECTS, ALARMED = range(5)

# The ids that may be counted and named in a violation: Defender's thing-name pattern.
THING_ID = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_safe_id = THING_ID.fullmatch


class Behavior(NamedTuple):
    bit: int  # in the entry's alarmed bitmask
    name: str  # behavior.name in the violation
    metric: str  # behavior.metric


MESSAGES_SENT = Behavior(1, "MessagesSent", "aws:num-messages-sent")
MESSAGE_BYTES = Behavior(2, "MessageBytes", "aws:message-byte-size")
CONNECTION_ATTEMPTS = Behavior(4, "ConnectionAttempts", "aws:num-connection-attempts")
DISCONNECTS_ = Behavior(8, "Disconnects", "aws:num-disconnects")
LISTENING_TCP_PORTS = Behavior(16, "ListeningTcpPorts", "aws:num-listening-tcp-ports")
LISTENING_UDP_PORTS = Behavior(32, "ListeningUdpPorts", "aws:num-listening-udp-ports")
ESTABLISHED_TCP = Behavior(64, "EstablishedTcpConnections", "aws:num-established-tcp-connections")
BEHAVIORS = (MESSAGES_SENT, MESSAGE_BYTES, CONNECTION_ATTEMPTS, DISCONNECTS_, LISTENING_TCP_PORTS,
             LISTENING_UDP_PORTS, ESTABLISHED_TCP)

# Malformed-record reasons: stable strings (metric dimensions depend on them).
BAD_RECORD = "bad-record"  # not a Kinesis record with string data
BAD_DATA = "bad-data"  # data is not base64 of UTF-8 JSON
NOT_OBJECT = "not-object"
UNKNOWN_KIND = "unknown-kind"
BAD_FIELDS = "bad-fields"  # a field is missing or of the wrong type / value
BAD_PAYLOAD = "bad-payload"  # telemetry payload is not a base64 string
UNSAFE_ID = "unsafe-id"  # the client id / thing is not a thing name: it cannot be named in a violation
MALFORMED_REASONS = (BAD_RECORD, BAD_DATA, NOT_OBJECT, UNKNOWN_KIND, BAD_FIELDS, BAD_PAYLOAD, UNSAFE_ID)


@dataclass(frozen=True)
class Limits:
    """Per device, per window; the defaults are the stage defaults in stacks/config.py."""

    max_messages: int = 600
    max_bytes: int = 5_242_880
    max_connects: int = 10
    max_disconnects: int = 10
    max_established_tcp: int = 10
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
    "WINDOW_SECONDS": ("window_seconds", 1, MAX_WINDOW_SECONDS),
    "MAX_TRACKED_THINGS": ("max_tracked", 10, 100_000),
}


def limits_from_env(env: Mapping[str, str] | None = None) -> tuple[Limits, list[str]]:
    """Limits from the environment (set by the stack) -> (limits, problems). A missing or invalid
    value keeps its default and is named in `problems` (the handler logs them): a typo must not
    stop detection for the whole fleet."""
    env = os.environ if env is None else env
    values, problems = read_limits(env, _ENV_LIMITS, optional=frozenset({"MAX_TRACKED_THINGS"}))
    return Limits(**values), problems


@dataclass
class FoldStats:
    """What one fold saw (for metrics and logs); fold adds to it."""

    records: int = 0
    telemetry: int = 0
    presence: int = 0
    reports: int = 0
    spoofed: int = 0
    reports_invalid: int = 0
    evicted: int = 0
    state_reset: int = 0  # a non-empty state of another window or version was discarded
    window_missing: int = 0  # the event had no usable window: the current aligned window was used
    tracked: int = 0  # things in the returned state
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
_derive_id: Callable[..., str] | None = None


def _builders() -> tuple[Callable[..., dict[str, Any]], Callable[..., str]]:
    """shared.violations, imported on the first violation (pydantic stays off the healthy path)."""
    global _make_violation, _derive_id
    if _make_violation is None:
        from shared.violations import derive_violation_id, make_violation

        _make_violation, _derive_id = make_violation, derive_violation_id
    return _make_violation, _derive_id  # type: ignore[return-value]


def build_violation(thing: str, behavior: Behavior, limit: int, observed: int, limits: Limits,
                    start: int, now_ms: int, *, windowed: bool) -> dict[str, Any]:
    """One violation message in Device Defender's SNS alert format, with its deterministic id."""
    make, derive = _builders()
    criteria: dict[str, Any] = {"comparisonOperator": "greater-than", "value": {"count": limit}}
    if windowed:
        criteria["durationSeconds"] = limits.window_seconds
    return make(
        thing=thing, profile=limits.profile, behavior_name=behavior.name, metric=behavior.metric,
        criteria=criteria, metric_value={"count": observed}, event_time_ms=now_ms,
        violation_id=derive(thing=thing, profile=limits.profile, behavior_name=behavior.name, window=start),
    )


def _valid_entry(entry: Any) -> bool:
    return (type(entry) is list and len(entry) == 5 and type(entry[0]) is int and type(entry[1]) is int
            and type(entry[2]) is int and type(entry[3]) is int and type(entry[4]) is int)


def _score(entry: Any, limits: Limits) -> tuple[int, float]:
    """How much an entry matters: alarmed first, then traffic relative to the nearest limit."""
    if not _valid_entry(entry):
        return (-1, 0.0)
    return (1 if entry[ALARMED] else 0,
            max(entry[MESSAGES] / limits.max_messages, entry[BYTES] / limits.max_bytes,
                entry[CONNECTS] / limits.max_connects, entry[DISCONNECTS] / limits.max_disconnects))


def _evict(things: dict[str, Any], touched: dict[str, list[int]], limits: Limits) -> int:
    """Drop the least important things until a quarter of the room is free; returns how many."""
    keep_count = max(1, limits.max_tracked * 3 // 4)
    keep_bytes = limits.state_budget_bytes * 3 // 4
    ranked = sorted(things.items(), key=lambda item: (_score(item[1], limits), item[0]), reverse=True)
    size = 0
    kept = 0
    for key, _entry in ranked:
        size += len(key) + ENTRY_OVERHEAD
        if kept >= keep_count or size > keep_bytes:
            break
        kept += 1
    dropped = ranked[kept:]
    for key, _entry in dropped:
        del things[key]
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


def _state_size(things: dict[str, Any]) -> int:
    return sum(map(len, things)) + ENTRY_OVERHEAD * len(things)


class _WindowCounts:
    """The window's per-device counts while one batch is folded in. The previous state is only
    read: an entry is copied on its first touch in the batch (then it is in `touched`), so the
    caller's state never changes and a retried batch starts from the same counts."""

    def __init__(self, state: Any, start: int, limits: Limits, now_ms: int, stats: FoldStats):
        self.start, self.limits, self.now_ms, self.stats = start, limits, now_ms, stats
        if (type(state) is dict and state.get("v") == STATE_VERSION and state.get("w") == start
                and type(state.get("t")) is dict):
            evicted, seen = state.get("e"), state.get("n")
            self.things: dict[str, Any] = dict(state["t"])
            self.evicted = evicted if type(evicted) is int else 0
            self.seen = seen if type(seen) is int else 0
        else:
            if state:
                stats.state_reset += 1
            self.things, self.evicted, self.seen = {}, 0, 0
        self.size = _state_size(self.things)
        self.touched: dict[str, list[int]] = {}
        self.violations: list[dict[str, Any]] = []

    def entry(self, key: Any) -> list[int]:
        """The writable entry of `key`; _Skipped(UNSAFE_ID) if key is not a thing name."""
        entry = self.touched.get(key) if type(key) is str else None
        return entry if entry is not None else self._first_touch(key)

    def _first_touch(self, key: Any) -> list[int]:
        if type(key) is not str or not _safe_id(key):
            raise _Skipped(UNSAFE_ID)
        old = self.things.get(key)
        if old is not None and _valid_entry(old):
            entry = old.copy()
        else:
            if old is None:
                self._make_room(key)
            entry = [0, 0, 0, 0, 0]
        self.things[key] = self.touched[key] = entry
        return entry

    def _make_room(self, key: str) -> None:
        """Account for a new thing, first evicting the least important ones if the state is full."""
        limits = self.limits
        if (len(self.things) >= limits.max_tracked
                or self.size + len(key) + ENTRY_OVERHEAD > limits.state_budget_bytes):
            dropped = _evict(self.things, self.touched, limits)
            self.evicted += dropped
            self.stats.evicted += dropped
            self.size = _state_size(self.things)
        self.size += len(key) + ENTRY_OVERHEAD

    def _alarm(self, key: str, entry: list[int], behavior: Behavior, limit: int, observed: int, *,
               windowed: bool) -> None:
        """A violation, unless this thing already had one for this behaviour in this window."""
        if not entry[ALARMED] & behavior.bit:
            entry[ALARMED] |= behavior.bit
            self.violations.append(build_violation(key, behavior, limit, observed, self.limits, self.start,
                                                   self.now_ms, windowed=windowed))

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

    def presence(self, doc: dict[str, Any]) -> None:
        event = doc.get("event")
        if event == "connected":
            slot = CONNECTS
        elif event == "disconnected":
            slot = DISCONNECTS
        else:
            raise _Skipped(BAD_FIELDS)
        self.entry(doc.get("client_id"))[slot] += 1
        self.stats.presence += 1

    def report(self, doc: dict[str, Any]) -> None:
        """A device-side metrics report, judged at once (its limits are not windowed)."""
        thing = doc.get("thing")
        client = doc.get("client_id", thing)
        if type(thing) is not str or type(client) is not str:
            raise _Skipped(BAD_FIELDS)
        entry = self.entry(client)
        stats = self.stats
        if thing != client:
            stats.spoofed += 1
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
        """Once per device touched in this batch: a limit is reported in the batch that crosses it."""
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
        return {"v": STATE_VERSION, "w": self.start, "n": self.seen, "e": self.evicted, "t": self.things}


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
            if kind is None or kind == "telemetry":  # the hot path
                counts.telemetry(doc)
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
    """How many (thing, behaviour) violations a state records (for the end-of-window summary)."""
    things = state.get("t") if type(state) is dict else None
    if type(things) is not dict:
        return 0
    return sum(bin(entry[ALARMED]).count("1") for entry in things.values() if _valid_entry(entry))
