"""Properties of the authorization-failure decoding: whatever a delivery holds, decoding either
succeeds or raises MalformedEvent, tallying never raises, and every failure tallied is a line
with reason AUTHORIZATION_FAILURE, counted once, in the aligned window of its time."""

from __future__ import annotations

import re

import base64
import gzip
import json

from defense.attribution import THING_NAME
from defense.auth_failures.failures import (
    AUTH_FAILURE,
    CERTIFICATE,
    THING,
    UNATTRIBUTED,
    MalformedEvent,
    decode_event,
    tally,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
lines = st.one_of(
    st.fixed_dictionaries({"reason": st.just(AUTH_FAILURE) | json_values,
                           "clientId": st.text(max_size=140) | json_values},
                          optional={"timestamp": st.text(max_size=30) | json_values}).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=60),
)
log_events = st.one_of(
    st.fixed_dictionaries({"message": lines}, optional={"id": st.text(max_size=10) | json_values,
                                                        "timestamp": st.integers(-5, 2**41) | json_values}),
    json_values,
)


def wrap(doc) -> dict:
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(doc).encode())).decode()}}


@PROPERTY
@given(st.one_of(
    st.lists(log_events, max_size=20).map(
        lambda evs: wrap({"messageType": "DATA_MESSAGE", "logEvents": evs})),
    json_values.map(wrap),
    st.binary(max_size=200).map(lambda raw: {"awslogs": {"data": base64.b64encode(raw).decode()}}),
    st.binary(max_size=200).map(
        lambda raw: {"awslogs": {"data": base64.b64encode(gzip.compress(raw)).decode()}}),
    st.text(max_size=40).map(lambda text: {"awslogs": {"data": text}}),
    json_values,
))
def test_decoding_and_tallying_never_crash(event):
    try:
        doc = decode_event(event)
    except MalformedEvent:
        return
    result = tally(doc, 300)
    assert result.counted == sum(len(ids) for ids in result.failures.values())
    assert result.counted + result.ignored + result.malformed_total == result.lines or not isinstance(
        doc.get("logEvents"), list)
    for (kind, subject, window_start), ids in result.failures.items():
        assert kind in (THING, CERTIFICATE, UNATTRIBUTED)
        assert isinstance(subject, str) and 0 < len(subject.encode("utf-8", "surrogatepass")) <= 4 * 128
        if kind == THING:  # only a thing name, never a claim-* client id, can be a thing
            assert THING_NAME.fullmatch(subject) and not subject.startswith("claim-")
        if kind == CERTIFICATE:
            assert re.fullmatch("[0-9a-f]{64}", subject)
        assert window_start % 300 == 0 and window_start >= 0 and ids
