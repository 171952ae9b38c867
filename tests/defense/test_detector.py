"""Built-in detector, pure part: fold over real-shaped Kinesis records (data = base64 of the JSON the
IoT rules put on the stream), report validation, settings. No AWS here: the detector has no
database, and publishing is the handler's (test_detector_handler.py).

Lifecycle events are built exactly as "Lifecycle events" shows them
(https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html: connect, disconnect
and "Connect attempt failure event" messages) and turned into the presence rules' output with the
rules' own field list (stacks/defense/builtin_detector.PRESENCE_FIELDS).
"""

from __future__ import annotations

import base64
import copy
import json

import pytest
from defense.detector.reports import InvalidReport, ReportCounts, parse_report
from defense.detector.windows import (
    BAD_DATA,
    BAD_FIELDS,
    BAD_PAYLOAD,
    BAD_RECORD,
    NOT_OBJECT,
    UNKNOWN_KIND,
    UNSAFE_ID,
    FoldStats,
    Limits,
    alarmed_count,
    fold,
    limits_from_env,
    window_start,
)
from shared.violations import Violation, derive_violation_id, parse_violation, violation_json

from stacks.defense.builtin_detector import PRESENCE_FIELDS

PROFILE = "fleetwarden-test-builtin"
WINDOW = {"start": "2024-03-05T07:05:00Z", "end": "2024-03-05T07:10:00Z"}
NEXT_WINDOW = {"start": "2024-03-05T07:10:00Z", "end": "2024-03-05T07:15:00Z"}
WINDOW_START = 1_709_622_300  # 2024-03-05T07:05:00Z
NOW_MS = 1_709_622_345_678
LIMITS = Limits(max_messages=100, max_bytes=50_000, max_connects=5, max_disconnects=5, max_established_tcp=3,
                window_seconds=300, profile=PROFILE)
SHARD = "shardId-000000000000"
PAYLOAD = json.dumps({"ts": 1_709_622_301, "seq": 1, "metrics": {"temperature_c": 21.5}}).encode()  # 61 bytes

_sequence = iter(range(10**9))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def kinesis_record(doc: dict | bytes | str, partition_key: str = "sensor-0001") -> dict:
    """One record as Lambda delivers it from Kinesis: data = base64 of the rule's JSON output
    (bytes / str: used as given)."""
    if isinstance(doc, dict):
        data = b64(json.dumps(doc).encode())
    elif isinstance(doc, bytes):
        data = b64(doc)
    else:
        data = doc
    seq = next(_sequence)
    sequence_number = f"4959033827149025660855969253836157109592157598913{seq:08d}"
    return {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": partition_key,
                    "sequenceNumber": sequence_number, "data": data,
                    "approximateArrivalTimestamp": 1_709_622_301.123},
        "eventSource": "aws:kinesis", "eventVersion": "1.0",
        "eventID": f"{SHARD}:{sequence_number}", "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/fleetwarden-test-detector",
        "awsRegion": "eu-west-1",
        "eventSourceARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/fleetwarden-test-observations",
    }


def telemetry(thing: str, payload: bytes = PAYLOAD, *, client_id: str | None = None) -> dict:
    """The telemetry rule's envelope (the same SQL as the Firehose path), as a Kinesis record."""
    client = thing if client_id is None else client_id
    return kinesis_record({"payload": b64(payload), "thing": thing, "client_id": client,
                           "principal": "a1" * 32, "received_at": 1_709_622_301_000}, client)


CERT_A = "a1" * 32  # certificate ids: 64 hex characters
CERT_CLAIM = "c1a1" * 16
_event_number = iter(range(1, 10**9))


def lifecycle_event(client_id: str, event_type: str, *, principal: str = CERT_A,
                    n: int | None = None) -> dict:
    """A lifecycle event as IoT publishes it on $aws/events/presence/<event_type>/<client_id>; each
    call is a new event (its own session, version and time) unless `n` repeats one."""
    n = next(_event_number) if n is None else n
    event = {"clientId": client_id, "timestamp": 1_709_622_301_000 + n, "eventType": event_type,
             "sessionIdentifier": f"00000000-0000-0000-0000-{n:012d}", "principalIdentifier": principal}
    if event_type == "connected":
        event |= {"ipAddress": "192.0.2.0", "versionNumber": n}
    elif event_type == "disconnected":
        event |= {"clientInitiatedDisconnect": False, "disconnectReason": "CONNECTION_LOST",
                  "versionNumber": n}
    else:  # connect_failed: no versionNumber
        event |= {"connectFailureReason": "AUTHORIZATION_FAILED", "ipAddress": "192.0.2.0"}
    return event


def presence_record(event: dict) -> dict:
    """What the presence rules put on the stream for `event` (a field the event lacks is left out);
    keyed as those rules key it: the client id, or the certificate for a refused connection."""
    doc = {"kind": "presence"}
    doc |= {name: event[field] for field, name in PRESENCE_FIELDS.items() if field in event}
    key = event["principalIdentifier"] if event["eventType"] == "connect_failed" else event["clientId"]
    return kinesis_record(doc, key)


def presence(client_id: str, event: str, **kwargs) -> dict:
    return presence_record(lifecycle_event(client_id, event, **kwargs))


def message(client_id: str) -> dict:
    """A shadow request as the detector's shadow count rule forwards it."""
    return kinesis_record({"kind": "message", "client_id": client_id}, client_id)


def alert(client_id: str, size: int = 200) -> dict:
    """An alert of `size` bytes as the alert count rule forwards it: the length of the payload's
    base64 (length(encode(*, 'base64')), builtin_detector.ALERT_SQL), never the payload."""
    return kinesis_record({"kind": "alert", "client_id": client_id,
                           "b64_length": len(base64.b64encode(b"a" * size))}, client_id)


def report(*, tcp_ports=(), udp_ports=(), established=0, short=False) -> dict:
    """A Device Defender device-side metrics report (long names, or the short ones)."""
    doc = {
        "header": {"report_id": 1_709_622_301, "version": "1.0"},
        "metrics": {
            "listening_tcp_ports": {"ports": [{"interface": "eth0", "port": p} for p in tcp_ports],
                                    "total": len(tcp_ports)},
            "listening_udp_ports": {"ports": [{"interface": "eth0", "port": p} for p in udp_ports],
                                    "total": len(udp_ports)},
            "network_stats": {"bytes_in": 29358693495, "bytes_out": 26485035, "packets_in": 10013573555,
                              "packets_out": 11382615},
            "tcp_connections": {"established_connections": {
                "connections": [{"local_interface": "eth0", "local_port": 40000 + i,
                                 "remote_addr": f"192.168.0.{i + 1}:8883"} for i in range(established)],
                "total": established}},
        },
    }
    return shorten(doc) if short else doc


SHORT = {"header": "hed", "report_id": "rid", "version": "v", "metrics": "met", "listening_tcp_ports": "tp",
         "listening_udp_ports": "up", "ports": "pts", "port": "pt", "interface": "if", "total": "t",
         "network_stats": "ns", "bytes_in": "bi", "bytes_out": "bo", "packets_in": "pi", "packets_out": "po",
         "tcp_connections": "tc", "established_connections": "ec", "connections": "cs", "remote_addr": "rad",
         "local_port": "lp", "local_interface": "li", "custom_metrics": "cmet"}


def shorten(value):
    if isinstance(value, dict):
        return {SHORT.get(k, k): shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten(v) for v in value]
    return value


def metrics_record(thing: str, doc, *, client_id: str | None = None) -> dict:
    """A report as the metrics rule forwards it: thing = topic(2), client_id = clientid()."""
    client = thing if client_id is None else client_id
    return kinesis_record({"kind": "metrics", "thing": thing, "client_id": client, "report": doc}, client)


def run(batches: list[list[dict]], *, state=None, window=WINDOW, limits=LIMITS, stats=None):
    """Fold batch after batch, carrying the returned state like Lambda does; every violation."""
    state = {} if state is None else state
    violations = []
    for batch in batches:
        state, new = fold(state, batch, limits, window, now_ms=NOW_MS, stats=stats)
        violations.extend(new)
    return state, violations


def assert_defender_format(violation: dict) -> Violation:
    """Valid for the shared model, and unchanged through the JSON an SNS message carries."""
    parsed = parse_violation(violation_json(violation))
    assert parsed.model_dump(exclude_none=True) == violation
    return Violation.model_validate(violation)


def behaviors(violations) -> list[tuple[str, str]]:
    """(subject, behaviour) of each violation; a certificate's subject is "@<id>"."""
    return [(v.get("thingName") or "@" + v["certificateId"], v["behavior"]["name"]) for v in violations]


# ---- floods --------------------------------------------------------------------------------------


def test_a_flood_in_one_batch_gives_exactly_one_violation_in_defender_format():
    batch = [telemetry("sensor-0001") for _ in range(150)] + [telemetry("sensor-0002") for _ in range(20)]
    state, violations = run([batch])
    assert len(violations) == 1
    violation = violations[0]
    assert_defender_format(violation)
    assert violation == {
        "attribution": "proven",  # the built-in detector always says how it attributed it
        "violationId": derive_violation_id(thing="sensor-0001", profile=PROFILE, behavior_name="MessagesSent",
                                           window=WINDOW_START),
        "thingName": "sensor-0001",
        "securityProfileName": PROFILE,
        "behavior": {"name": "MessagesSent", "metric": "aws:num-messages-sent",
                     "criteria": {"comparisonOperator": "greater-than", "value": {"count": 100},
                                  "durationSeconds": 300}},
        "metricValue": {"count": 150},
        "violationEventType": "in-alarm",
        "violationEventTime": NOW_MS,
    }
    assert state["t"]["sensor-0001"][:4] == [150, 150 * len(PAYLOAD), 0, 0]
    assert state["t"]["sensor-0002"] == [20, 20 * len(PAYLOAD), 0, 0, 0, 0]


def test_the_same_flood_spread_over_many_batches_gives_exactly_one_violation():
    # 150 messages, 5 per batch, among healthy neighbours: the limit (100) is crossed in batch 21.
    neighbours = [telemetry(f"sensor-1{i:03d}") for i in range(20)]
    batches = [[telemetry("sensor-0001") for _ in range(5)] + neighbours for _ in range(30)]
    state = {}
    found = []
    for index, batch in enumerate(batches):
        state, violations = fold(state, batch, LIMITS, WINDOW, now_ms=NOW_MS)
        found.extend((index, v) for v in violations)
    assert [(i, v["thingName"], v["behavior"]["name"]) for i, v in found] == [
        (20, "sensor-0001", "MessagesSent")]
    assert found[0][1]["metricValue"] == {"count": 105}
    assert state["t"]["sensor-0001"][0] == 150
    assert state["n"] == 30 * 25


def test_byte_volume_spread_over_batches_gives_one_violation():
    big = b"x" * 4000
    batches = [[telemetry("sensor-0003", big)] * 2 for _ in range(10)]  # 80,000 bytes in 20 messages
    _, violations = run(batches)
    assert behaviors(violations) == [("sensor-0003", "MessageBytes")]
    assert violations[0]["behavior"]["metric"] == "fleetwarden:bytes-per-window"
    assert violations[0]["metricValue"] == {"count": 56_000}  # 48,000 after batch 6, over 50,000 in batch 7
    assert_defender_format(violations[0])


@pytest.mark.parametrize("size", range(0, 13))
def test_bytes_are_the_decoded_payload_length(size):
    state, _ = run([[telemetry("sensor-0001", bytes(range(size)))]])
    assert state["t"]["sensor-0001"][1] == size


def test_healthy_traffic_from_many_devices_over_many_batches_gives_no_violation():
    stats = FoldStats()
    batches = [[telemetry(f"sensor-{(b * 500 + i) % 1000:04d}") for i in range(500)] for b in range(40)]
    batches.append([presence(f"sensor-{i:04d}", "connected") for i in range(1000)])
    batches.append([metrics_record(f"sensor-{i:04d}", report(established=2)) for i in range(1000)])
    state, violations = run(batches, stats=stats)
    assert violations == []
    assert len(state["t"]) == 1000
    # 20 telemetry messages and one report each; one connect
    assert all(entry[0] == 21 and entry[2] == 1 and entry[4] == 0 for entry in state["t"].values())
    assert stats.records == 22_000 and stats.malformed == {} and stats.evicted == 0


def test_at_the_limit_is_not_over_it():
    connects = [presence("sensor-0001", "connected") for _ in range(5)]
    _, violations = run([[telemetry("sensor-0001")] * 100, connects])
    assert violations == []
    _, violations = run([[telemetry("sensor-0001")] * 101])
    assert behaviors(violations) == [("sensor-0001", "MessagesSent")]


# ---- retries, purity, windows -----------------------------------------------------------------------


def test_a_retried_batch_with_the_previous_state_gives_the_same_result_and_no_double_count():
    first = [telemetry("sensor-0001") for _ in range(60)]
    state1, _ = fold({}, first, LIMITS, WINDOW, now_ms=NOW_MS)
    snapshot = copy.deepcopy(state1)
    second = ([telemetry("sensor-0001") for _ in range(60)]
              + [presence("sensor-0002", "connected") for _ in range(6)])
    state2, violations = fold(state1, second, LIMITS, WINDOW, now_ms=NOW_MS)
    # Lambda retries the batch with the state it had sent: the same answer, nothing counted twice.
    retried_state, retried = fold(state1, second, LIMITS, WINDOW, now_ms=NOW_MS)
    assert state1 == snapshot  # inputs are never modified
    assert retried_state == state2 and retried == violations
    assert state2["t"]["sensor-0001"][0] == 120
    assert behaviors(violations) == [("sensor-0001", "MessagesSent"), ("sensor-0002", "ConnectionAttempts")]
    # Through JSON (as Lambda carries it) too.
    assert fold(json.loads(json.dumps(state1)), second, LIMITS, WINDOW, now_ms=NOW_MS) == (state2, violations)


def test_a_new_window_starts_empty_and_previous_counts_do_not_carry_over():
    state, violations = run([[telemetry("sensor-0001")] * 90])
    assert violations == []
    stats = FoldStats()
    # Lambda starts each window with {}; a stale state of another window is discarded anyway.
    for carried in ({}, state):
        new_state, violations = fold(carried, [telemetry("sensor-0001")] * 90, LIMITS, NEXT_WINDOW,
                                     now_ms=NOW_MS, stats=stats)
        assert violations == []
        assert new_state["t"] == {"sensor-0001": [90, 90 * len(PAYLOAD), 0, 0, 0, 0]}
        assert new_state["w"] == WINDOW_START + 300 and new_state["n"] == 90
    assert stats.state_reset == 1


def test_an_alarm_is_once_per_window_and_again_in_the_next():
    state, first = run([[telemetry("sensor-0001")] * 101, [telemetry("sensor-0001")] * 50])
    assert len(first) == 1 and alarmed_count(state) == 1
    _, second = run([[telemetry("sensor-0001")] * 101], window=NEXT_WINDOW)
    assert len(second) == 1
    assert second[0]["violationId"] != first[0]["violationId"]
    assert second[0]["violationId"] == derive_violation_id(
        thing="sensor-0001", profile=PROFILE, behavior_name="MessagesSent", window=WINDOW_START + 300)


def test_window_start_parsing():
    assert window_start(WINDOW) == WINDOW_START
    assert window_start({"start": "2024-03-05T07:05:00+00:00"}) == WINDOW_START
    for bad in (None, {}, {"start": 5}, {"start": "yesterday"}, {"start": "2024-03-05T07:05:00"}, []):
        assert window_start(bad) is None


def test_without_a_window_the_current_aligned_window_is_used():
    stats = FoldStats()
    state, _ = fold({}, [telemetry("sensor-0001")], LIMITS, None, now_ms=NOW_MS, stats=stats)
    assert state["w"] == WINDOW_START and stats.window_missing == 1


# ---- connections, reports, spoofing ------------------------------------------------------------------


def test_a_connect_and_disconnect_storm_gives_violations():
    batches = [[presence("sensor-0009", "connected"), presence("sensor-0009", "disconnected")]
               for _ in range(8)]
    state, violations = run(batches)
    assert sorted(behaviors(violations)) == [("sensor-0009", "ConnectionAttempts"),
                                             ("sensor-0009", "Disconnects")]
    by_name = {v["behavior"]["name"]: v for v in violations}
    assert by_name["ConnectionAttempts"]["behavior"]["metric"] == "aws:num-connection-attempts"
    assert by_name["Disconnects"]["behavior"]["metric"] == "aws:num-disconnects"
    assert by_name["ConnectionAttempts"]["metricValue"] == {"count": 6}
    for v in violations:
        assert_defender_format(v)
    assert state["t"]["sensor-0009"][2:4] == [8, 8]


def test_a_listening_tcp_port_is_a_violation_at_once():
    state, violations = run([[metrics_record("sensor-0005", report(tcp_ports=(22, 8080)))]])
    assert behaviors(violations) == [("sensor-0005", "ListeningTcpPorts")]
    violation = violations[0]
    assert_defender_format(violation)
    assert violation["behavior"] == {
        "name": "ListeningTcpPorts", "metric": "aws:num-listening-tcp-ports",
        "criteria": {"comparisonOperator": "greater-than", "value": {"count": 0}}}
    assert violation["metricValue"] == {"count": 2}
    # The next report in the same window does not repeat it.
    _, again = run([[metrics_record("sensor-0005", report(tcp_ports=(22,)))]], state=state)
    assert again == []


def test_udp_ports_and_too_many_established_connections_are_violations():
    record = metrics_record("sensor-0006", report(udp_ports=(5353,), established=4, short=True))
    _, violations = run([[record]])
    assert sorted(behaviors(violations)) == [("sensor-0006", "EstablishedTcpConnections"),
                                             ("sensor-0006", "ListeningUdpPorts")]
    established = next(v for v in violations if v["behavior"]["name"] == "EstablishedTcpConnections")
    assert established["behavior"]["metric"] == "aws:num-established-tcp-connections"
    assert established["behavior"]["criteria"]["value"] == {"count": 3}
    assert established["metricValue"] == {"count": 4}


@pytest.mark.parametrize("short", [False, True])
def test_a_valid_report_without_ports_gives_no_violation(short):
    stats = FoldStats()
    _, violations = run([[metrics_record("sensor-0007", report(established=3, short=short))]], stats=stats)
    assert violations == [] and stats.reports == 1 and stats.reports_invalid == 0


INVALID_REPORTS = [
    None, [], "report", {}, {"header": {"report_id": 1, "version": "1.0"}},  # neither metrics block
    {"hed": {"rid": 1, "v": "1.0"}},
    {"header": {"report_id": -1, "version": "1.0"}, "metrics": {}},
    {"header": {"report_id": 1, "version": "2.0"}, "metrics": {}},
    {"header": {"report_id": True, "version": "1.0"}, "metrics": {}},
    {"header": {"report_id": 1.5, "version": "1.0"}, "metrics": {}},
    {"header": {"version": "1.0"}, "metrics": {}},
    {"header": {"report_id": 1, "version": "1.0"},
     "metrics": {"listening_tcp_ports": {"ports": [{"port": 70000}]}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"listening_tcp_ports": {"ports": [{}]}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"listening_tcp_ports": {"ports": "22"}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"listening_udp_ports": {"total": "1"}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"network_stats": {"bytes_in": -5}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"tcp_connections": {
        "established_connections": {"connections": [{"local_port": 1}]}}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {"surprise": {}}},
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {}, "extra": 1},
    {"header": {"report_id": 1, "version": "1.0"}, "met": {}},  # mixed key styles
    {"hed": {"rid": 1, "v": "1.0"}, "met": {"tp": {"ports": [{"pt": 22}]}}},  # long key in a short report
    {"header": {"report_id": 1, "version": "1.0"}, "metrics": {}, "custom_metrics": []},
]


def test_invalid_reports_are_counted_and_never_crash():
    stats = FoldStats()
    batch = [metrics_record("sensor-0008", doc) for doc in INVALID_REPORTS]
    batch.append(metrics_record("sensor-0008", report(tcp_ports=(22,))))  # a valid one still counts
    _, violations = run([batch], stats=stats)
    assert stats.reports == len(INVALID_REPORTS) + 1
    assert stats.reports_invalid == len(INVALID_REPORTS)
    assert behaviors(violations) == [("sensor-0008", "ListeningTcpPorts")]
    assert stats.invalid_reports[0] == ("sensor-0008", "report is not an object")
    assert len(stats.invalid_reports) == min(20, len(INVALID_REPORTS))


@pytest.mark.parametrize("doc", INVALID_REPORTS)
def test_parse_report_refuses(doc):
    with pytest.raises(InvalidReport) as err:
        parse_report(doc)
    assert err.value.reason and len(err.value.reason) < 120


def test_parse_report_counts():
    assert parse_report(report(tcp_ports=(1, 2), udp_ports=(3,), established=2)) == ReportCounts(2, 1, 2)
    assert parse_report(report(short=True)) == ReportCounts(0, 0, 0)
    # total cannot hide listed ports, nor the list hide the total
    doc = {"header": {"report_id": 1, "version": "1.0"},
           "metrics": {"listening_tcp_ports": {"ports": [{"port": 22}], "total": 0},
                       "listening_udp_ports": {"total": 4}}}
    assert parse_report(doc) == ReportCounts(1, 4, None)
    minimal = {"hed": {"rid": 0, "v": "1.0"}, "met": {}, "cmet": {"cpu": [{"number": 1}]}}
    assert parse_report(minimal) == ReportCounts(None, None, None)


def test_spoofed_telemetry_counts_against_the_client_id():
    stats = FoldStats()
    batch = [telemetry("victim-0001", client_id="attacker-01") for _ in range(101)]
    state, violations = run([batch], stats=stats)
    assert behaviors(violations) == [("attacker-01", "MessagesSent")]
    assert "victim-0001" not in state["t"] and stats.spoofed == 101


def test_a_report_naming_another_thing_counts_against_its_client_id():
    record = kinesis_record({"kind": "metrics", "thing": "victim-0001", "client_id": "attacker-01",
                             "report": report(tcp_ports=(22,))})
    _, violations = run([[record]])
    assert behaviors(violations) == [("attacker-01", "ListeningTcpPorts")]


# ---- every message counts (alerts, shadow requests, reports) --------------------------------------------


def test_alerts_shadow_requests_and_reports_count_toward_the_message_limit():
    stats = FoldStats()
    batch = ([telemetry("sensor-0001") for _ in range(50)] + [message("sensor-0001") for _ in range(45)]
             + [metrics_record("sensor-0001", report()) for _ in range(5)])
    state, violations = run([batch], stats=stats)
    assert violations == [] and state["t"]["sensor-0001"][0] == 100  # at the limit, not over it
    _, violations = run([[message("sensor-0001")]], state=state)
    assert behaviors(violations) == [("sensor-0001", "MessagesSent")]
    assert stats.messages == 45 and stats.reports == 5


def test_an_alert_flood_alone_is_seen():
    _, violations = run([[message("sensor-0002") for _ in range(101)]])
    assert behaviors(violations) == [("sensor-0002", "MessagesSent")]
    assert violations[0]["metricValue"] == {"count": 101}


# ---- lifecycle events: duplicates, order, refused connections ---------------------------------------


def flaky_link(client_id: str, reconnects: int) -> list[dict]:
    """A device on a flaky link: `reconnects` sessions, each connected then lost."""
    events = []
    for _ in range(reconnects):
        n = next(_event_number)
        events += [lifecycle_event(client_id, "connected", n=n),
                   lifecycle_event(client_id, "disconnected", n=n)]
    return events


def test_a_duplicated_and_reordered_presence_stream_within_limits_contains_nothing():
    """Lifecycle messages "might be sent out of order" and "You might receive duplicate
    messages" (life-cycle-events.html): each one counts once, whatever the order."""
    events = flaky_link("sensor-0003", LIMITS.max_connects)  # exactly at both limits
    delivered = [presence_record(e) for e in events] + [presence_record(e) for e in reversed(events)]
    stats = FoldStats()
    state, violations = run([delivered[:7], delivered[7:13], delivered[13:]], stats=stats)
    assert violations == []
    assert state["t"]["sensor-0003"][2:4] == [5, 5]
    assert stats.duplicates == 10 and stats.presence == 10
    # Through JSON and a retry of the last batch: still once each.
    again, violations = fold(json.loads(json.dumps(state)), delivered[13:], LIMITS, WINDOW, now_ms=NOW_MS)
    assert violations == [] and again["t"]["sensor-0003"][2:4] == [5, 5]


def test_distinct_events_beyond_the_limit_still_alarm_and_their_fingerprints_stay_bounded():
    events = flaky_link("sensor-0004", 200)
    state, violations = run([[presence_record(e) for e in events]])
    assert sorted(behaviors(violations)) == [("sensor-0004", "ConnectionAttempts"),
                                             ("sensor-0004", "Disconnects")]
    assert state["t"]["sensor-0004"][2:4] == [200, 200]
    # Only the events within the limits are remembered (beyond them the alarm is raised already).
    assert len(state["p"]["sensor-0004"]) == LIMITS.max_connects + LIMITS.max_disconnects


def test_the_previous_states_fingerprints_are_never_modified():
    first = [presence("sensor-0005", "connected")]
    state1, _ = fold({}, first, LIMITS, WINDOW, now_ms=NOW_MS)
    snapshot = copy.deepcopy(state1)
    state2, _ = fold(state1, [presence("sensor-0005", "connected"), first[0]], LIMITS, WINDOW, now_ms=NOW_MS)
    assert state1 == snapshot
    assert state2["t"]["sensor-0005"][2] == 2 and len(state2["p"]["sensor-0005"]) == 2


def test_refused_connections_under_another_devices_client_id_blame_the_certificate():
    """50 refused Connects under SN-B's client id from SN-A's certificate and from the claim
    certificate: certificate violations carrying the claimed client id; SN-B is not counted."""
    stats = FoldStats()
    batch = ([presence("SN-B", "connect_failed", principal=CERT_A) for _ in range(50)]
             + [presence("SN-B", "connect_failed", principal=CERT_CLAIM) for _ in range(50)])
    state, violations = run([batch[:30], batch[30:]], stats=stats)
    assert sorted(behaviors(violations)) == sorted(
        [("@" + cert, name) for cert in (CERT_A, CERT_CLAIM)
         for name in ("AuthorizationFailures", "ConnectionAttempts")])
    for violation in violations:
        assert_defender_format(violation)
        assert violation["clientId"] == "SN-B" and "thingName" not in violation
    by_name = {(v["certificateId"], v["behavior"]["name"]): v for v in violations}
    failures = by_name[(CERT_A, "AuthorizationFailures")]
    assert failures["behavior"]["metric"] == "aws:num-authorization-failures"
    assert failures["metricValue"] == {"count": LIMITS.max_auth_failures + 1}
    assert failures["violationId"] == derive_violation_id(
        certificate_id=CERT_A, profile=PROFILE, behavior_name="AuthorizationFailures", window=WINDOW_START)
    assert "SN-B" not in state["t"]
    assert state["t"]["@" + CERT_A][2] == 50 and state["t"]["@" + CERT_A][5] == 50  # attempts, failures
    assert stats.connect_failed == 100


def test_a_refused_connection_from_a_principal_that_is_no_certificate_names_nothing():
    """The docs' own example carries a 32-digit placeholder, not a certificate id (64 hex): like
    IAM credentials, nothing a violation could name. Counted as unattributed."""
    example = {"clientId": "186b5", "thingName": "exampleThing", "timestamp": 1460065214626,
               "eventType": "connect_failed", "connectFailureReason": "AUTHORIZATION_FAILED",
               "principalIdentifier": "12345678901234567890123456789012",
               "sessionIdentifier": "00000000-0000-0000-0000-000000000000", "ipAddress": "192.0.2.0"}
    stats = FoldStats()
    state, violations = run([[presence_record(example)] * 20], stats=stats)
    assert violations == [] and state["t"] == {} and stats.unattributed == 20 and stats.malformed == {}


def test_a_claim_connection_counts_against_its_certificate_not_a_thing():
    batch = [presence("claim-0f3a9c", "connected", principal=CERT_CLAIM) for _ in range(6)]
    state, violations = run([batch])
    assert behaviors(violations) == [("@" + CERT_CLAIM, "ConnectionAttempts")]
    assert "clientId" not in violations[0] and "claim-0f3a9c" not in state["t"]


def test_presence_records_without_a_session_are_counted_as_they_come():
    """Not IoT's shape (every lifecycle event has a sessionIdentifier): nothing to recognise a
    duplicate by, so each counts."""
    doc = {"kind": "presence", "event": "connected", "client_id": "sensor-0006", "timestamp": 1}
    state, violations = run([[kinesis_record(doc)] * 6])
    assert behaviors(violations) == [("sensor-0006", "ConnectionAttempts")]


# ---- malformed records, caps, settings ---------------------------------------------------------------


def test_malformed_records_are_counted_by_reason_and_skipped():
    good = telemetry("sensor-0001")
    bad = [
        ({"kinesis": {}}, BAD_RECORD), ({}, BAD_RECORD), ("not a record", BAD_RECORD),
        ({"kinesis": {"data": 12}}, BAD_RECORD),
        (kinesis_record("%%%not base64%%%"), BAD_DATA), (kinesis_record(b"\xff\xfe{"), BAD_DATA),
        (kinesis_record(b"{not json"), BAD_DATA), (kinesis_record(b"[1, 2]"), NOT_OBJECT),
        (kinesis_record({"kind": "shadow"}), UNKNOWN_KIND),
        (kinesis_record({"payload": 5, "thing": "a", "client_id": "a"}), BAD_FIELDS),
        (kinesis_record({"payload": "abc", "thing": "a", "client_id": "a"}), BAD_PAYLOAD),
        (kinesis_record({"payload": "", "thing": "a/b", "client_id": "a/b"}), UNSAFE_ID),
        (kinesis_record({"kind": "presence", "event": "reconnected", "client_id": "a"}), BAD_FIELDS),
        (kinesis_record({"kind": "presence", "event": "connected", "client_id": ["a"]}), UNSAFE_ID),
        (kinesis_record({"kind": "presence", "event": "connected", "client_id": "x" * 129}), UNSAFE_ID),
        (kinesis_record({"kind": "message", "client_id": "claim-0f3a9c"}), UNSAFE_ID),  # a claim is no thing
        (kinesis_record({"kind": "metrics", "thing": None, "report": {}}), BAD_FIELDS),
        (kinesis_record(b"[" * 100_000), BAD_DATA),
    ]
    stats = FoldStats()
    state, violations = fold({}, [good] + [record for record, _ in bad] + [good], LIMITS, WINDOW, stats=stats)
    assert violations == []
    expected: dict[str, int] = {}
    for _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert stats.malformed == expected
    assert stats.records == len(bad) + 2 and stats.telemetry == 2
    assert state["t"] == {"sensor-0001": [2, 2 * len(PAYLOAD), 0, 0, 0, 0]}


def test_records_that_are_not_a_list_count_as_none():
    state, violations = fold({}, None, LIMITS, WINDOW)
    assert violations == [] and state["t"] == {} and state["n"] == 0


def test_over_the_tracking_cap_the_least_active_are_dropped_and_the_flooder_still_alarms():
    limits = Limits(max_messages=100, max_bytes=10**9, max_connects=5, max_disconnects=5,
                    max_established_tcp=3, profile=PROFILE, max_tracked=20)
    stats = FoldStats()
    batches = [[telemetry("flooder-01")] * 10 + [telemetry(f"sensor-{b:02d}-{i:02d}") for i in range(15)]
               for b in range(11)]
    state, violations = run(batches, limits=limits, stats=stats)
    assert behaviors(violations) == [("flooder-01", "MessagesSent")]
    assert len(state["t"]) <= 20
    assert state["t"]["flooder-01"][0] == 110
    assert stats.evicted > 0 and state["e"] == stats.evicted


def test_the_state_stays_under_one_megabyte_with_long_names():
    stats = FoldStats()
    batches = [[telemetry(f"{'x' * 118}-{b:03d}{i:04d}", b"p" * 300) for i in range(1000)] for b in range(12)]
    state, _ = run(batches, limits=Limits(profile=PROFILE), stats=stats)
    size = len(json.dumps({"state": state, "batchItemFailures": []}))  # with the default separators
    assert size < 1_000_000, size
    assert stats.evicted > 0 and stats.state_bytes >= size * 0.8


def test_the_state_stays_under_one_megabyte_when_the_whole_fleet_reconnects():
    """Fingerprints count toward the state budget: 9,000 devices sending telemetry (within the
    budget), then each reconnecting three times (six lifecycle events each), stay within 1 MB."""
    stats = FoldStats()
    names = [f"SN-{i:05d}" for i in range(9_000)]
    batches = [[telemetry(name) for name in names[b:b + 1000]] for b in range(0, 9_000, 1000)]
    batches += [[presence_record(e) for name in names[b:b + 250] for e in flaky_link(name, 3)]
                for b in range(0, 9_000, 250)]
    state, violations = run(batches, limits=Limits(profile=PROFILE), stats=stats)
    size = len(json.dumps({"state": state, "batchItemFailures": []}))
    assert violations == [] and size < 1_000_000, size
    assert stats.evicted > 0 and stats.state_bytes >= size * 0.8


def test_limits_from_env():
    env = {"MAX_MESSAGES": "600", "MAX_BYTES": "5242880", "MAX_CONNECTS": "10", "MAX_DISCONNECTS": "11",
           "MAX_ESTABLISHED_TCP": "12", "WINDOW_SECONDS": "900", "PROFILE_NAME": "fleetwarden-dev-builtin",
           "MAX_TRACKED_THINGS": "2000"}
    limits, problems = limits_from_env(env)
    assert problems == []
    assert limits == Limits(max_messages=600, max_bytes=5_242_880, max_connects=10, max_disconnects=11,
                            max_established_tcp=12, window_seconds=900, profile="fleetwarden-dev-builtin",
                            max_tracked=2000)
    assert limits_from_env({**env, "MAX_AUTH_FAILURES": "3"})[0].max_auth_failures == 3
    limits, problems = limits_from_env({**env, "MAX_MESSAGES": "lots", "WINDOW_SECONDS": "901",
                                        "PROFILE_NAME": "bad name"})
    assert limits.max_messages == Limits.max_messages and limits.window_seconds == Limits.window_seconds
    assert limits.profile == Limits.profile and len(problems) == 3
    _, problems = limits_from_env({})
    assert len(problems) == 7  # every required setting, not the optional cap


# --- one message's size, per kind of topic (issue 9, point 6) -----------------------------------
# "Message size (aws:message-byte-size): The number of bytes in a message ... of each message
# transmitted from a device" ("Cloud-side metrics",
# https://docs.aws.amazon.com/iot-device-defender/latest/devguide/detect-cloud-side-metrics.html): judged
# per message, with one limit per kind of topic as the Defender profile's TOPIC_FILTER dimensions.

SIZE_LIMITS = Limits(max_messages=100, max_bytes=10_000_000, max_connects=5, max_disconnects=5,
                     max_telemetry_bytes=8192, max_alert_bytes=131_072, window_seconds=300, profile=PROFILE)


def test_a_100_kib_alert_is_within_the_alert_limit_and_raises_nothing():
    state, violations = fold({}, [alert("sensor-0001", 100 * 1024)], SIZE_LIMITS, WINDOW, now_ms=NOW_MS)
    assert violations == []
    messages, nbytes = state["t"]["sensor-0001"][:2]
    assert messages == 1 and 100 * 1024 - 2 <= nbytes <= 100 * 1024  # its size, never over


def test_the_same_100_kib_on_the_telemetry_topic_is_one_telemetry_size_violation():
    records = [telemetry("sensor-0001", b"x" * 100 * 1024)] * 3
    _, violations = fold({}, records, SIZE_LIMITS, WINDOW, now_ms=NOW_MS)
    assert behaviors(violations) == [("sensor-0001", "TelemetryMessageByteSize")]
    assert violations[0]["behavior"]["metric"] == "aws:message-byte-size"
    assert violations[0]["behavior"]["criteria"] == {"comparisonOperator": "greater-than",
                                                     "value": {"count": 8192}}
    assert violations[0]["metricValue"] == {"count": 100 * 1024}
    assert_defender_format(violations[0])


@pytest.mark.parametrize("size, violated", [(131_072, False), (131_073, False), (131_075, True)])
def test_an_alert_over_the_alert_limit_is_an_alert_size_violation(size, violated):
    """The size is the least its base64 length allows (up to 2 bytes under), so an alert at the
    limit is never taken for one over it: 1-2 bytes over may pass, nothing within is contained."""
    _, violations = fold({}, [alert("sensor-0002", size)], SIZE_LIMITS, WINDOW, now_ms=NOW_MS)
    assert behaviors(violations) == ([("sensor-0002", "AlertMessageByteSize")] if violated else [])


def test_alerts_count_toward_the_message_limit_and_the_window_bytes():
    _, violations = fold({}, [alert("sensor-0003", 64) for _ in range(101)], SIZE_LIMITS, WINDOW, now_ms=NOW_MS)
    assert behaviors(violations) == [("sensor-0003", "MessagesSent")]


@pytest.mark.parametrize("doc", [{"kind": "alert", "client_id": "sensor-1"},
                                 {"kind": "alert", "client_id": "sensor-1", "b64_length": "12"},
                                 {"kind": "alert", "client_id": "sensor-1", "b64_length": -4},
                                 {"kind": "alert", "client_id": "sensor-1", "b64_length": 6},
                                 {"kind": "alert", "b64_length": 8}])
def test_malformed_alert_records_are_counted_and_skipped(doc):
    stats = FoldStats()
    _, violations = fold({}, [kinesis_record(doc)], SIZE_LIMITS, WINDOW, now_ms=NOW_MS, stats=stats)
    assert violations == [] and stats.malformed == {BAD_FIELDS: 1}


def test_size_limits_come_from_the_environment_and_default_when_absent():
    base = {"MAX_MESSAGES": "100", "MAX_BYTES": "1000", "MAX_CONNECTS": "5", "MAX_DISCONNECTS": "5",
            "MAX_ESTABLISHED_TCP": "3", "WINDOW_SECONDS": "300", "PROFILE_NAME": PROFILE}
    limits, problems = limits_from_env({**base, "MAX_TELEMETRY_BYTES": "4096", "MAX_ALERT_BYTES": "65536"})
    assert (limits.max_telemetry_bytes, limits.max_alert_bytes, problems) == (4096, 65536, [])
    limits, problems = limits_from_env(base)
    assert (limits.max_telemetry_bytes, limits.max_alert_bytes) == (Limits().max_telemetry_bytes,
                                                                   Limits().max_alert_bytes)
