"""shared.violations: the violation message both detection sources publish and auto-response parses.

Example tests on the real Device Defender sample, and properties: whatever make_violation builds
parses back unchanged, and no input makes parse_violation raise anything but InvalidViolation.
"""

from __future__ import annotations

import copy

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared.violations import (
    InvalidViolation,
    Violation,
    derive_violation_id,
    make_violation,
    parse_violation,
    violation_json,
)

from tests.defense.test_auto_response import SAMPLE, SAMPLE_DICT

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_real_defender_sample_parses():
    v = parse_violation(SAMPLE)
    assert isinstance(v, Violation)
    assert v.violationId == "37e18651d207bbc74236c13faf146127"
    assert v.thingName == "dev-IZWB" and v.securityProfileName == "MySecProfile"
    assert v.behavior.name == "MessagesPub" and v.behavior.metric == "aws:num-messages-sent"
    assert v.behavior.criteria["comparisonOperator"] == "less-than"
    assert v.metricValue == {"count": 54}
    assert v.violationEventType == "in-alarm" and v.in_alarm
    assert v.violationEventTime == 1573786800000


def test_bytes_are_accepted_and_unknown_fields_are_kept():
    data = {**SAMPLE_DICT, "violationEventAdditionalInfo": {"confidenceLevel": "HIGH"}}
    v = parse_violation(json.dumps(data).encode())
    assert v.model_extra == {"violationEventAdditionalInfo": {"confidenceLevel": "HIGH"}}


def test_optional_parts_may_be_absent():
    data = {k: v for k, v in SAMPLE_DICT.items() if k != "metricValue"}
    data["behavior"] = {"name": "CustomBehaviour"}
    v = parse_violation(json.dumps(data))
    assert v.metricValue is None and v.behavior.metric is None and v.behavior.criteria is None


@pytest.mark.parametrize(("change", "field"), [
    ({"violationEventTime": True}, "violationEventTime"),
    ({"violationEventTime": "1573786800000"}, "violationEventTime"),
    ({"violationEventTime": 1573786800000.0}, "violationEventTime"),
    ({"violationEventTime": -1}, "violationEventTime"),
    ({"thingName": ""}, "thingName"),
    ({"thingName": "a/b"}, "thingName"),
    ({"violationId": ""}, "violationId"),
    ({"violationId": "x" * 129}, "violationId"),
    ({"violationEventType": "IN-ALARM"}, "violationEventType"),
    ({"securityProfileName": None}, "securityProfileName"),
    ({"behavior": {"metric": "aws:num-messages-sent"}}, "behavior.name"),
    ({"metricValue": [54]}, "metricValue"),
])
def test_wrong_fields_are_named_in_the_reason(change, field):
    with pytest.raises(InvalidViolation) as raised:
        parse_violation(json.dumps({**SAMPLE_DICT, **change}))
    assert raised.value.reason.startswith(f"{field}:")
    assert raised.value.reason == str(raised.value)


@pytest.mark.parametrize(("text", "start"), [
    ("", "not JSON"),
    ("{", "not JSON"),
    ("null", "not a JSON object"),
    ('"in-alarm"', "not a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (None, "message is NoneType"),
    ("{" + " " * (256 * 1024) + "}", "message larger than 256 KB"),
])
def test_non_objects_are_rejected_with_a_reason(text, start):
    with pytest.raises(InvalidViolation) as raised:
        parse_violation(text)
    assert raised.value.reason.startswith(start)


def test_the_reason_never_echoes_the_input():
    secret = "s3cr3t-value-that-must-not-be-logged"
    with pytest.raises(InvalidViolation) as raised:
        parse_violation(json.dumps({**SAMPLE_DICT, "violationEventTime": secret}))
    assert secret not in raised.value.reason


def test_make_violation_builds_the_defender_shape():
    message = make_violation(
        thing="dev-IZWB", profile="MySecProfile", behavior_name="MessagesPub", metric="aws:num-messages-sent",
        criteria=SAMPLE_DICT["behavior"]["criteria"], metric_value={"count": 54}, event_time_ms=1573786800000,
        violation_id="37e18651d207bbc74236c13faf146127")
    assert message == {**SAMPLE_DICT, "attribution": "proven"}  # Defender's shape, plus how it was attributed
    assert parse_violation(violation_json(message)) == parse_violation(SAMPLE).model_copy(
        update={"attribution": "proven"})


def test_the_default_id_is_deterministic_per_window():
    common = {"thing": "dev-1", "profile": "builtin", "behavior_name": "MessagesPub",
              "metric": "aws:num-messages-sent", "criteria": None, "metric_value": {"count": 500},
              "event_time_ms": 1_700_000_000_000}
    a = make_violation(**common)
    b = make_violation(**{**common, "metric_value": {"count": 900}})
    c = make_violation(**{**common, "event_time_ms": 1_700_000_300_000})
    assert a["violationId"] == b["violationId"] != c["violationId"]
    assert len(a["violationId"]) == 32 and int(a["violationId"], 16) >= 0
    assert a["violationId"] == derive_violation_id(thing="dev-1", profile="builtin",
                                                   behavior_name="MessagesPub", window=1_700_000_000_000)
    # With an explicit window, re-evaluations at different times share the id.
    w1 = make_violation(**common, window="2023-11-14T22:10Z")
    w2 = make_violation(**{**common, "event_time_ms": 1_700_000_060_000}, window="2023-11-14T22:10Z")
    assert w1["violationId"] == w2["violationId"] != a["violationId"]
    cleared = make_violation(**common, event_type="alarm-cleared")
    assert cleared["violationEventType"] == "alarm-cleared" and "metricValue" in cleared


@pytest.mark.parametrize("change", [
    {"thing": "bad thing"},
    {"event_type": "cleared"},
    {"event_time_ms": True},
    {"event_time_ms": "now"},
    {"profile": ""},
    {"violation_id": "not/valid"},
])
def test_make_violation_refuses_what_the_parser_would(change):
    base = {"thing": "dev-1", "profile": "builtin", "behavior_name": "b", "metric": None, "criteria": None,
            "metric_value": None, "event_time_ms": 1}
    with pytest.raises(InvalidViolation):
        make_violation(**{**base, **change})


# ---- properties -----------------------------------------------------------------------------------

THING_CHARS = st.sampled_from("ABCxyz019:_-")
things = st.text(THING_CHARS, min_size=1, max_size=128)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@FAST
@given(
    thing=things,
    profile=st.text(min_size=1, max_size=128),
    behavior=st.text(min_size=1, max_size=128),
    metric=st.none() | st.text(max_size=64),
    metric_value=st.none() | st.dictionaries(st.sampled_from(["count", "number", "cidrs", "ports"]),
                                             json_values, max_size=2),
    event_type=st.sampled_from(["in-alarm", "alarm-cleared", "alarm-invalidated"]),
    event_time=st.integers(min_value=0, max_value=2**53),
)
def test_whatever_make_violation_builds_parses_back(thing, profile, behavior, metric, metric_value,
                                                     event_type, event_time):
    message = make_violation(thing=thing, profile=profile, behavior_name=behavior, metric=metric,
                             criteria=None, metric_value=metric_value, event_type=event_type,
                             event_time_ms=event_time)
    v = parse_violation(violation_json(message))
    assert v.thingName == thing and v.securityProfileName == profile and v.behavior.name == behavior
    assert v.violationEventType == event_type and v.violationEventTime == event_time
    assert v.metricValue == metric_value


@FAST
@given(st.text(max_size=300) | st.binary(max_size=100))
def test_parse_violation_raises_only_invalid_violation_on_any_text(text):
    try:
        parse_violation(text)
    except InvalidViolation as bad:
        assert bad.reason and len(bad.reason) <= 300


@FAST
@given(st.dictionaries(st.sampled_from(sorted(SAMPLE_DICT) + ["extra"]), json_values, max_size=9))
def test_parse_violation_raises_only_invalid_violation_on_any_object(data):
    try:
        v = parse_violation(json.dumps({**SAMPLE_DICT, **data}))
    except InvalidViolation:
        return
    assert isinstance(v.violationEventTime, int) and not isinstance(v.violationEventTime, bool)


# ---- certificate violations and attribution (Fleetwarden's additions to Defender's format) ---------

CERT_ID = "a1b2c3d4" * 8  # 64 lowercase hex, as IoT issues certificate ids


def certificate_violation(**changes):
    data = {k: v for k, v in SAMPLE_DICT.items() if k != "thingName"}
    data.update({"certificateId": CERT_ID, "behavior": {"name": "AuthorizationFailures",
                                                         "metric": "aws:num-authorization-failures"}})
    data.update(changes)
    return data


def test_a_certificate_violation_has_no_thing_and_names_the_certificate():
    v = parse_violation(json.dumps(certificate_violation(clientId="SN-B")))
    assert v.kind == "certificate" and v.subject == CERT_ID and v.thingName is None
    assert v.clientId == "SN-B" and v.proven


def test_a_defender_violation_is_about_its_thing_and_proven():
    v = parse_violation(SAMPLE)
    assert v.kind == "thing" and v.subject == "dev-IZWB" and v.certificateId is None and v.proven


@pytest.mark.parametrize("data", [
    certificate_violation(thingName="dev-IZWB"),                  # both subjects
    {k: v for k, v in SAMPLE_DICT.items() if k != "thingName"},  # neither
    certificate_violation(certificateId="A1B2C3D4" * 8),          # uppercase
    certificate_violation(certificateId="a1b2c3d4" * 8 + "0"),    # 65
    certificate_violation(certificateId="0x" + "a1b2c3d4" * 7 + "a1b2c3"),
    certificate_violation(certificateId="g" * 64),
    certificate_violation(certificateId=42),
    certificate_violation(attribution="maybe"),
    certificate_violation(attribution=""),
    certificate_violation(clientId=""),
    certificate_violation(clientId="x" * 129),
])
def test_certificate_ids_subjects_and_attribution_are_strict(data):
    with pytest.raises(InvalidViolation):
        parse_violation(json.dumps(data))


def test_unproven_attribution_parses():
    v = parse_violation(json.dumps({**SAMPLE_DICT, "attribution": "unproven"}))
    assert not v.proven and v.kind == "thing"


def test_make_violation_builds_a_certificate_violation_with_its_own_ids():
    common = {"profile": "builtin", "behavior_name": "AuthorizationFailures",
              "metric": "aws:num-authorization-failures", "criteria": None, "metric_value": {"count": 50},
              "event_time_ms": 1_700_000_000_000, "window": 1_700_000_000_000}
    message = make_violation(certificate_id=CERT_ID, client_id="SN-B", attribution="unproven", **common)
    assert "thingName" not in message and message["certificateId"] == CERT_ID
    assert message["clientId"] == "SN-B" and message["attribution"] == "unproven"
    v = parse_violation(violation_json(message))
    assert v.kind == "certificate" and not v.proven
    # The certificate's id never equals a thing's, whatever the thing is called.
    assert message["violationId"] == derive_violation_id(certificate_id=CERT_ID, profile="builtin",
                                                         behavior_name="AuthorizationFailures",
                                                         window=1_700_000_000_000)
    assert message["violationId"] != make_violation(thing=CERT_ID, **common)["violationId"]
    # The built-in detectors always say how they attributed it (absent means Device Defender).
    assert make_violation(thing="dev-1", **common)["attribution"] == "proven"
    assert parse_violation(violation_json(make_violation(thing="dev-1", **common))).proven
    with pytest.raises(InvalidViolation):
        make_violation(thing="dev-1", certificate_id=CERT_ID, **common)
    with pytest.raises(InvalidViolation):
        make_violation(**common)


@pytest.mark.parametrize("metric,proven", [
    ("aws:num-authorization-failures", False),  # whom Defender charges a refused Connect: undocumented
    ("aws:num-connection-attempts", False),
    ("aws:num-messages-sent", True),  # counted on the device's own accepted connection
    ("aws:message-byte-size", True),
    (None, True),  # a custom behaviour without a metric
])
def test_defender_messages_on_metrics_of_unknown_attribution_are_report_only(metric, proven):
    """Device Defender's own alert (no `attribution`, as in the documented SNS message, the shape of
    ../shared/events/defender-violation-in-alarm.json). Cloud-side metrics page: authorization failures
    and connection attempts are counted for "a device", without saying whether a refused Connect is
    charged to the thing named by its client id: containing on them would let any certificate get
    any device contained."""
    data = copy.deepcopy(SAMPLE_DICT)
    if metric is None:
        data["behavior"].pop("metric", None)
    else:
        data["behavior"]["metric"] = metric
    assert "attribution" not in data
    assert parse_violation(json.dumps(data)).proven is proven
