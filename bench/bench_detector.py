"""The built-in detector: throughput of its fold, AWS calls for healthy traffic, and its cost.

Usage: .venv/bin/python bench/bench_detector.py [--records 500] [--devices 1000] [--runs 41]
                                                [--million 1000000] [--memory-mb 256]

(1) Records/second through defense.detector.windows.fold on one core: batches of --records realistic
    telemetry records (the telemetry rule's envelope, ~300-byte payloads, 10 metrics) from
    --devices devices, folded into a state that already holds every device (a mid-window
    batch); median of --runs runs, next to json.loads of the same envelopes as a yardstick.
(2) Database writes and SNS publishes per million healthy messages: --million records (every
    device well within its limits, windows rolling over as in production) through fold in
    batches, carrying the state like Lambda; publishes are the violations fold returns (the
    handler publishes nothing else), and the detector has no database client at all.
(3) Cost per million messages on the detector path with us-east-1 list prices (PRICES).
Targets: >= 100,000 records/s; 0 writes and 0 publishes per million healthy messages.
Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lambdas"))

from defense.detector.windows import FoldStats, Limits, fold  # noqa: E402
from timing import interleaved_medians  # noqa: E402

TARGET_RATE = 100_000
RECEIVED_AT = 1_700_000_000_000  # ms
WINDOW_SECONDS = 300
METRIC_NAMES = ("temperature_c", "humidity_pct", "pressure_hpa", "battery_v", "rssi_dbm", "snr_db",
                "uptime_s", "co2_ppm", "pm25_ugm3", "light_lux")
# The stage defaults (stacks/config.py).
LIMITS = Limits(max_messages=600, max_bytes=5_242_880, max_connects=10, max_disconnects=10,
                max_established_tcp=10, window_seconds=WINDOW_SECONDS, profile="fleetwarden-bench-builtin")

# us-east-1 list prices (USD), as published on the AWS pricing pages in 2025; re-check before use.
PRICES = {
    "iot_rule_action_per_million": 0.15,  # the extra Kinesis action on the telemetry rule
    "iot_rule_trigger_per_million": 0.15,  # a rule of its own (alert_count, shadow_count)
    "kinesis_put_unit_per_million": 0.014,  # provisioned mode: one unit per record of <= 25 KB
    "kinesis_shard_hour": 0.015,  # provisioned shard: 1,000 records/s or 1 MB/s in
    "lambda_per_million_requests": 0.20,
    "lambda_per_gb_second": 0.0000166667,  # x86
    "cloudwatch_logs_per_gb": 0.50,  # ingestion: the per-batch log line and EMF metrics
    # On-demand mode (what the stack deploys): per stream-hour, per GB in (each record rounded up to
    # 1 KB), per GB read by the Lambda poller.
    "kinesis_on_demand_stream_hour": 0.04,
    "kinesis_on_demand_in_per_gb": 0.08,
    "kinesis_on_demand_out_per_gb": 0.04,
}
SHARD_RECORDS_PER_SECOND = 1000
BATCHING_WINDOW_SECONDS = 5  # the event source's maximum batching window
PLATFORM_LOG_BYTES = 400  # Lambda's own START/END/REPORT lines per invocation


def telemetry_record(rng: random.Random, thing: str, seq: int) -> dict:
    """One Kinesis record as the telemetry rule's Kinesis action writes it."""
    metrics = {name: (round(rng.uniform(-50, 1000), 3) if i % 3 else rng.randint(0, 100_000))
               for i, name in enumerate(METRIC_NAMES)}
    body = json.dumps({"ts": RECEIVED_AT // 1000, "seq": seq, "metrics": metrics, "fw": "1.4.2",
                       "device": thing}).encode()
    envelope = {"payload": base64.b64encode(body).decode(), "thing": thing, "client_id": thing,
                "principal": "a1" * 32, "received_at": RECEIVED_AT + seq}
    data = base64.b64encode(json.dumps(envelope).encode()).decode()
    return {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": thing,
                        "sequenceNumber": f"{49590338271490256608559692538361571095921575989136588898 + seq}",
                        "data": data, "approximateArrivalTimestamp": (RECEIVED_AT + seq) / 1000},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventName": "aws:kinesis:record",
            "eventID": f"shardId-000000000000:{seq}", "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/bench"}


def window(start_s: int) -> dict:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {"start": time.strftime(fmt, time.gmtime(start_s)),
            "end": time.strftime(fmt, time.gmtime(start_s + WINDOW_SECONDS))}


def throughput(records: int, devices: int, runs: int) -> tuple[float, float, int]:
    """(fold seconds per batch, json.loads seconds per batch, payload mean bytes)."""
    rng = random.Random(7)
    pool = [telemetry_record(rng, f"sensor-{i % devices:05d}", i) for i in range(max(records, devices))]
    batch = pool[:records]
    win = window(RECEIVED_AT // 1000 // WINDOW_SECONDS * WINDOW_SECONDS)
    # Mid-window: every device already has an entry (the state Lambda would pass in).
    state, violations = fold({}, pool, LIMITS, win, now_ms=RECEIVED_AT)
    assert not violations and len(state["t"]) == devices
    envelopes = [base64.b64decode(r["kinesis"]["data"]).decode() for r in batch]

    def do_fold() -> None:
        fold(state, batch, LIMITS, win, now_ms=RECEIVED_AT)

    def do_loads() -> None:
        loads = json.loads
        for text in envelopes:
            loads(text)

    t_fold, t_loads = interleaved_medians([do_fold, do_loads], runs)
    payload = statistics.mean(len(base64.b64decode(json.loads(e)["payload"])) for e in envelopes)
    return t_fold, t_loads, round(payload)


def record_bytes(devices: int) -> float:
    """Mean size of a telemetry record as put on the stream (the rule's JSON envelope)."""
    rng = random.Random(3)
    records = [telemetry_record(rng, f"sensor-{i:05d}", i) for i in range(devices)]
    return statistics.mean(len(base64.b64decode(r["kinesis"]["data"])) for r in records)


def healthy_million(total: int, records: int, devices: int) -> dict:
    """`total` healthy messages through fold, in batches, windows rolling over every
    WINDOW_SECONDS of simulated time (each device sends once per second: 300 per window, half
    its limit of 600)."""
    rng = random.Random(11)
    pool = [telemetry_record(rng, f"sensor-{i:05d}", i) for i in range(devices)]
    per_second = devices  # one message per device per second
    state: dict = {}
    stats = FoldStats()
    violations = batches = windows_seen = 0
    start_s = RECEIVED_AT // 1000 // WINDOW_SECONDS * WINDOW_SECONDS
    current = None
    sent = 0
    began = time.perf_counter()
    while sent < total:
        n = min(records, total - sent)
        batch = [pool[(sent + i) % devices] for i in range(n)]
        now_s = start_s + sent // per_second
        win_start = now_s // WINDOW_SECONDS * WINDOW_SECONDS
        if win_start != current:  # Lambda's final invoke closes the window; the next starts empty
            current, state = win_start, {}
            windows_seen += 1
        state, new = fold(state, batch, LIMITS, window(win_start), now_ms=now_s * 1000, stats=stats)
        violations += len(new)
        batches += 1
        sent += n
    elapsed = time.perf_counter() - began
    return {"messages": sent, "batches": batches, "windows": windows_seen, "violations": violations,
            "publish_calls": 0 if not violations else math.ceil(violations / 10), "db_writes": 0,
            "malformed": stats.malformed_total, "seconds": elapsed, "max_tracked": len(state.get("t", {}))}


class _Context:
    function_name = "fleetwarden-bench-detector"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fleetwarden-bench-detector"
    aws_request_id = "00000000-0000-4000-8000-000000000000"


def handler_cost(records: int, devices: int, runs: int) -> tuple[float, int, int]:
    """The real handler on a healthy mid-window batch: (median ms per invocation, bytes it writes
    to the log per invocation, SNS clients built). Its output is captured, not printed."""
    import contextlib
    import io

    os.environ.update({"VIOLATION_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:bench", "PROFILE_NAME":
                       LIMITS.profile, "WINDOW_SECONDS": str(WINDOW_SECONDS), "MAX_MESSAGES": "600",
                       "MAX_BYTES": "5242880", "MAX_CONNECTS": "10", "MAX_DISCONNECTS": "10",
                       "MAX_ESTABLISHED_TCP": "10"})
    from defense.detector import handler

    rng = random.Random(5)
    pool = [telemetry_record(rng, f"sensor-{i % devices:05d}", i) for i in range(max(records, devices))]
    win = window(RECEIVED_AT // 1000 // WINDOW_SECONDS * WINDOW_SECONDS)
    state, _ = fold({}, pool, LIMITS, win, now_ms=RECEIVED_AT)
    event = {"Records": pool[:records], "window": win, "state": json.loads(json.dumps(state)),
             "shardId": "shardId-000000000000",
             "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/bench",
             "isFinalInvokeForWindow": False, "isWindowTerminatedEarly": False}
    buffer = io.StringIO()
    times = []
    previous = handler.logger.registered_handler.setStream(buffer)
    try:
        with contextlib.redirect_stdout(buffer):
            for _ in range(runs):
                start = time.perf_counter()
                handler.lambda_handler(event, _Context())
                times.append(time.perf_counter() - start)
    finally:
        handler.logger.registered_handler.setStream(previous)
    built = handler._sns.cache_info().misses
    return statistics.median(times) * 1e3, len(buffer.getvalue().encode()) // runs, built


def cost_per_million(batch_records: int, ms_per_invocation: float, log_bytes: int,
                     memory_mb: int) -> list[tuple[str, float, str]]:
    """The detector path's cost lines per million messages (at full shard use for shard hours)."""
    invocations = 1e6 / batch_records
    seconds = invocations * ms_per_invocation / 1000
    return [
        ("IoT rule action (telemetry rule -> Kinesis)", 1e6 * PRICES["iot_rule_action_per_million"] / 1e6,
         "$0.15 per million actions"),
        ("Kinesis PUT payload units", 1e6 * PRICES["kinesis_put_unit_per_million"] / 1e6,
         "one 25 KB unit per message"),
        ("Kinesis shard hours (shard full: 1,000 msg/s)",
         PRICES["kinesis_shard_hour"] * 1e6 / (SHARD_RECORDS_PER_SECOND * 3600), "$0.015 per shard-hour"),
        ("Lambda requests", invocations * PRICES["lambda_per_million_requests"] / 1e6,
         f"{invocations:,.0f} invocations of {batch_records} records"),
        ("Lambda duration", seconds * memory_mb / 1024 * PRICES["lambda_per_gb_second"],
         f"{ms_per_invocation:.1f} ms (measured handler) x {memory_mb} MB per invocation"),
        ("CloudWatch Logs (batch line + EMF)",
         invocations * (log_bytes + PLATFORM_LOG_BYTES) / 1024 ** 3 * PRICES["cloudwatch_logs_per_gb"],
         f"{log_bytes} B measured + ~{PLATFORM_LOG_BYTES} B platform lines per invocation"),
        ("DynamoDB", 0.0, "none: the detector has no database"),
        ("SNS", 0.0, "publishes only violations"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--million", type=int, default=1_000_000)
    parser.add_argument("--memory-mb", type=int, default=256)
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}")

    t_fold, t_loads, payload = throughput(args.records, args.devices, args.runs)
    rate = args.records / t_fold
    print(f"(1) fold: {args.records}-record batches from {args.devices:,} devices (payload ~{payload} B, "
          f"{len(METRIC_NAMES)} metrics), state holding every device, median of {args.runs} runs")
    print(f"    fold: {t_fold * 1e3:.2f} ms/batch, {rate:,.0f} records/s (target >= {TARGET_RATE:,}): "
          f"{'ok' if rate >= TARGET_RATE else 'UNDER TARGET'}")
    print(f"    json.loads of the same envelopes (yardstick): {t_loads * 1e3:.2f} ms/batch, "
          f"{args.records / t_loads:,.0f} records/s; fold / loads = {t_loads / t_fold:.2f}")

    healthy = healthy_million(args.million, args.records, args.devices)
    per_million = 1e6 / healthy["messages"]
    print(f"(2) {healthy['messages']:,} healthy messages ({args.devices:,} devices at 1 msg/s each, 300 per "
          f"{WINDOW_SECONDS}-s window against a limit of {LIMITS.max_messages})")
    print(f"    in {healthy['batches']:,} batches over {healthy['windows']} windows, "
          f"{healthy['seconds']:.1f} s")
    print(f"    violations: {healthy['violations']}, SNS publishes per million: "
          f"{healthy['publish_calls'] * per_million:.0f}, database writes per million: "
          f"{healthy['db_writes'] * per_million:.0f} (target 0 and 0): "
          f"{'ok' if healthy['publish_calls'] == 0 and healthy['db_writes'] == 0 else 'MISSED'}")

    ms, log_bytes, sns_built = handler_cost(args.records, args.devices, 21)
    print(f"    the real handler on a healthy batch: {ms:.2f} ms/invocation, {log_bytes} B of log/EMF "
          f"output, SNS clients built: {sns_built}")
    lines = cost_per_million(args.records, ms, log_bytes, args.memory_mb)
    total = sum(cost for _, cost, _ in lines)
    print(f"(3) cost per million messages on the detector path (us-east-1 list prices, {args.records}-record "
          f"batches, {args.memory_mb} MB, a full shard):")
    for name, cost, note in lines:
        print(f"    {name:<46} ${cost:8.5f}   {note}")
    print(f"    {'total':<46} ${total:8.5f}")
    size = record_bytes(args.devices)
    gb_in = 1e6 * math.ceil(size / 1024) * 1024 / 1024 ** 3
    gb_out = 1e6 * size / 1024 ** 3
    on_demand_in = gb_in * PRICES["kinesis_on_demand_in_per_gb"]
    on_demand_out = gb_out * PRICES["kinesis_on_demand_out_per_gb"]
    on_demand_hour = PRICES["kinesis_on_demand_stream_hour"] * 1e6 / (SHARD_RECORDS_PER_SECOND * 3600)
    provisioned = lines[1][1] + lines[2][1]
    print(f"    Kinesis ON-DEMAND instead (the stack's mode; records ~{size:.0f} B, billed as 1 KB in): "
          f"in ${on_demand_in:.4f} + out ${on_demand_out:.4f} + stream-hour ${on_demand_hour:.4f} at "
          f"1,000 msg/s")
    on_demand = on_demand_in + on_demand_out + on_demand_hour
    print(f"      = ${on_demand:.4f} per million instead of ${provisioned:.4f} provisioned "
          f"-> total ~${total - provisioned + on_demand:.3f} per million")
    print("    A shard costs the same per hour whatever it carries, and a quiet shard gives smaller batches "
          f"(a {BATCHING_WINDOW_SECONDS}-s batching window):")
    for rate_per_s in (1000, 100, 10, 1):
        batch = max(1, min(args.records, rate_per_s * BATCHING_WINDOW_SECONDS))
        shard = PRICES["kinesis_shard_hour"] * 1e6 / (rate_per_s * 3600)
        requests = 1e6 / batch * PRICES["lambda_per_million_requests"] / 1e6
        logs = 1e6 / batch * (log_bytes + PLATFORM_LOG_BYTES) / 1024 ** 3 * PRICES["cloudwatch_logs_per_gb"]
        fixed = 1e6 * (PRICES["iot_rule_action_per_million"] + PRICES["kinesis_put_unit_per_million"]) / 1e6
        print(f"      {rate_per_s:>5} msg/s on one shard: batches of ~{batch}, shard ${shard:.4f} + Lambda "
              f"requests ${requests:.4f} + logs ${logs:.4f} -> total ~${fixed + shard + requests + logs:.3f} "
              "per million")
    print("    Anomalies add one SNS publish ($0.50 per million) per violation. The authorization-failure "
          "path costs nothing\n    for healthy traffic (its subscription filter passes failures only): one "
          "DynamoDB UpdateItem per subject per delivery,\n    one ListThingPrincipals per certificate "
          "crossing a limit. Refused connections (connect_failed) reach the stream only when they happen.")
    other = PRICES["iot_rule_trigger_per_million"] + PRICES["iot_rule_action_per_million"]
    print(f"    Alerts and shadow requests (every message counts): their own rules, ${other:.2f} per "
          "million of THOSE messages\n    (trigger + Kinesis action) plus the same Kinesis and Lambda "
          "share as telemetry; telemetry's cost is unchanged.")
    return 0 if rate >= TARGET_RATE and healthy["publish_calls"] == 0 and healthy["db_writes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
