"""Properties of the telemetry transform: whatever arrives, every record is answered exactly once,
in order, with its recordId, without raising; a record is written (as one JSON line with exactly the
Glue table's columns, under its day, hour and the thing's shard) only when it is fully valid, and
then faithfully; anything else is handed back whole for Firehose's JSON error prefix."""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timezone

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from telemetry.transform.transform import REASONS, SAFE_THING, transform_batch
from telemetry.layout import shard_of
from telemetry.transform.aggregates import BATCH_KEY_BASE, BatchAggregates
from tests.telemetry.test_transform import ARRIVED_AT, COLUMNS, VALID_PREFIX, b64, line_of, prefix_of

PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 8192
INT64 = 2**63 - 1
MAX_MS = 253_402_300_800_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
safe_things = st.from_regex(SAFE_THING.pattern, fullmatch=True)
things = safe_things | st.text(max_size=140) | json_values
finite = st.floats(allow_nan=False, allow_infinity=False)
received = st.integers(0, MAX_MS - 1) | st.floats(0, MAX_MS, exclude_max=True)

valid_messages = st.fixed_dictionaries(
    {
        "ts": st.integers(-INT64, INT64) | finite
        | st.datetimes(timezones=st.none() | st.just(timezone.utc)).map(lambda d: d.isoformat()),
        "seq": st.integers(0, INT64),
        "metrics": st.dictionaries(st.text(max_size=12), st.integers(-INT64, INT64) | finite, max_size=100),
    },
    optional={"extra": json_values},
)
# The same fields, anything in them: mostly invalid.
any_messages = st.fixed_dictionaries(
    {}, optional={"ts": json_values, "seq": json_values, "metrics": json_values | st.dictionaries(
        st.text(max_size=5), json_values, max_size=5)}) | json_values


def encoded(doc) -> str:
    return b64(json.dumps(doc).encode())


payloads = (st.binary(max_size=300).map(b64) | valid_messages.map(encoded) | any_messages.map(encoded)
            | st.text(max_size=60) | json_values)


@st.composite
def valid_envelopes(draw):
    thing = draw(safe_things)
    return {"payload": draw(valid_messages.map(encoded)), "thing": thing, "client_id": thing,
            "principal": draw(st.none() | st.text(max_size=70)), "received_at": draw(received)}


replacements = {
    "payload": payloads,
    "thing": things,
    "client_id": things,
    "principal": st.text(max_size=70) | json_values,
    "received_at": received | json_values,
}


@st.composite
def envelopes(draw):
    """The rule's output with each field kept, dropped or replaced by anything (so a good share
    stays valid), or any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    env = draw(valid_envelopes())
    for key, anything in replacements.items():
        action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace"]))
        if action == "drop":
            del env[key]
        elif action == "replace":
            env[key] = draw(anything)
    if draw(st.booleans()):
        env["other"] = draw(json_values)
    return env


def firehose_records(datas: list[str]) -> list[dict]:
    return [{"recordId": f"{i:03d}" + "x" * 50, "approximateArrivalTimestamp": ARRIVED_AT + i, "data": data}
            for i, data in enumerate(datas)]


def check(records: list[dict], limit: int = LIMIT) -> list[dict | None]:
    """Run a batch; assert the invariants; returns each record's line if valid, else None."""
    aggregates = BatchAggregates()
    outputs, counts = transform_batch(records, max_payload_bytes=limit, aggregates=aggregates)
    assert [o["recordId"] for o in outputs] == [r["recordId"] for r in records]
    # The detector's aggregates: one per connection, every valid message counted, none invented.
    sent = aggregates.records()
    assert len({a["client_id"] for a in sent}) == len(sent)
    assert counts["valid"] <= sum(a["messages"] for a in sent) <= len(records) - aggregates.unnamed
    for a in sent:
        assert 0 <= a["spoofed"] <= a["messages"] and 0 <= a["max_bytes"] <= a["bytes"]
        assert BATCH_KEY_BASE <= a["batch"] < 2 * BATCH_KEY_BASE
    assert {o["result"] for o in outputs} <= {"Ok", "ProcessingFailed"}  # never "Dropped"
    assert counts["records"] == len(records) == counts["valid"] + counts["rejected"] + counts["failed"]
    assert counts["failed"] == 0 and sum(counts["reasons"].values()) == counts["rejected"]
    assert set(counts["reasons"]) <= set(REASONS)
    valid = []
    for rec, out in zip(records, outputs):
        if out["result"] != "Ok":
            assert out == {"recordId": rec["recordId"], "result": "ProcessingFailed", "data": rec["data"]}
            valid.append(None)  # handed back whole: nothing lost
            continue
        line = line_of(out)  # exactly one newline-terminated JSON object
        assert set(line) == COLUMNS
        prefix = prefix_of(out)
        assert VALID_PREFIX.fullmatch(prefix)
        assert line["thing"] == line["client_id"] and SAFE_THING.fullmatch(line["thing"])
        # The partition is the thing's shard and the UTC day and hour IoT received it.
        keys = out["metadata"]["partitionKeys"]
        assert keys["shard"] == f"{shard_of(line['thing']):02d}"
        received = datetime.fromtimestamp(line["received_at"] / 1000, timezone.utc)
        assert (keys["day"], keys["hour"]) == (received.strftime("%Y-%m-%d"), received.strftime("%H"))
        assert type(line["seq"]) is int and 0 <= line["seq"] <= INT64
        assert type(line["received_at"]) is int  # the table's bigint
        assert type(line["ts"]) is str  # the table's ts column is a string
        assert isinstance(line["metrics"], dict) and len(line["metrics"]) <= 100
        inexact = False
        for value in line["metrics"].values():
            assert type(value) in (int, float) and math.isfinite(value)
            inexact = inexact or (type(value) is int and abs(value) > 2**53)
        assert (line["raw"] is not None) == inexact  # raw only for what a double cannot hold
        valid.append(line)
    assert counts["valid"] == sum(line is not None for line in valid)
    return valid


@PROPERTY
@given(st.lists(st.binary(max_size=400), max_size=12))
@example([b"", b"{}", b"null", b'{"thing":"a","client_id":"a","received_at":1,"payload":"e30="}'])
def test_any_bytes_as_record_data(blobs):
    assert check(firehose_records([b64(blob) for blob in blobs])) == [None] * len(blobs)


@PROPERTY
@given(st.lists(st.text(max_size=200), max_size=12))
def test_any_text_as_record_data(texts):
    check(firehose_records(texts))


@PROPERTY
@given(st.lists(envelopes(), max_size=10))
def test_any_envelope_with_any_payload(envs):
    lines = check(firehose_records([encoded(env) for env in envs]))
    for env, line in zip(envs, lines):
        thing = env.get("thing") if isinstance(env, dict) else None
        if not (isinstance(thing, str) and SAFE_THING.fullmatch(thing)):
            assert line is None  # never under an unsafe (or unknown) thing
        if line is None:
            continue
        # Valid: the line says what the envelope and message said.
        assert (line["thing"], line["client_id"], line["principal"]) == (
            env["thing"], env["client_id"], env.get("principal"))
        doc = json.loads(base64.b64decode(env["payload"]))
        assert (line["received_at"], line["seq"]) == (int(env["received_at"]), doc["seq"])
        assert line["ts"] == (doc["ts"] if isinstance(doc["ts"], str) else json.dumps(doc["ts"]))
        assert line["metrics"] == doc["metrics"]
        event("valid")


@PROPERTY
@given(st.lists(valid_envelopes(), min_size=1, max_size=8), safe_things)
def test_valid_records_are_kept_faithfully_and_spoofing_is_always_caught(envs, other):
    lines = check(firehose_records([encoded(env) for env in envs]), limit=1 << 20)
    for env, line in zip(envs, lines):
        assert line is not None
        doc = json.loads(base64.b64decode(env["payload"]))
        assert line["metrics"] == doc["metrics"] and line["seq"] == doc["seq"]
        assert line["ts"] == (doc["ts"] if isinstance(doc["ts"], str) else json.dumps(doc["ts"]))
        assert line["received_at"] == int(env["received_at"])

    # The same messages published by another client: each one is caught, whatever its payload.
    spoofed = [{**env, "client_id": other if other != env["thing"] else other + "x"} for env in envs]
    outputs, counts = transform_batch(firehose_records([encoded(env) for env in spoofed]),
                                      max_payload_bytes=1 << 20)
    assert counts["reasons"] == {"spoofed-thing": len(spoofed)}
    assert {o["result"] for o in outputs} == {"ProcessingFailed"}
