"""Throughput of the telemetry Firehose transform on one core.

Usage: .venv/bin/python bench/bench_transform.py [--records 500] [--runs 41] [--against DIR]
Times transform_batch over one batch of realistic valid records (~300-byte payloads, 10 metrics),
and json.loads over the same payloads once base64-decoded (bytes) as the yardstick; the runs of
each are interleaved. Prints the median of --runs runs as records/second, and the ratio
transform ÷ json.loads(bytes) records/s; the ratio to json.loads of the payloads already decoded
to str (json's fastest input) is printed too, for information.
Targets: >= 50,000 records/s and ratio >= 0.25. Exits non-zero when a target is missed.
--against DIR also times transform_batch of another revision's lambdas/ directory (e.g. from
`git archive <rev> lambdas | tar -x -C /tmp/rev`) in the same interleaved runs, for a fair
before/after comparison on a busy machine (for information: the targets apply to this tree).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lambdas"))

from telemetry.transform.aggregates import BatchAggregates  # noqa: E402
from telemetry.transform.transform import transform_batch  # noqa: E402
from timing import interleaved_medians  # noqa: E402

TARGET_RATE = 50_000
TARGET_RATIO = 0.25
RECEIVED_AT = 1_700_000_000_000  # ms
METRIC_NAMES = ("temperature_c", "humidity_pct", "pressure_hpa", "battery_v", "rssi_dbm", "snr_db",
                "uptime_s", "co2_ppm", "pm25_ugm3", "light_lux")


def payload(rng: random.Random, thing: str, seq: int) -> bytes:
    """One device message: ~300 bytes of JSON, 10 metrics (ints and floats), and a little extra."""
    metrics = {name: (round(rng.uniform(-50, 1000), 3) if i % 3 else rng.randint(0, 100_000))
               for i, name in enumerate(METRIC_NAMES)}
    doc = {"ts": RECEIVED_AT // 1000 - rng.randint(0, 5), "seq": seq, "metrics": metrics,
           "fw": "1.4.2", "device": thing}
    return json.dumps(doc).encode()


def firehose_records(n: int, seed: int = 7) -> tuple[list[dict], list[bytes]]:
    """n Firehose input records as the telemetry rule produces them, and their payloads."""
    rng = random.Random(seed)
    records, payloads = [], []
    for i in range(n):
        thing = f"sensor-{i % 50:04d}"
        body = payload(rng, thing, i)
        envelope = {"payload": base64.b64encode(body).decode(), "thing": thing, "client_id": thing,
                    "principal": "a1" * 32, "received_at": RECEIVED_AT + i}
        records.append({"recordId": f"{i:056d}", "approximateArrivalTimestamp": RECEIVED_AT + i + 40,
                        "data": base64.b64encode(json.dumps(envelope).encode()).decode()})
        payloads.append(body)
    return records, payloads


def load_transform_batch(lambdas: Path):
    """transform_batch from another revision's lambdas/ (its telemetry module, under another name)."""
    path = lambdas / "telemetry" / "transform" / "transform.py"
    spec = importlib.util.spec_from_file_location("bench_other_transform", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.transform_batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="another revision's lambdas/ directory, timed in the same runs")
    args = parser.parse_args()

    records, payloads = firehose_records(args.records)
    texts = [p.decode() for p in payloads]
    outputs, counts = transform_batch(records, max_payload_bytes=8192)
    assert counts["valid"] == args.records, counts  # measuring the valid path, not rejections

    def transform() -> None:
        transform_batch(records, max_payload_bytes=8192)

    def transform_aggregating() -> None:  # as the handler runs it when the detector is fed
        aggregates = BatchAggregates()
        transform_batch(records, max_payload_bytes=8192, aggregates=aggregates)
        aggregates.records()

    def loads_bytes() -> None:  # the decoded payloads, as they come out of base64
        loads = json.loads
        for body in payloads:
            loads(body)

    def loads_text() -> None:  # the same, already decoded to str (json.loads' fastest input)
        loads = json.loads
        for text in texts:
            loads(text)

    timed = [transform, loads_bytes, loads_text, transform_aggregating]
    if args.against:
        other_batch = load_transform_batch(args.against.resolve())
        other_outputs, other_counts = other_batch(records, max_payload_bytes=8192)
        assert other_counts == counts, other_counts
        same = other_outputs == outputs

        def other() -> None:
            other_batch(records, max_payload_bytes=8192)

        timed.append(other)
    t_transform, t_bytes, t_text, t_aggregating, *t_other = interleaved_medians(timed, args.runs)
    rate = args.records / t_transform
    rate_bytes = args.records / t_bytes
    rate_text = args.records / t_text
    ratio = rate / rate_bytes
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"batch: {args.records} records, payload {min(map(len, payloads))}-{max(map(len, payloads))} bytes "
          f"(mean {statistics.mean(map(len, payloads)):.0f}), {len(METRIC_NAMES)} metrics, "
          f"median of {args.runs} runs")
    print(f"transform_batch: {t_transform * 1e3:.2f} ms/batch, {rate:,.0f} records/s "
          f"(target >= {TARGET_RATE:,}): {'ok' if rate >= TARGET_RATE else 'UNDER TARGET'}")
    print(f"transform_batch + detector aggregates: {t_aggregating * 1e3:.2f} ms/batch, "
          f"{args.records / t_aggregating:,.0f} records/s (for information)")
    print(f"json.loads of the decoded payloads (bytes): {t_bytes * 1e3:.2f} ms/batch, "
          f"{rate_bytes:,.0f} records/s")
    print(f"json.loads of the payloads as str: {t_text * 1e3:.2f} ms/batch, {rate_text:,.0f} records/s")
    print(f"ratio transform / json.loads(bytes): {ratio:.3f} (target >= {TARGET_RATIO}): "
          f"{'ok' if ratio >= TARGET_RATIO else 'UNDER TARGET'}")
    print(f"ratio transform / json.loads(str): {rate / rate_text:.3f} (for information)")
    if t_other:
        print(f"transform_batch of {args.against}: {t_other[0] * 1e3:.2f} ms/batch, "
              f"{args.records / t_other[0]:,.0f} records/s, ratio {t_bytes / t_other[0]:.3f}; "
              f"this tree is {t_other[0] / t_transform:.3f}x as fast; outputs "
              f"{'identical' if same else 'differ'}")
    return 0 if rate >= TARGET_RATE and ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
