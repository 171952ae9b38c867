"""Telemetry Firehose transform: the pure record checks, and the real handler (logs, EMF metrics).

Records are built exactly as the telemetry rule and Firehose make them: the rule's JSON output
(payload = base64 of the device message) base64-encoded once more as the Firehose record data.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from telemetry.transform import handler
from telemetry.transform.transform import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PROCESSING_FAILED,
    REASONS,
    payload_limit,
    shard_count,
    transform_batch,
    transform_record,
)
from telemetry.layout import s3_prefix, shard_of
from tests.helpers import captured_logs

THING = "sensor-0001"
PRINCIPAL = "a1" * 32  # principal(): the certificate id
RECEIVED_AT = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms as timestamp() gives it
ARRIVED_AT = 1_600_000_000_000  # 2020-09-13: a different day, to tell the two apart
SECRET = "PAYLOAD-CONTENT-0451"  # appears in payloads: must never reach a log line
VALID_PREFIX = re.compile(r"telemetry/day=\d{4}-\d{2}-\d{2}/hour=(0\d|1\d|2[0-3])/shard=\d{2}/")
# The Glue table's columns (stacks/telemetry/catalog.py): every valid line has exactly these.
COLUMNS = {"thing", "client_id", "principal", "received_at", "ts", "seq", "metrics", "raw"}


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    """The limit comes from the environment when not passed: the default here, unless a test sets it."""
    monkeypatch.delenv("MAX_PAYLOAD_BYTES", raising=False)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def message(**fields) -> bytes:
    """A device telemetry message; fields=None removes one."""
    doc = {"ts": 1_699_999_999, "seq": 7, "metrics": {"temperature_c": 21.5, "rssi_dbm": -71},
           "note": SECRET}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def envelope(payload: bytes | str | None = None, *, thing=THING, client_id=THING, principal=PRINCIPAL,
             received_at=RECEIVED_AT, **extra) -> dict:
    """The telemetry rule's output for one message (payload: bytes are base64-encoded here)."""
    body = message() if payload is None else payload
    env = {"payload": b64(body) if isinstance(body, bytes) else body, "thing": thing, "client_id": client_id,
           "principal": principal, "received_at": received_at, **extra}
    return {k: v for k, v in env.items() if v is not _ABSENT}


_ABSENT = object()


def record(env: dict | bytes | str, record_id: str = "r-0", arrived: int = ARRIVED_AT) -> dict:
    """A Firehose input record: data = base64 of the envelope JSON (bytes/str: used as given)."""
    if isinstance(env, dict):
        data = b64(json.dumps(env).encode())
    elif isinstance(env, bytes):
        data = b64(env)
    else:
        data = env
    return {"recordId": record_id, "approximateArrivalTimestamp": arrived, "data": data}


def line_of(output: dict) -> dict:
    """The one JSON line an output record carries (checks it is exactly one, newline-terminated)."""
    text = base64.b64decode(output["data"], validate=True).decode("ascii")
    assert text.endswith("\n") and text.count("\n") == 1, text
    doc = json.loads(text)
    assert isinstance(doc, dict)
    return doc


def prefix_of(output: dict) -> str:
    """The S3 prefix Firehose builds from the record's partition keys."""
    keys = output["metadata"]["partitionKeys"]
    assert set(keys) == {"day", "hour", "shard"}
    assert not any("/" in value for value in keys.values())  # partition values are path segments
    return s3_prefix(keys)


def one(rec: dict, **kwargs) -> dict:
    return transform_record(rec, **kwargs)


# --- valid records ------------------------------------------------------------------------------

def test_valid_record_becomes_one_compact_row_under_its_day_hour_and_shard():
    rec = record(envelope())
    result = one(rec)
    assert result["reason"] is None and result["thing"] == THING and result["detail"] is None
    out = result["record"]
    assert out["recordId"] == "r-0" and out["result"] == "Ok"
    assert shard_of(THING) == 4  # CRC-32 of the name, mod 16: pinned, fleetctl and Athena rely on it
    assert prefix_of(out) == "telemetry/day=2023-11-14/hour=22/shard=04/"
    text = base64.b64decode(out["data"]).decode()
    assert text == ('{"thing":"sensor-0001","client_id":"sensor-0001","principal":"' + PRINCIPAL + '",'
                    '"received_at":1700000000000,"ts":"1699999999","seq":7,'
                    '"metrics":{"temperature_c":21.5,"rssi_dbm":-71},"raw":null}\n')
    assert set(json.loads(text)) == COLUMNS
    assert text == json.dumps(json.loads(text), separators=(",", ":")) + "\n"  # compact
    assert SECRET not in text  # fields other than ts, seq and metrics are not copied


@pytest.mark.parametrize("ts", [1_699_999_999, 1_699_999_999_123, 1699999999.25, 0,
                                "2023-11-14T22:13:19Z", "2023-11-14T22:13:19.123+01:00", "2023-11-14"])
def test_ts_may_be_epoch_seconds_or_ms_or_iso_text(ts):
    result = one(record(envelope(message(ts=ts))))
    assert result["reason"] is None
    # The table's ts is a string: the device's own text for any of them.
    assert line_of(result["record"])["ts"] == (ts if isinstance(ts, str) else json.dumps(ts))


def test_numbers_are_copied_as_written_and_stay_json():
    raw = (b'{"ts": 1.7e9, "seq": 0, '
           b'"metrics": {"a": 21.50, "b": -0.0, "c": 1E3, "d": 1e-400, "e": 12345678901234567}}')
    out = one(record(envelope(raw)))["record"]
    text = base64.b64decode(out["data"]).decode()
    assert '"metrics":{"a":21.50,"b":-0.0,"c":1E3,"d":1e-400,"e":12345678901234567}' in text
    assert '"ts":"1.7e9"' in text
    line = line_of(out)
    assert line["metrics"] == {"a": 21.5, "b": 0.0, "c": 1000.0, "d": 0.0, "e": 12345678901234567}
    # e is over 2**53: no double holds it exactly, so the payload is kept whole in raw.
    assert line["raw"] == raw.decode()


def test_raw_is_kept_only_when_an_integer_metric_does_not_fit_a_double():
    for value, kept in ((2**53, False), (-(2**53), False), (2**53 + 1, True), (-(2**53) - 1, True),
                        (2**63 - 1, True), (1e300, False)):
        body = message(metrics={"v": value})
        line = line_of(one(record(envelope(body)))["record"])
        assert line["raw"] == (body.decode() if kept else None), value


def test_metrics_may_be_empty_or_have_up_to_100_keys_and_any_key_text():
    metrics = {f"m{i}": i * 0.5 for i in range(100)}
    assert one(record(envelope(message(metrics=metrics))))["reason"] is None
    odd_keys = {"": 1, "ü\"\\\n": 2.5, "\ud800": 3}
    out = one(record(envelope(json.dumps({"ts": 1, "seq": 1, "metrics": odd_keys}).encode())))["record"]
    assert line_of(out)["metrics"] == odd_keys
    assert one(record(envelope(message(metrics={}))))["reason"] is None


def test_unicode_in_principal_and_iso_ts_is_escaped():
    out = one(record(envelope(message(ts="2023-11-14T22:13:19Z"), principal="cert-ü")))["record"]
    assert base64.b64decode(out["data"]).isascii()
    assert line_of(out)["principal"] == "cert-ü"


def test_principal_may_be_absent():
    env = envelope()
    del env["principal"]
    out = one(record(env))["record"]
    assert line_of(out)["principal"] is None


def test_payload_of_exactly_the_limit_is_accepted():
    body = message(pad="x" * 100)
    body = message(pad="x" * (100 + 512 - len(body)))
    assert len(body) == 512
    assert one(record(envelope(body)), max_payload_bytes=512)["reason"] is None
    assert one(record(envelope(body + b" ")), max_payload_bytes=512)["reason"] == "oversized"


@pytest.mark.parametrize(("received_at", "day"), [
    (1_700_006_399_999, "2023-11-14"),  # the last ms of the day (UTC)
    (1_700_006_400_000, "2023-11-15"),
    (0, "1970-01-01"),
    (951_782_400_000, "2000-02-29"),
    (1_700_006_400_000.5, "2023-11-15"),
])
def test_date_is_the_utc_day_of_received_at(received_at, day):
    out = one(record(envelope(received_at=received_at)))["record"]
    assert prefix_of(out).startswith(f"telemetry/day={day}/")


@pytest.mark.parametrize(("received_at", "hour"), [
    (1_700_006_399_999, "23"), (1_700_006_400_000, "00"), (1_700_000_000_000, "22"), (3_599_999, "00"),
    (3_600_000, "01")])
def test_hour_is_the_utc_hour_of_received_at(received_at, hour):
    out = one(record(envelope(received_at=received_at)))["record"]
    assert out["metadata"]["partitionKeys"]["hour"] == hour


def test_the_shard_is_the_things_in_every_hour_and_the_count_comes_from_the_environment(monkeypatch):
    things = [f"dev-{i:04d}" for i in range(1000)]
    for shards in (1, 16, 100):
        seen = set()
        for thing in things:
            out = one(record(envelope(thing=thing, client_id=thing)), shards=shards)["record"]
            keys = out["metadata"]["partitionKeys"]
            assert keys["shard"] == f"{shard_of(thing, shards):02d}"
            seen.add(keys["shard"])
        assert len(seen) == shards  # 1,000 names fill every shard
    monkeypatch.setenv("TELEMETRY_SHARDS", "4")
    assert int(transform_batch([record(envelope())])[0][0]["metadata"]["partitionKeys"]["shard"]) < 4
    assert shard_count({}) == 16 and shard_count({"TELEMETRY_SHARDS": "32"}) == 32
    for bad in ("0", "101", "x"):
        with pytest.raises(ValueError):
            shard_count({"TELEMETRY_SHARDS": bad})


# --- rejected records ---------------------------------------------------------------------------

UNSAFE_THINGS = ["../../evil", "a/b", "thing with space", "x" * 129, "", "sensör", "dev-1\n",
                 "dev=1", "%2e%2e", "${iot:Connection.Thing.ThingName}"]

REJECTED = [
    # (name, record, reason)
    ("data not base64", record("!!not base64!!"), "invalid-envelope"),
    ("data not JSON", record(b"thing=sensor-0001"), "invalid-envelope"),
    ("data not UTF-8", record(b"\xff\xfe{}"), "invalid-envelope"),
    ("envelope a list", record(b"[1, 2]"), "invalid-envelope"),
    ("envelope NaN received_at", record(b'{"payload":"e30=","thing":"sensor-0001","client_id":"sensor-0001",'
                                        b'"received_at":NaN}'), "invalid-envelope"),
    ("thing missing", record(envelope(thing=_ABSENT)), "invalid-envelope"),
    ("thing not a string", record(envelope(thing=12)), "invalid-envelope"),
    ("client id missing", record(envelope(client_id=_ABSENT)), "invalid-envelope"),
    ("received_at text", record(envelope(received_at="1700000000000")), "invalid-envelope"),
    ("received_at bool", record(envelope(received_at=True)), "invalid-envelope"),
    ("received_at negative", record(envelope(received_at=-1)), "invalid-envelope"),
    ("received_at past year 9999", record(envelope(received_at=253_402_300_800_000)), "invalid-envelope"),
    ("payload missing", record(envelope(payload=_ABSENT)), "invalid-envelope"),
    ("payload not a string", record(envelope() | {"payload": 5}), "invalid-envelope"),
    ("principal not a string", record(envelope(principal=["x"])), "invalid-envelope"),
    ("spoofed thing", record(envelope(client_id="sensor-0002")), "spoofed-thing"),
    ("spoofed, bad payload too", record(envelope("@@@", client_id="sensor-0002")), "spoofed-thing"),
    ("payload not base64", record(envelope("@@@")), "invalid-base64"),
    ("payload bad padding", record(envelope("e30")), "invalid-base64"),
    ("payload base64 with newline", record(envelope("e30=\n")), "invalid-base64"),
    ("oversized", record(envelope(message(pad="x" * DEFAULT_MAX_PAYLOAD_BYTES))), "oversized"),
    ("oversized, not even base64", record(envelope("@" * 20_000)), "oversized"),
    ("payload not JSON", record(envelope(b"temperature=21.5")), "invalid-json"),
    ("payload empty", record(envelope(b"")), "invalid-json"),
    ("payload not UTF-8", record(envelope(b'{"ts":1,"seq":1,"metrics":{},"x":"\xff"}')), "invalid-json"),
    ("payload UTF-16", record(envelope(message().decode().encode("utf-16"))), "invalid-json"),
    ("payload trailing garbage", record(envelope(message() + b"}")), "invalid-json"),
    ("payload deeply nested", record(envelope(b"[" * 4000 + b"]" * 4000)), "invalid-json"),
    ("payload a list", record(envelope(b"[1, 2, 3]")), "wrong-type"),
    ("payload a string", record(envelope(b'"hello"')), "wrong-type"),
    ("ts missing", record(envelope(message(ts=None))), "missing-field"),
    ("seq missing", record(envelope(message(seq=None))), "missing-field"),
    ("metrics missing", record(envelope(message(metrics=None))), "missing-field"),
    ("ts bool", record(envelope(message(ts=True))), "wrong-type"),
    ("ts null", record(envelope(b'{"ts":null,"seq":1,"metrics":{}}')), "wrong-type"),
    ("ts list", record(envelope(message(ts=[1]))), "wrong-type"),
    ("ts not ISO text", record(envelope(message(ts="yesterday"))), "wrong-type"),
    ("ts NaN", record(envelope(b'{"ts":NaN,"seq":1,"metrics":{}}')), "wrong-type"),
    ("ts overflows", record(envelope(b'{"ts":1e999,"seq":1,"metrics":{}}')), "wrong-type"),
    ("seq bool", record(envelope(message(seq=True))), "wrong-type"),
    ("seq negative", record(envelope(message(seq=-1))), "wrong-type"),
    ("seq float", record(envelope(message(seq=1.0))), "wrong-type"),
    ("seq text", record(envelope(message(seq="1"))), "wrong-type"),
    ("seq over 64 bits", record(envelope(message(seq=2**64))), "wrong-type"),
    ("metrics a list", record(envelope(message(metrics=[1, 2]))), "wrong-type"),
    ("metric text", record(envelope(message(metrics={"t": "21.5"}))), "wrong-type"),
    ("metric bool", record(envelope(message(metrics={"on": True}))), "wrong-type"),
    ("metric null", record(envelope(b'{"ts":1,"seq":1,"metrics":{"t":null}}')), "wrong-type"),
    ("metric object", record(envelope(message(metrics={"t": {"v": 1}}))), "wrong-type"),
    ("metric NaN", record(envelope(b'{"ts":1,"seq":1,"metrics":{"t":NaN}}')), "wrong-type"),
    ("metric -Infinity", record(envelope(b'{"ts":1,"seq":1,"metrics":{"t":-Infinity}}')), "wrong-type"),
    ("metric overflows to inf", record(envelope(b'{"ts":1,"seq":1,"metrics":{"t":1e999}}')), "wrong-type"),
    ("metric 400 digits", record(envelope(b'{"ts":1,"seq":1,"metrics":{"t":' + b"9" * 400 + b'.5}}')),
     "wrong-type"),
    ("metric int over 64 bits", record(envelope(message(metrics={"t": 2**63}))), "wrong-type"),
    ("101 metrics", record(envelope(message(metrics={f"m{i}": i for i in range(101)}))), "wrong-type"),
] + [(f"unsafe thing {t!r}", record(envelope(thing=t, client_id=t)), "invalid-envelope")
      for t in UNSAFE_THINGS]


@pytest.mark.parametrize(("name", "rec", "reason"), REJECTED, ids=[case[0] for case in REJECTED])
def test_invalid_record_is_handed_back_whole_for_firehoses_json_error_prefix(name, rec, reason):
    result = one(rec)
    assert result["reason"] == reason
    out = result["record"]
    # Never dropped: ProcessingFailed with the original data, which Firehose writes as JSON under
    # telemetry-errors/processing-failed/ (no partition keys: they would not be used).
    assert out == {"recordId": rec["recordId"], "result": "ProcessingFailed", "data": rec["data"]}
    assert isinstance(result["detail"], str) and 0 < len(result["detail"]) <= 80
    assert result["thing"] in (None, THING)  # only ever a safe name


def test_rejections_name_the_thing_only_when_the_envelope_told_a_safe_one():
    assert one(record(envelope(client_id="sensor-0002")))["thing"] == THING
    assert one(record(envelope(thing="../x", client_id="../x")))["thing"] is None


def test_unexpected_records_fail_alone():
    good = record(envelope(), "good")
    odd = [{"recordId": "no-data"}, {"recordId": "int-data", "data": 5}, {"data": good["data"]}, "text", None]
    outputs, counts = transform_batch([good, *odd, good], max_payload_bytes=8192)
    assert [o["result"] for o in outputs] == ["Ok"] + ["ProcessingFailed"] * 5 + ["Ok"]
    assert [o["recordId"] for o in outputs] == ["good", "no-data", "int-data", None, None, None, "good"]
    assert outputs[3]["data"] == good["data"]  # Firehose keeps the original for its error prefix
    assert counts == {"records": 7, "valid": 2, "rejected": 0, "failed": 5, "reasons": {}}
    assert one(None)["reason"] == PROCESSING_FAILED


# --- batches ------------------------------------------------------------------------------------

def mixed_batch() -> tuple[list[dict], list[str | None]]:
    """Valid records between every kind of rejection, with distinct recordIds."""
    cases = [(record(envelope(message(seq=i))), None) for i in range(3)]
    cases += [(rec, reason) for _, rec, reason in REJECTED]
    cases += [(record(envelope(message(seq=99), thing="sensor-0002", client_id="sensor-0002")), None)]
    records, expected = [], []
    for i, (rec, reason) in enumerate(cases):
        records.append({**rec, "recordId": f"{i:04d}-" + "r" * 40})
        expected.append(reason)
    return records, expected


def test_a_mixed_batch_answers_every_record_in_order():
    records, expected = mixed_batch()
    seen = []
    outputs, counts = transform_batch(records, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
                                      on_reject=lambda *args: seen.append(args))
    assert [o["recordId"] for o in outputs] == [r["recordId"] for r in records]
    assert [o["result"] == "Ok" for o in outputs] == [e is None for e in expected]
    assert [r["data"] for r, e in zip(records, expected) if e] == [
        o["data"] for o in outputs if o["result"] != "Ok"]
    for out in outputs:
        if out["result"] == "Ok":
            assert VALID_PREFIX.fullmatch(prefix_of(out)) and set(line_of(out)) == COLUMNS
    assert counts["valid"] + counts["rejected"] == counts["records"] == len(records)
    assert counts["valid"] == expected.count(None) == 4 and counts["failed"] == 0
    assert counts["reasons"] == {r: expected.count(r) for r in REASONS if r in expected}
    assert set(counts["reasons"]) == set(REASONS)
    assert [(rid, reason) for rid, reason, _, _ in seen] == [
        (r["recordId"], e) for r, e in zip(records, expected) if e is not None]
    assert {thing for _, _, thing, _ in seen} <= {None, THING}


def test_the_limit_comes_from_the_environment(monkeypatch):
    body = message(pad="x" * 600)
    monkeypatch.setenv("MAX_PAYLOAD_BYTES", "512")
    assert transform_batch([record(envelope(body))])[1]["reasons"] == {"oversized": 1}
    monkeypatch.delenv("MAX_PAYLOAD_BYTES")
    assert transform_batch([record(envelope(body))])[1]["valid"] == 1
    assert payload_limit({}) == DEFAULT_MAX_PAYLOAD_BYTES == 8192
    assert payload_limit({"MAX_PAYLOAD_BYTES": "131072"}) == 131072
    for bad in ("0", "-5", "8k"):
        with pytest.raises(ValueError):
            payload_limit({"MAX_PAYLOAD_BYTES": bad})


def test_empty_batch():
    assert transform_batch([], max_payload_bytes=10) == (
        [], {"records": 0, "valid": 0, "rejected": 0, "failed": 0, "reasons": {}})


# --- the real handler ---------------------------------------------------------------------------

@pytest.fixture
def logs():
    with captured_logs(handler.logger) as buffer:
        yield buffer


def firehose_event(records: list[dict]) -> dict:
    return {
        "invocationId": "4f1e4bd8-5a7a-4a4b-9d0e-3c2b1a0f9e8d",
        "deliveryStreamArn":
            "arn:aws:firehose:eu-west-1:123456789012:deliverystream/fleetwarden-dev-telemetry",
        "region": "eu-west-1",
        "records": records,
    }


def emf(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [doc for doc in map(json.loads, filter(None, out.splitlines())) if "_aws" in doc]


def test_handler_transforms_a_firehose_event_and_counts(context, logs, capsys):
    records, expected = mixed_batch()
    records.append({"recordId": "broken"})  # not from Firehose: ProcessingFailed, alone
    response = handler.lambda_handler(firehose_event(records), context)

    assert set(response) == {"records"}
    outputs = response["records"]
    assert [o["recordId"] for o in outputs] == [r["recordId"] for r in records]
    assert [o["result"] for o in outputs] == [
        "Ok" if e is None else "ProcessingFailed" for e in expected] + ["ProcessingFailed"]
    json.dumps(response)  # what the Lambda runtime does with it

    docs = emf(capsys)
    [total] = [d for d in docs if "TelemetryRecordsValid" in d]
    rejected = len(expected) - expected.count(None)
    assert total["TelemetryRecordsValid"] == [4.0]
    assert total["TelemetryRecordsRejected"] == [float(rejected)]
    assert total["TelemetryRecordsFailed"] == [1.0]
    assert total["service"] == handler.SERVICE
    assert total["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fleetwarden"
    assert total["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    by_reason = [d for d in docs if "reason" in d]
    assert len(by_reason) + 1 == len(docs)  # nothing else
    assert sorted(d["reason"] for d in by_reason) == sorted(REASONS)  # one emission per reason per batch
    for doc in by_reason:
        assert doc["TelemetryRecordsRejected"] == [float(expected.count(doc["reason"]))]
        assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "reason"]]
        assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fleetwarden"

    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    [summary] = [line for line in lines if line["message"] == "telemetry batch transformed"]
    assert (summary["records"], summary["valid"], summary["rejected"], summary["failed"]) == (
        len(records), 4, rejected, 1)
    assert summary["reasons"] == {r: expected.count(r) for r in REASONS}
    assert summary["invocation_id"] == "4f1e4bd8-5a7a-4a4b-9d0e-3c2b1a0f9e8d"
    warnings = [line for line in lines if line["message"] == "telemetry record rejected"]
    assert [(w["record_id"], w["reason"]) for w in warnings] == [
        (r["recordId"], e) for r, e in zip(records, expected) if e is not None]
    # The logger leaves out None: a thing only when known and safe.
    assert all(w["level"] == "WARNING" and w.get("thing") in (None, THING) for w in warnings)
    [failure] = [line for line in lines if line["message"] == "telemetry record processing failed"]
    assert failure["record_id"] == "broken" and failure["level"] == "ERROR"
    assert len(lines) == 1 + len(warnings) + 1

    text = logs.getvalue()
    assert SECRET not in text  # no payload content
    assert not any(r["data"] in text for r in records if "data" in r)  # no raw record either
    for unsafe in UNSAFE_THINGS[:4]:
        assert json.dumps(unsafe)[1:-1] not in text


def test_handler_with_only_valid_records_still_reports_zero_rejections(context, logs, capsys):
    response = handler.lambda_handler(firehose_event([record(envelope(), "only")]), context)
    assert [o["result"] for o in response["records"]] == ["Ok"]
    [total] = emf(capsys)
    assert total["TelemetryRecordsValid"] == [1.0]
    assert total["TelemetryRecordsRejected"] == total["TelemetryRecordsFailed"] == [0.0]
    assert not [line for line in logs.getvalue().splitlines() if '"WARNING"' in line]


def test_handler_uses_max_payload_bytes(context, logs, capsys, monkeypatch):
    monkeypatch.setenv("MAX_PAYLOAD_BYTES", "256")
    response = handler.lambda_handler(firehose_event([record(envelope(message(pad="x" * 300)))]), context)
    assert response["records"][0]["result"] == "ProcessingFailed"
    assert '"reason":"oversized"' in logs.getvalue()

    monkeypatch.setenv("MAX_PAYLOAD_BYTES", "lots")  # a bad setting: the default, and an error log
    response = handler.lambda_handler(firehose_event([record(envelope(message(pad="x" * 300)))]), context)
    assert VALID_PREFIX.fullmatch(prefix_of(response["records"][0]))
    assert "MAX_PAYLOAD_BYTES is not a positive integer" in logs.getvalue()


def test_handler_uses_telemetry_shards(context, logs, capsys, monkeypatch):
    monkeypatch.setenv("TELEMETRY_SHARDS", "1")
    response = handler.lambda_handler(firehose_event([record(envelope())]), context)
    assert response["records"][0]["metadata"]["partitionKeys"]["shard"] == "00"
    monkeypatch.setenv("TELEMETRY_SHARDS", "0")  # a bad setting: the default, and an error log
    response = handler.lambda_handler(firehose_event([record(envelope())]), context)
    assert response["records"][0]["metadata"]["partitionKeys"]["shard"] == f"{shard_of(THING, 16):02d}"
    assert "TELEMETRY_SHARDS is not from 1 to 100" in logs.getvalue()


@pytest.mark.parametrize("event", [None, "x", [], {}, {"records": "nope"}])
def test_handler_answers_a_malformed_event_without_raising(context, logs, capsys, event):
    assert handler.lambda_handler(event, context) == {"records": []}
    [doc] = emf(capsys)
    assert doc["TelemetryBatchesMalformed"] == [1.0]
    assert "not a Firehose transformation event" in logs.getvalue()
