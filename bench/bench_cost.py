"""Cost per million telemetry messages (<= 1 KB) through the synthesised telemetry pipeline,
next to a naive pipeline (broker messaging + one rule per message writing one S3 object).

Usage: .venv/bin/python bench/bench_cost.py [--message-bytes 1024] [--devices 1000]

The pipeline is read from the synthesised dev IngestStack (rule actions, Basic Ingest topic,
Firehose buffering, dynamic partitioning, transform memory), not assumed. Prices are AWS list
prices for us-east-1 (see PRICES); re-check them before relying on the result.
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
    "iot_message_per_million": 1.00,        # messaging, billed in 5 KB increments
    "iot_rule_trigger_per_million": 0.15,
    "iot_rule_action_per_million": 0.15,
    "firehose_ingest_per_gb": 0.029,        # Direct PUT, each record rounded up to 5 KB
    "firehose_dynamic_partitioning_per_gb": 0.020,
    "firehose_dynamic_partitioning_per_1000_objects": 0.005,
    "s3_put_per_1000": 0.005,
    "lambda_per_million_requests": 0.20,
    "lambda_per_gb_second": 0.0000166667,
}
MESSAGES = 1_000_000
GB = 1024 ** 3


def synthesised_telemetry_pipeline() -> dict:
    from tests.infra.synth import synthesise

    with tempfile.TemporaryDirectory() as outdir:
        s = synthesise("dev", Path(outdir))
        template = s.template_json(s.stacks.ingest)
        identity = json.dumps(s.template_json(s.stacks.identity))
    resources = template["Resources"].values()
    rule = next(r["Properties"] for r in resources if r["Type"] == "AWS::IoT::TopicRule"
                and r["Properties"]["RuleName"].endswith("_telemetry"))
    stream = next(r["Properties"] for r in resources if r["Type"] == "AWS::KinesisFirehose::DeliveryStream")
    transform = next(r["Properties"] for k, r in template["Resources"].items()
                     if r["Type"] == "AWS::Lambda::Function" and k.startswith("TelemetryTransform"))
    s3_config = stream["ExtendedS3DestinationConfiguration"]
    return {
        "rule_actions": len(rule["TopicRulePayload"]["Actions"]),
        "basic_ingest": f"$aws/rules/{rule['RuleName']}/" in identity,
        "dynamic_partitioning": s3_config["DynamicPartitioningConfiguration"]["Enabled"],
        "buffer_seconds": s3_config["BufferingHints"]["IntervalInSeconds"],
        "buffer_mb": s3_config["BufferingHints"]["SizeInMBs"],
        "transform_memory_mb": transform["MemorySize"],
    }


def fleetwarden_cost(p: dict, message_bytes: int, devices: int, per_device_minute: float,
                     transform_ms_per_record: float) -> dict:
    rules = MESSAGES * (PRICES["iot_rule_trigger_per_million"]
                        + p["rule_actions"] * PRICES["iot_rule_action_per_million"]) / 1e6
    messaging = 0.0 if p["basic_ingest"] else MESSAGES * PRICES["iot_message_per_million"] / 1e6
    billed_record = max(5 * 1024, math.ceil(message_bytes / (5 * 1024)) * 5 * 1024)
    firehose = MESSAGES * billed_record / GB * PRICES["firehose_ingest_per_gb"]
    # Objects written: one per device partition (thing=...) per buffer flush while a million
    # messages arrive. Sparse senders mean more, smaller objects: this is the cost driver.
    minutes = MESSAGES / (devices * per_device_minute)
    flushes = max(1.0, minutes * 60 / p["buffer_seconds"])
    objects = devices * flushes
    partitioning = 0.0
    if p["dynamic_partitioning"]:
        partitioning = (MESSAGES * message_bytes / GB * PRICES["firehose_dynamic_partitioning_per_gb"]
                        + objects / 1000 * PRICES["firehose_dynamic_partitioning_per_1000_objects"])
    s3_puts = objects / 1000 * PRICES["s3_put_per_1000"]
    invocations = MESSAGES * message_bytes / (1024 * 1024)  # transform buffer: 1 MB per invocation
    lambda_cost = (invocations * PRICES["lambda_per_million_requests"] / 1e6
                   + MESSAGES * transform_ms_per_record / 1000 * p["transform_memory_mb"] / 1024
                   * PRICES["lambda_per_gb_second"])
    items = {"IoT messaging": messaging, "IoT rules (trigger + actions)": rules,
             "Firehose ingestion (5 KB rounding)": firehose, "Dynamic partitioning": partitioning,
             "S3 PUTs": s3_puts, "Transform Lambda": lambda_cost}
    return {**items, "total": sum(items.values()), "objects": objects}


def naive_cost() -> dict:
    items = {"IoT messaging": MESSAGES * PRICES["iot_message_per_million"] / 1e6,
             "IoT rules (trigger + S3 action)": MESSAGES * (PRICES["iot_rule_trigger_per_million"]
                                                            + PRICES["iot_rule_action_per_million"]) / 1e6,
             "S3 PUTs (one per message)": MESSAGES / 1000 * PRICES["s3_put_per_1000"]}
    return {**items, "total": sum(items.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--message-bytes", type=int, default=1024)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--per-device-minute", type=float, nargs="+", default=[60.0, 6.0, 1.0],
                        help="messages per device per minute (traffic profiles to price)")
    parser.add_argument("--transform-ms-per-record", type=float, default=0.02,
                        help="from bench_transform.py (one core)")
    args = parser.parse_args()
    pipeline = synthesised_telemetry_pipeline()
    print("synthesised pipeline:", json.dumps(pipeline))
    naive = naive_cost()
    print(f"\nper million {args.message_bytes}-byte messages, {args.devices} devices")
    print(f"  naive rule -> S3 per message: ${naive['total']:.3f}")
    for item, value in naive.items():
        if item != "total":
            print(f"      {item:<38} ${value:.4f}")
    headline = None
    for rate in args.per_device_minute:
        ours = fleetwarden_cost(pipeline, args.message_bytes, args.devices, rate,
                                args.transform_ms_per_record)
        headline = headline or ours
        print(f"  Fleetwarden at {rate:g} msg/device/min: ${ours['total']:.3f} "
              f"({ours['objects']:.0f} objects; {naive['total'] / ours['total']:.1f}x cheaper than naive)")
        for item, value in ours.items():
            if item not in ("total", "objects"):
                print(f"      {item:<38} ${value:.4f}")
    print(f"  target <= $0.50 at {args.per_device_minute[0]:g} msg/device/min: "
          f"{'ok' if headline['total'] <= 0.50 else 'OVER'}")
    return 0 if headline["total"] <= 0.50 else 1


if __name__ == "__main__":
    sys.exit(main())
