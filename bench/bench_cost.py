"""Cost per million telemetry messages, detection included, at the corners of the traffic space
(1 message/s .. 1 message/min per device, fleets of 1,000 .. 1,000,000 devices), side by side with a
naive pipeline (broker messaging + one rule per message writing one S3 object).

Usage: .venv/bin/python bench/bench_cost.py [--message-bytes 1024] [--transform-ms-per-record 0.025]

Both telemetry formats are priced, each from its own synthesis: the default (telemetry_format json,
GZIP JSON lines, the one that meets the goal) and telemetry_format parquet (Firehose record format
conversion, billed per 5 KB-rounded record). The exit status is the default's.

Everything the bill depends on is read from the synthesised dev stacks, not assumed: rule actions
and Basic Ingest, Firehose buffering, dynamic partitioning, record format conversion, the shard
count, the transform's processing buffer and memory, whether the transform feeds the detector, and
the detector's event-source batch size and memory. Prices are AWS us-east-1 list prices (PRICES);
re-check them before relying on the result. Counted per message: what grows with traffic. The
observation stream's hourly charge is the detector's fixed cost (presence and reports use it too)
and is shown apart, per month.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# us-east-1 list prices (USD), as published on the AWS pricing pages in 2025.
PRICES = {
    "iot_message_per_million": 1.00,        # messaging, billed in 5 KB increments (not for Basic Ingest)
    "iot_rule_trigger_per_million": 0.15,
    "iot_rule_action_per_million": 0.15,
    "firehose_ingest_per_gb": 0.029,        # Direct PUT, each record rounded up to 5 KB
    "firehose_conversion_per_gb": 0.018,    # format conversion, "per GB ingested in 5 KB increments"
    "firehose_dynamic_partitioning_per_gb": 0.020,
    "firehose_dynamic_partitioning_per_1000_objects": 0.005,
    "s3_put_per_1000": 0.005,
    "lambda_per_million_requests": 0.20,
    "lambda_per_gb_second": 0.0000166667,
    # Kinesis on-demand: data in / out per GB; each record is billed as at least 1 KB (worst case:
    # the pricing page rounds on-demand records up to the nearest KB), and a stream-hour.
    "kinesis_on_demand_in_per_gb": 0.08,
    "kinesis_on_demand_out_per_gb": 0.04,
    "kinesis_on_demand_stream_hour": 0.04,
    "dynamodb_write_per_million": 1.25,     # on-demand write request units
}
MESSAGES = 1_000_000
GB = 1024 ** 3
KB5 = 5 * 1024
CORNERS = [(1_000, 60.0), (1_000, 1.0), (1_000_000, 60.0), (1_000_000, 1.0)]  # (devices, msg/min each)
# The rule's envelope around the base64 payload: thing, client_id, principal (64 hex), received_at.
ENVELOPE_OVERHEAD = 200
AGGREGATE_BYTES = 150  # one detector aggregate as JSON
PUT_RECORDS_MS = 30  # one PutRecords call per transform invocation (in-region, assumed)
DETECTOR_MS_PER_RECORD = 0.006  # bench_detector.py: ~6 us per record folded


def synthesised_pipeline(overrides: dict | None = None) -> dict:
    from tests.infra.synth import synthesise

    with tempfile.TemporaryDirectory() as outdir:
        s = synthesise("dev", Path(outdir), overrides)
        ingest = s.template_json(s.stacks.ingest)
        defense = s.template_json(s.stacks.defense)
        identity = json.dumps(s.template_json(s.stacks.identity))
    resources = ingest["Resources"]
    rule = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::IoT::TopicRule"
                and r["Properties"]["RuleName"].endswith("_telemetry"))
    stream = next(r["Properties"] for r in resources.values() if r["Type"] == "AWS::KinesisFirehose::DeliveryStream")
    transform = next(r["Properties"] for k, r in resources.items()
                     if r["Type"] == "AWS::Lambda::Function" and k.startswith("TelemetryTransform"))
    s3_config = stream["ExtendedS3DestinationConfiguration"]
    processor = {p["ParameterName"]: p["ParameterValue"]
                 for p in s3_config["ProcessingConfiguration"]["Processors"][0]["Parameters"]}
    env = transform["Environment"]["Variables"]
    mapping = next((r["Properties"] for r in defense["Resources"].values()
                    if r["Type"] == "AWS::Lambda::EventSourceMapping"), None)
    detector = next((r["Properties"] for k, r in defense["Resources"].items()
                     if r["Type"] == "AWS::Lambda::Function" and k.startswith("DetectorFunction")), None)
    kinesis_streams = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Kinesis::Stream"]
    conversion = s3_config.get("DataFormatConversionConfiguration", {})
    return {
        "rule_actions": len(rule["TopicRulePayload"]["Actions"]),
        "basic_ingest": f"$aws/rules/{rule['RuleName']}/" in identity,
        "dynamic_partitioning": s3_config["DynamicPartitioningConfiguration"]["Enabled"],
        "parquet": bool(conversion.get("Enabled")),
        "buffer_seconds": s3_config["BufferingHints"]["IntervalInSeconds"],
        "buffer_mb": s3_config["BufferingHints"]["SizeInMBs"],
        "processing_seconds": int(processor["BufferIntervalInSeconds"]),
        "processing_mb": float(processor["BufferSizeInMBs"]),
        "shards": int(env["TELEMETRY_SHARDS"]),
        "transform_memory_mb": transform["MemorySize"],
        "transform_feeds_detector": "OBSERVATION_STREAM" in env,
        "detector_batch": mapping["BatchSize"] if mapping else None,
        "detector_memory_mb": detector["MemorySize"] if detector else None,
        "sent_batches_table": "BATCH_TABLE" in env,
        "stream_on_demand": bool(kinesis_streams) and all(
            k.get("StreamModeDetails", {}).get("StreamMode") == "ON_DEMAND" for k in kinesis_streams),
    }


def _distinct(devices: int, draws: float) -> float:
    """Expected distinct devices among `draws` messages of a fleet sending evenly."""
    return devices * -math.expm1(draws * math.log1p(-1 / devices)) if devices > 1 else 1.0


def fleetwarden_cost(p: dict, message_bytes: int, devices: int, per_device_minute: float,
                     transform_ms_per_record: float) -> dict:
    rate = devices * per_device_minute / 60  # messages/s
    seconds = MESSAGES / rate  # to receive a million
    record_bytes = math.ceil(message_bytes / 3) * 4 + ENVELOPE_OVERHEAD  # base64 payload in the envelope
    billed_gb = MESSAGES * max(KB5, math.ceil(record_bytes / KB5) * KB5) / GB
    data_gb = MESSAGES * message_bytes / GB

    rules = MESSAGES * (PRICES["iot_rule_trigger_per_million"]
                        + p["rule_actions"] * PRICES["iot_rule_action_per_million"]) / 1e6
    messaging = 0.0 if p["basic_ingest"] else MESSAGES * PRICES["iot_message_per_million"] / 1e6
    ingest = billed_gb * PRICES["firehose_ingest_per_gb"]
    conversion = billed_gb * PRICES["firehose_conversion_per_gb"] if p["parquet"] else 0.0

    # Objects: each of the hour's `shards` partitions flushes at its size or its interval, and an
    # hour boundary inside a buffer splits it once more.
    per_partition_bytes_s = rate * message_bytes / p["shards"]
    flushes_per_partition_s = max(1 / p["buffer_seconds"], per_partition_bytes_s / (p["buffer_mb"] * 2**20))
    objects = p["shards"] * seconds * flushes_per_partition_s * (1 + min(p["buffer_seconds"], 3600) / 3600)
    partitioning = 0.0
    if p["dynamic_partitioning"]:
        partitioning = (data_gb * PRICES["firehose_dynamic_partitioning_per_gb"]
                        + objects / 1000 * PRICES["firehose_dynamic_partitioning_per_1000_objects"])
    s3_puts = objects / 1000 * PRICES["s3_put_per_1000"]

    # The transform: a batch is what arrives in the processing interval, at most its size.
    per_batch = max(1.0, min(p["processing_mb"] * 2**20 / record_bytes, rate * max(p["processing_seconds"], 1)))
    invocations = MESSAGES / per_batch
    put_ms = PUT_RECORDS_MS if p["transform_feeds_detector"] else 0
    transform = (invocations * PRICES["lambda_per_million_requests"] / 1e6
                 + (MESSAGES * transform_ms_per_record + invocations * put_ms) / 1000
                 * p["transform_memory_mb"] / 1024 * PRICES["lambda_per_gb_second"])

    # Detection: one aggregate per distinct connection per batch, packed into one Kinesis record per
    # shard (on-demand: at least 4 shards, one more per MiB/s written; each record billed as >= 1 KB),
    # to the detector function. (With the former tap: one rule action + one Kinesis record per message.)
    distinct = _distinct(devices, per_batch)
    aggregates = invocations * distinct if p["transform_feeds_detector"] else 0.0
    stream_shards = max(4, math.ceil(aggregates / seconds * AGGREGATE_BYTES / 2**20)) if aggregates else 0
    kinesis_records = invocations * min(distinct, stream_shards) if aggregates else 0.0
    kinesis_gb = max(aggregates * AGGREGATE_BYTES, kinesis_records * 1024) / GB
    detection = 0.0
    if aggregates:
        detector_invocations = kinesis_records / p["detector_batch"]
        # Once per batch: an idempotency record written in progress, then completed (2 writes).
        once = invocations * 2 * PRICES["dynamodb_write_per_million"] / 1e6 if p["sent_batches_table"] else 0.0
        detection = (once + kinesis_gb * (PRICES["kinesis_on_demand_in_per_gb"]
                                          + PRICES["kinesis_on_demand_out_per_gb"])
                     + detector_invocations * PRICES["lambda_per_million_requests"] / 1e6
                     + aggregates * DETECTOR_MS_PER_RECORD / 1000 * p["detector_memory_mb"] / 1024
                     * PRICES["lambda_per_gb_second"])
    items = {"IoT messaging": messaging, "IoT rule (trigger + actions)": rules,
             "Firehose ingestion (5 KB records)": ingest, "Parquet conversion (5 KB records)": conversion,
             "Dynamic partitioning": partitioning, "S3 PUTs": s3_puts, "Transform Lambda": transform,
             "Detection (aggregates, Kinesis, detector)": detection}
    return {**items, "total": sum(items.values()), "objects": objects, "aggregates": aggregates,
            "kinesis_records": kinesis_records}


def naive_cost() -> dict:
    items = {"IoT messaging": MESSAGES * PRICES["iot_message_per_million"] / 1e6,
             "IoT rules (trigger + S3 action)": MESSAGES * (PRICES["iot_rule_trigger_per_million"]
                                                            + PRICES["iot_rule_action_per_million"]) / 1e6,
             "S3 PUTs (one per message)": MESSAGES / 1000 * PRICES["s3_put_per_1000"]}
    return {**items, "total": sum(items.values())}


def fixed_monthly(p: dict) -> float:
    return 730 * PRICES["kinesis_on_demand_stream_hour"] if p["stream_on_demand"] else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--message-bytes", type=int, default=1024)
    parser.add_argument("--transform-ms-per-record", type=float, default=0.025,
                        help="from bench_transform.py (one core), aggregation included")
    parser.add_argument("--target", type=float, default=0.50)
    args = parser.parse_args()
    pipeline = synthesised_pipeline()
    parquet = synthesised_pipeline({"telemetry_format": "parquet"})
    print("synthesised pipeline (default):", json.dumps(pipeline))
    naive = naive_cost()
    print(f"\nper million {args.message_bytes}-byte messages, detection included "
          f"(naive: ${naive['total']:.3f}, no detection)\n")
    print("| devices | msg/device | Fleetwarden json (default) | telemetry_format parquet | naive | objects "
          "| aggregates | Kinesis records | parquet's conversion | of which detection |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = {"json (default)": 0.0, "parquet": 0.0}
    for devices, rate in CORNERS:
        ours = fleetwarden_cost(pipeline, args.message_bytes, devices, rate, args.transform_ms_per_record)
        columnar = fleetwarden_cost(parquet, args.message_bytes, devices, rate, args.transform_ms_per_record)
        worst["json (default)"] = max(worst["json (default)"], ours["total"])
        worst["parquet"] = max(worst["parquet"], columnar["total"])
        label = "1/s" if rate == 60 else "1/min" if rate == 1 else f"{rate:g}/min"
        print(f"| {devices:,} | {label} | ${ours['total']:.3f} | ${columnar['total']:.3f} | ${naive['total']:.2f} "
              f"| {ours['objects']:,.0f} | {ours['aggregates']:,.0f} | {ours['kinesis_records']:,.0f} "
              f"| ${columnar['Parquet conversion (5 KB records)']:.3f} "
              f"| ${ours['Detection (aggregates, Kinesis, detector)']:.3f} |")
    print("\nbreakdown at the dearest corner (default):")
    dearest = max(CORNERS, key=lambda c: fleetwarden_cost(pipeline, args.message_bytes, *c,
                                                            args.transform_ms_per_record)["total"])
    ours = fleetwarden_cost(pipeline, args.message_bytes, *dearest, args.transform_ms_per_record)
    for item, value in ours.items():
        if item not in ("total", "objects", "aggregates", "kinesis_records"):
            print(f"    {item:<44} ${value:.4f}")
    print(f"fixed: observation stream ${fixed_monthly(pipeline):.2f}/month (on-demand stream-hours)")
    for name, value in worst.items():
        print(f"target <= ${args.target:.2f} at every corner, {name}: "
              f"{'ok' if value <= args.target else 'MISSED'} (dearest ${value:.3f})")
    return 0 if worst["json (default)"] <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
