"""Properties of the detector's fold: whatever the records hold it never raises, never alarms a
device that is within its limits, counts the same however the window's records are split into
batches, and gives the same answer when a batch is retried with the previous state."""

from __future__ import annotations

import base64
import copy
import json

from defense.detector.reports import InvalidReport, parse_report
from defense.detector.windows import BEHAVIORS, FoldStats, Limits, fold
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared.violations import Violation

from tests.defense.test_detector import (
    PROFILE,
    WINDOW,
    b64,
    CERT_A,
    CERT_CLAIM,
    kinesis_record,
    message,
    metrics_record,
    presence,
    report,
    telemetry,
)

PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
LOW = Limits(max_messages=3, max_bytes=200, max_connects=2, max_disconnects=2, max_established_tcp=1,
             max_auth_failures=2, profile=PROFILE)
SLOTS = {"MessagesSent": (0, "max_messages"), "MessageBytes": (1, "max_bytes"),
         "ConnectionAttempts": (2, "max_connects"), "Disconnects": (3, "max_disconnects"),
         "AuthorizationFailures": (5, "max_auth_failures")}
CERTIFICATES = st.sampled_from([CERT_A, CERT_CLAIM, "12345678901234567890123456789012"])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
things = st.sampled_from(["sensor-0001", "sensor-0002", "a:b_c-d", "x" * 128]) | st.text(max_size=10)
# Every kind of record, valid or not: what a stream fed by rules (or by mistake) could carry.
any_docs = st.one_of(
    st.fixed_dictionaries({"payload": st.binary(max_size=120).map(b64) | json_values, "thing": things,
                           "client_id": things}, optional={"kind": st.just("telemetry") | json_values}),
    st.fixed_dictionaries({"kind": st.just("presence"),
                           "event": (st.sampled_from(["connected", "disconnected", "connect_failed"])
                                     | json_values),
                           "client_id": things | st.just("claim-1f") | json_values},
                          optional={"principal": CERTIFICATES | json_values, "session": st.sampled_from("ab"),
                                    "version": st.integers(0, 2), "timestamp": st.integers(0, 2)}),
    st.fixed_dictionaries({"kind": st.just("message"), "client_id": things | json_values}),
    st.fixed_dictionaries({"kind": st.just("metrics"), "thing": things,
                           "report": st.builds(report, tcp_ports=st.lists(st.integers(0, 65535), max_size=2),
                                               udp_ports=st.lists(st.integers(0, 65535), max_size=2),
                                               established=st.integers(0, 3), short=st.booleans())
                           | json_values},
                          optional={"client_id": things}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    json_values,
)
any_records = st.one_of(
    any_docs.map(kinesis_record),
    st.binary(max_size=200).map(kinesis_record),  # arbitrary bytes as the record data
    st.text(max_size=40).map(kinesis_record),  # arbitrary (mostly not base64) data text
    json_values,  # not even a Kinesis record
)
healthy = st.one_of(
    st.sampled_from(["sensor-0001", "sensor-0002"]).map(telemetry),
    st.sampled_from(["sensor-0001", "sensor-0002"]).map(message),
    st.sampled_from(["sensor-0001", "sensor-0002"]).map(lambda t: presence(t, "connected")),
    st.sampled_from(["sensor-0001", "sensor-0002"]).map(lambda t: metrics_record(t, report(established=1))),
)


def split(records: list, cuts: list[int]) -> list[list]:
    points = sorted({c % (len(records) + 1) for c in cuts})
    bounds = [0, *points, len(records)]
    return [records[a:b] for a, b in zip(bounds, bounds[1:])]


def fold_all(batches, limits):
    state, violations = {}, []
    for batch in batches:
        state, new = fold(state, batch, limits, WINDOW, now_ms=1)
        violations.extend(new)
    return state, violations


def subject(violation: dict) -> str:
    """The violation's subject as the state keys it (a certificate as "@<id>")."""
    return violation.get("thingName") or "@" + violation["certificateId"]


def reported(records: list, client: str) -> set[str]:
    """Behaviours a valid report of `client` among the records justifies."""
    found = set()
    for record in records:
        try:
            doc = json.loads(base64.b64decode(record["kinesis"]["data"], validate=True))
        except Exception:  # noqa: BLE001 - not a decodable record
            continue
        if not isinstance(doc, dict) or doc.get("kind") != "metrics":
            continue
        if doc.get("client_id", doc.get("thing")) != client:
            continue
        try:
            counts = parse_report(doc.get("report"))
        except InvalidReport:
            continue
        if counts.listening_tcp_ports:
            found.add("ListeningTcpPorts")
        if counts.listening_udp_ports:
            found.add("ListeningUdpPorts")
        if (counts.established_tcp_connections or 0) > LOW.max_established_tcp:
            found.add("EstablishedTcpConnections")
    return found


@PROPERTY
@given(st.lists(any_records, max_size=40), st.lists(st.integers(0, 40), max_size=5))
def test_never_raises_and_never_alarms_a_device_within_its_limits(records, cuts):
    stats = FoldStats()
    state = {}
    violations = []
    for batch in split(records, cuts):
        state, new = fold(state, batch, LOW, WINDOW, now_ms=1, stats=stats)
        violations.extend(new)
    json.dumps(state)  # always JSON for Lambda to carry
    assert stats.records == len(records)
    assert len({(subject(v), v["behavior"]["name"]) for v in violations}) == len(violations)
    for violation in violations:
        Violation.model_validate(violation)
        who, name = subject(violation), violation["behavior"]["name"]
        if name in SLOTS:
            slot, limit = SLOTS[name]
            assert state["t"][who][slot] > getattr(LOW, limit)
        else:
            assert name in reported(records, who)
        # A claim is never a subject: certificates only for refused or claim connections.
        assert "thingName" not in violation or not violation["thingName"].startswith("claim-")


@PROPERTY
@given(st.lists(st.binary(max_size=300), max_size=60), st.lists(healthy, max_size=60), st.randoms())
def test_arbitrary_bytes_among_healthy_traffic_give_no_violation(garbage, good, rnd):
    records = [kinesis_record(raw) for raw in garbage] + good
    rnd.shuffle(records)
    roomy = Limits(max_messages=1000, max_bytes=10**9, max_connects=1000, max_disconnects=1000,
                   max_established_tcp=5, profile=PROFILE)
    stats = FoldStats()
    state, violations = fold({}, records, roomy, WINDOW, now_ms=1, stats=stats)
    assert violations == []
    messages = sum(1 for r in good if "payload" in json.loads(base64.b64decode(r["kinesis"]["data"])))
    assert sum(entry[0] for entry in state["t"].values()) >= messages


@PROPERTY
@given(st.lists(any_records | healthy, max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_counts_do_not_depend_on_how_the_window_is_split_into_batches(records, cuts):
    whole_state, whole = fold_all([records], LOW)
    split_state, spread = fold_all(split(records, cuts), LOW)
    assert {k: v[:4] + v[5:] for k, v in split_state["t"].items()} == \
        {k: v[:4] + v[5:] for k, v in whole_state["t"].items()}
    assert sorted((subject(v), v["behavior"]["name"]) for v in spread) == \
        sorted((subject(v), v["behavior"]["name"]) for v in whole)
    assert {v["violationId"] for v in spread} == {v["violationId"] for v in whole}


@PROPERTY
@given(st.lists(any_records | healthy, max_size=30), st.lists(any_records | healthy, max_size=30))
def test_a_retry_with_the_previous_state_is_identical(first, second):
    state, _ = fold({}, first, LOW, WINDOW, now_ms=1)
    before = copy.deepcopy(state)
    once = fold(state, second, LOW, WINDOW, now_ms=1)
    assert state == before
    assert fold(state, second, LOW, WINDOW, now_ms=1) == once
    assert fold(json.loads(json.dumps(state)), second, LOW, WINDOW, now_ms=1) == once


def test_every_behaviour_has_a_distinct_bit():
    assert len({b.bit for b in BEHAVIORS}) == len(BEHAVIORS)
    assert all(b.bit & (b.bit - 1) == 0 for b in BEHAVIORS)
