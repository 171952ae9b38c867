"""Detection without a second rule action: the transform's per-(connection, batch) aggregates, put on
the observation stream (moto Kinesis) by the real handler and folded by the real detector.

A Firehose retry of a batch must count once; a flood spread over many batches and Kinesis shards
must still add up."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from moto import mock_aws

from defense.detector.windows import BAD_FIELDS, FoldStats, Limits, fold
from telemetry.transform import handler
from telemetry.transform import aggregates as aggregates_module
from telemetry.transform.aggregates import (
    BATCH_KEY_BASE,
    KIND,
    PACKED_KIND,
    PUT_RECORDS_MAX,
    BatchAggregates,
    SendError,
    decoded_length,
    entries,
    hash_key,
    open_shard_starts,
    send,
)
from telemetry.transform.transform import transform_batch
from tests.defense.test_detector import NOW_MS, WINDOW, kinesis_record
from tests.helpers import LambdaContext, captured_logs
from tests.telemetry.test_transform import envelope, firehose_event, message, record

STREAM = "fleetwarden-test-observations"
REGION = "eu-west-1"
LIMITS = Limits(max_messages=100, max_bytes=10_000_000, max_telemetry_bytes=8192, window_seconds=300,
                profile="fleetwarden-test-builtin")


def batch_of(things: list[str], first: int = 0, **kwargs) -> list[dict]:
    """Firehose records, one message per entry of `things` (distinct seq and received_at)."""
    return [record(envelope(message(seq=first + i), thing=t, client_id=t, received_at=1_709_622_301_000 + first + i,
                            **kwargs), f"r-{first + i:06d}")
            for i, t in enumerate(things)]


def aggregates_of(records: list[dict]) -> list[dict]:
    aggregates = BatchAggregates()
    transform_batch(records, max_payload_bytes=8192, aggregates=aggregates)
    return aggregates.records()


# --- the aggregates ------------------------------------------------------------------------------

def test_one_aggregate_per_connection_counts_every_message_valid_or_not():
    records = batch_of(["sensor-0001"] * 3 + ["sensor-0002"])
    records.append(record(envelope(b"not json", thing="sensor-0001", client_id="sensor-0001"), "bad"))
    records.append(record(envelope(thing="sensor-0002", client_id="sensor-0001"), "spoof"))  # spoofed topic
    records.append(record(envelope(thing="x y", client_id="x y"), "unnamed"))  # not a thing name
    records.append(record(b"[1]", "no-envelope"))
    aggregates = BatchAggregates()
    outputs, counts = transform_batch(records, max_payload_bytes=8192, aggregates=aggregates)
    assert counts["valid"] == 4
    first, second = aggregates.records()
    body = len(message(seq=0))
    assert first["kind"] == KIND and first["client_id"] == "sensor-0001"
    assert (first["messages"], first["spoofed"]) == (5, 1)  # 3 valid + 1 invalid JSON + 1 spoofed
    assert first["bytes"] == 3 * body + len(b"not json") + body and first["max_bytes"] == body
    assert (second["client_id"], second["messages"], second["spoofed"]) == ("sensor-0002", 1, 0)
    assert aggregates.unnamed == 1
    assert BATCH_KEY_BASE <= first["batch"] < 2 * BATCH_KEY_BASE and first["batch"] != second["batch"]


def test_the_batch_key_is_the_same_for_the_same_records_in_any_order_and_differs_otherwise():
    records = batch_of(["sensor-0001"] * 4 + ["sensor-0002"] * 2)
    keys = {a["client_id"]: a["batch"] for a in aggregates_of(records)}
    assert {a["client_id"]: a["batch"] for a in aggregates_of(records[::-1])} == keys
    later = {a["client_id"]: a["batch"] for a in aggregates_of(batch_of(["sensor-0001"] * 4, first=100))}
    assert later["sensor-0001"] != keys["sensor-0001"]
    # One record fewer is another batch too.
    assert aggregates_of(records[1:])[0]["batch"] != keys["sensor-0001"]


@pytest.mark.parametrize(("text", "size"), [("", 0), ("e30=", 2), ("e30A", 3), ("YQ==", 1), ("@@@", 2)])
def test_decoded_length(text, size):
    assert decoded_length(text) == size
    if len(text) % 4 == 0 and text != "@@@":
        assert len(base64.b64decode(text)) == size


# --- the detector counts a batch once ----------------------------------------------------------

def as_kinesis(aggregates: list[dict]) -> list[dict]:
    return [kinesis_record(a, partition_key=a["client_id"]) for a in aggregates]


def fold_all(batches: list[list[dict]], stats: FoldStats | None = None):
    state, violations = {}, []
    for batch in batches:
        state, new = fold(state, batch, LIMITS, WINDOW, now_ms=NOW_MS, stats=stats)
        violations += new
    return state, violations


def test_a_flood_spread_over_batches_still_adds_up_to_one_violation():
    batches = [as_kinesis(aggregates_of(batch_of(["sensor-0001"] * 40 + ["sensor-0002"], first=1000 * i)))
               for i in range(3)]
    _, violations = fold_all(batches)
    assert [(v["thingName"], v["behavior"]["name"]) for v in violations] == [("sensor-0001", "MessagesSent")]
    assert violations[0]["metricValue"]["count"] == 120


def test_one_oversized_message_in_a_batch_is_a_size_violation():
    big = record(envelope(message(pad="x" * 9000), thing="sensor-0001", client_id="sensor-0001"), "big")
    aggregates = BatchAggregates()
    transform_batch([big], max_payload_bytes=131_072, aggregates=aggregates)
    _, violations = fold_all([as_kinesis(aggregates.records())])
    assert [v["behavior"]["name"] for v in violations] == ["TelemetryMessageByteSize"]


@pytest.mark.parametrize("change", [
    {"batch": 5}, {"batch": 2 * BATCH_KEY_BASE}, {"batch": "1"}, {"messages": 0}, {"messages": -1},
    {"bytes": 1.5}, {"spoofed": 99}, {"max_bytes": 10**9}, {"client_id": None}])
def test_a_malformed_aggregate_is_skipped_and_counted(change):
    [aggregate] = aggregates_of(batch_of(["sensor-0001"]))
    stats = FoldStats()
    state, violations = fold_all([as_kinesis([{**aggregate, **change}])], stats)
    assert stats.malformed == {BAD_FIELDS: 1} and violations == [] and state["t"] == {}


# --- sending: the real handler to moto Kinesis, read back by the detector -----------------------

def stream_records(kinesis) -> list[dict]:
    """Everything on the stream, as Lambda would deliver it (Kinesis event records)."""
    found = []
    for shard in kinesis.list_shards(StreamName=STREAM)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for r in kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]:
            found.append({"shard": shard["ShardId"], "partitionKey": r["PartitionKey"],
                          "record": {"kinesis": {"data": base64.b64encode(r["Data"]).decode(),
                                                 "partitionKey": r["PartitionKey"]}}})
    return found


BATCH_TABLE = "fleetwarden-test-telemetry-sent-batches"


class Context(LambdaContext):
    """A Lambda context with the remaining time (Powertools idempotency reads it)."""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def context():
    return Context()


@pytest.fixture
def observation_stream(monkeypatch):
    """moto Kinesis (4 shards) and the sent-batches table as the stack makes it (key `id`, TTL)."""
    with mock_aws():
        kinesis = boto3.client("kinesis", region_name=REGION)
        kinesis.create_stream(StreamName=STREAM, ShardCount=4)
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=BATCH_TABLE, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
        monkeypatch.setenv("OBSERVATION_STREAM", STREAM)
        monkeypatch.setenv("BATCH_TABLE", BATCH_TABLE)
        handler._kinesis.cache_clear()
        handler._send_once.cache_clear()
        handler._shard_map.update(at=None, starts=None)
        yield kinesis
        for cached in (handler._kinesis, handler._send_once):  # a test may have replaced one
            getattr(cached, "cache_clear", lambda: None)()
        handler._shard_map.update(at=None, starts=None)


def aggregates_in(found: list[dict]) -> list[dict]:
    """The aggregates the stream's records carry, packed or alone."""
    docs = [json.loads(base64.b64decode(f["record"]["kinesis"]["data"])) for f in found]
    return [a for d in docs for a in (d["aggregates"] if d["kind"] == PACKED_KIND else [d])]


def fold_shards(found: list[dict], stats: FoldStats) -> dict[str, list]:
    """Each shard's records folded as its detector window would; the subjects' entries."""
    entries = {}
    for shard in {f["shard"] for f in found}:
        state, _ = fold({}, [f["record"] for f in found if f["shard"] == shard], LIMITS, WINDOW,
                        now_ms=NOW_MS, stats=stats)
        entries.update(state["t"])
    return entries


def test_the_handler_puts_one_record_per_connection_keyed_by_it_and_a_retry_sends_nothing(
        observation_stream, context, capsys):
    things = [f"sensor-{i:04d}" for i in range(20)]
    event = firehose_event(batch_of([t for t in things for _ in range(6)]))
    with captured_logs(handler.logger) as logs:
        response = handler.lambda_handler(event, context)
        assert {o["result"] for o in response["records"]} == {"Ok"}
        retried = handler.lambda_handler(event, context)  # Firehose retries the same batch
    assert retried == response  # the records are answered the same way
    found = stream_records(observation_stream)
    # Packed: one Kinesis record per shard that takes any of the 20 connections, sent once.
    packed = [json.loads(base64.b64decode(f["record"]["kinesis"]["data"])) for f in found]
    assert {p["kind"] for p in packed} == {PACKED_KIND} and 1 < len(found) <= 4
    members = {a["client_id"]: f["shard"] for f, p in zip(found, packed) for a in p["aggregates"]}
    assert sorted(members) == sorted(things)  # each connection once
    # Each connection's aggregate is on the shard its client id as a partition key goes to
    # (where its presence and other messages are).
    for thing, shard in members.items():
        assert observation_stream.put_record(StreamName=STREAM, Data=b"{}", PartitionKey=thing)["ShardId"] == shard
    stats = FoldStats()
    assert {thing: entry[0] for thing, entry in fold_shards(found, stats).items()} == {t: 6 for t in things}
    assert stats.telemetry == 120
    metrics = capsys.readouterr().out.replace(" ", "")
    assert '"TelemetryAggregatesSent":[20.0]' in metrics and '"TelemetryAggregatesSent":[0.0]' in metrics
    assert '"TelemetryBatchesReplayed":[1.0]' in metrics
    assert "a Firehose retry, not sent again" in logs.getvalue()


def test_a_retried_batch_cannot_push_a_device_into_containment(observation_stream, context, capsys):
    # 60 + 30 messages in two batches: under the limit of 100; the first batch retried (60 again)
    # would have crossed it.
    first = firehose_event(batch_of(["sensor-0001"] * 60))
    second = firehose_event(batch_of(["sensor-0001"] * 30, first=1000))
    with captured_logs(handler.logger):
        for event in (first, second, first):
            handler.lambda_handler(event, context)
    state, violations = fold({}, [f["record"] for f in stream_records(observation_stream)], LIMITS, WINDOW,
                             now_ms=NOW_MS)
    assert violations == [] and state["t"]["sensor-0001"][0] == 90


def test_a_batch_whose_aggregates_were_refused_is_sent_by_firehoses_retry(
        observation_stream, context, capsys, monkeypatch):
    event = firehose_event(batch_of(["sensor-0001"] * 5 + ["sensor-0002"] * 3))
    refusing = FlakyKinesis([{0, 1}] * 3)
    monkeypatch.setattr(handler, "_kinesis", lambda: refusing)
    with captured_logs(handler.logger), pytest.raises(SendError):
        handler.lambda_handler(event, context)  # Firehose will retry the invocation
    monkeypatch.undo()
    monkeypatch.setenv("OBSERVATION_STREAM", STREAM)
    monkeypatch.setenv("BATCH_TABLE", BATCH_TABLE)
    with captured_logs(handler.logger):
        handler.lambda_handler(event, context)
    assert sorted(a["messages"] for a in aggregates_in(stream_records(observation_stream))) == [3, 5]


def test_without_the_stream_setting_nothing_is_sent(context, monkeypatch):
    monkeypatch.delenv("OBSERVATION_STREAM", raising=False)
    with mock_aws(), captured_logs(handler.logger):
        kinesis = boto3.client("kinesis", region_name=REGION)
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        handler.lambda_handler(firehose_event(batch_of(["sensor-0001"])), context)
        assert stream_records(kinesis) == []


class FlakyKinesis:
    """PutRecords that refuses the records listed in `refusals`, one list per call."""

    def __init__(self, refusals: list[set[int]]):
        self.refusals, self.calls = refusals, []

    def put_records(self, StreamName, Records):
        self.calls.append([json.loads(r["Data"])["client_id"] for r in Records])
        refused = self.refusals.pop(0) if self.refusals else set()
        return {"FailedRecordCount": len(refused), "Records": [
            {"ErrorCode": "ProvisionedThroughputExceededException"} if i in refused else {"SequenceNumber": "1"}
            for i in range(len(Records))]}


def test_without_the_shard_map_each_aggregate_goes_alone_keyed_by_its_client_id():
    records = aggregates_of(batch_of(["sensor-0001", "sensor-0002"]))
    assert [(e["PartitionKey"], "ExplicitHashKey" in e, json.loads(e["Data"])) for e in entries(records, None)] == [
        ("sensor-0001", False, records[0]), ("sensor-0002", False, records[1])]


def test_packed_records_split_at_the_size_cap_and_stay_on_their_shard(monkeypatch):
    monkeypatch.setattr(aggregates_module, "MAX_PACKED_BYTES", 600)
    records = aggregates_of(batch_of([f"sensor-{i:04d}" for i in range(40)]))
    starts = [0, 2**126, 2**127, 3 * 2**126]
    packed = entries(records, starts)
    assert all(len(e["Data"]) < 600 + 200 for e in packed)  # one aggregate may start a record alone
    seen = []
    for entry in packed:
        doc = json.loads(entry["Data"])
        shard = max(i for i, start in enumerate(starts) if int(entry["ExplicitHashKey"]) >= start)
        for aggregate in doc["aggregates"]:
            assert max(i for i, start in enumerate(starts) if hash_key(aggregate["client_id"]) >= start) == shard
            seen.append(aggregate["client_id"])
    assert sorted(seen) == sorted(r["client_id"] for r in records) and len(packed) > 4


def test_only_open_shards_take_records():
    shards = [{"ShardId": "0", "HashKeyRange": {"StartingHashKey": "0"},
               "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"}},
              {"ShardId": "1", "HashKeyRange": {"StartingHashKey": "5"}, "SequenceNumberRange": {}},
              {"ShardId": "2", "HashKeyRange": {"StartingHashKey": "0"}, "SequenceNumberRange": {}}]
    assert open_shard_starts(shards) == [0, 5]


def test_a_stream_that_cannot_be_listed_still_gets_every_aggregate(observation_stream, context, capsys,
                                                                     monkeypatch):
    class Unlistable:
        def list_shards(self, **kwargs):
            raise RuntimeError("AccessDenied")

        def put_records(self, **kwargs):
            return observation_stream.put_records(**kwargs)

    monkeypatch.setattr(handler, "_kinesis", lambda: Unlistable())
    with captured_logs(handler.logger) as logs:
        handler.lambda_handler(firehose_event(batch_of(["sensor-0001", "sensor-0002"])), context)
    found = stream_records(observation_stream)
    assert sorted(f["partitionKey"] for f in found) == ["sensor-0001", "sensor-0002"]
    assert "aggregates sent one per record" in logs.getvalue()


def test_packed_aggregates_are_counted_each_and_a_malformed_one_alone():
    good = aggregates_of(batch_of(["sensor-0001"] * 3 + ["sensor-0002"] * 2))
    doc = {"kind": PACKED_KIND, "aggregates": [*good, {"client_id": "sensor-0003"}, "junk"]}
    stats = FoldStats()
    state, _ = fold_all([[kinesis_record(doc)]], stats)
    assert (state["t"]["sensor-0001"][0], state["t"]["sensor-0002"][0]) == (3, 2)
    assert stats.malformed == {BAD_FIELDS: 1, "not-object": 1}
    _, _ = fold_all([[kinesis_record({"kind": PACKED_KIND, "aggregates": "x"})]], stats)
    assert stats.malformed[BAD_FIELDS] == 2


def test_refused_records_are_sent_again_and_persistent_refusal_fails_the_invocation():
    records = [{"client_id": f"c{i}", "batch": BATCH_KEY_BASE + i} for i in range(3)]
    flaky = FlakyKinesis([{0, 2}, set()])
    assert send(flaky, STREAM, records) == 2
    assert flaky.calls == [["c0", "c1", "c2"], ["c0", "c2"]]
    with pytest.raises(SendError, match="1 detector aggregate records not accepted after 3 attempts"):
        send(FlakyKinesis([{1}, {0}, {0}]), STREAM, records)


def test_large_batches_are_sent_in_chunks_of_500():
    flaky = FlakyKinesis([])
    send(flaky, STREAM, [{"client_id": f"c{i}"} for i in range(PUT_RECORDS_MAX * 2 + 1)])
    assert [len(call) for call in flaky.calls] == [500, 500, 1]


def test_the_transform_sends_exactly_the_ids_the_detector_can_count():
    from defense.detector import windows
    from telemetry.transform import aggregates

    assert aggregates.THING_ID.pattern == windows.THING_ID.pattern
    assert aggregates.BATCH_KEY_BASE == windows.BATCH_KEY_MIN and 2 * aggregates.BATCH_KEY_BASE == windows.BATCH_KEY_END
