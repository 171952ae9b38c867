"""Containment latency and AWS call budget of the auto-response function, under moto (in-process).

Usage: .venv/bin/python bench/bench_containment.py [--runs 20]
Each run registers a fresh device (thing + one ACTIVE certificate) and hands the handler an SNS
event carrying the Device Defender sample violation (thing name and violation id changed per run).
Measured per run:
  * contained ms: from the call into lambda_handler to the moment UpdateCertificate returned, i.e.
    the thing is in the quarantine group and its certificate INACTIVE (checked after the run);
  * handler ms: the whole invocation (including notifying ops and the final incident write);
  * AWS API calls, counted with botocore `before-call` hooks on the handler's own clients, split
    IoT+SNS vs DynamoDB.
The first (cold) invocation imports the containment logic (pydantic, boto3 parts the bench has not
loaded yet) and builds the clients, and is reported apart; the median is over --runs
warm runs. Then a redelivery of the same message (duplicate) and a configuration without an exempt
group are counted too. moto answers in-process, so the times measure the function's own work
plus moto, not network round trips (each real call adds ~5-30 ms in-region).
DeleteConnection (iot-data, answered at the client boundary: moto lacks it) counts as an IoT call, and
the signed shutdown job adds CreateJob (IoT) and KMS Sign (GetPublicKey once per container, in the
cold run; none when SIGNING_KEY_ID is set, as the stack sets it). Target: <= 8 AWS calls (IoT + SNS + KMS) per contained device. Exits non-zero when missed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lambdas"))

REGION = "eu-west-1"
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "auto-response", "POWERTOOLS_METRICS_NAMESPACE": "Fleetwarden",
}.items():
    os.environ[key] = value

import boto3  # noqa: E402
from botocore.awsrequest import AWSResponse  # noqa: E402
from defense.auto_response import handler  # noqa: E402
from moto import mock_aws  # noqa: E402

SAMPLE = json.loads((ROOT / "tests" / "defense" / "events" / "defender-violation-in-alarm.json").read_text())
INCIDENTS_TABLE = "bench-incidents"
QUARANTINE_GROUP = "bench-quarantine"
EXEMPT_GROUP = "bench-exempt"
TARGET_CALLS = 8  # 6 before the signed shutdown job (issue 12): + CreateJob + KMS Sign


class Context:
    function_name = "bench-auto-response"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:bench-auto-response"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class Recorder:
    """before-call / after-call hooks: API calls per service, and when UpdateCertificate returned."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.operations: list[str] = []
        self.cert_updated_at: float | None = None

    def reset(self) -> None:
        self.calls.clear()
        self.operations.clear()
        self.cert_updated_at = None

    def before(self, model: Any, **_: Any) -> None:
        self.calls[model.service_model.service_name] += 1
        self.operations.append(f"{model.service_model.service_name}:{model.name}")

    def after(self, model: Any, **_: Any) -> None:
        if model.name == "UpdateCertificate":
            self.cert_updated_at = time.perf_counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self.before)
        client.meta.events.register("after-call", self.after)


def sns_event(message: dict[str, Any], n: int) -> dict[str, Any]:
    return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": {
        "Type": "Notification", "MessageId": f"bench-{n}", "Timestamp": "2019-11-15T03:00:01.123Z",
        "TopicArn": f"arn:aws:sns:{REGION}:123456789012:bench-violations", "Message": json.dumps(message)}}]}


def connection_deleted(model: Any, **_: Any) -> Any:
    """moto has no DeleteConnection: answered at the client boundary with the documented success
    (HTTP 200, empty body), after the recorder counted it."""
    if model.service_model.service_name == "iot-data" and model.name == "DeleteConnection":
        return AWSResponse(url="", status_code=200, headers={}, raw=None), {}
    return None


def setup() -> Any:
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register_last("before-call", connection_deleted)
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=INCIDENTS_TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "violation_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                              for n in ("violation_id", "thing", "received_at")],
        GlobalSecondaryIndexes=[{"IndexName": "by_thing", "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "thing", "KeyType": "HASH"},
                                               {"AttributeName": "received_at", "KeyType": "RANGE"}]}])
    iot = boto3.client("iot")
    iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
    iot.create_thing_group(thingGroupName=EXEMPT_GROUP)
    topic = boto3.client("sns").create_topic(Name="bench-ops")["TopicArn"]
    os.environ.update(INCIDENTS_TABLE=INCIDENTS_TABLE, QUARANTINE_GROUP=QUARANTINE_GROUP,
                      EXEMPT_GROUP=EXEMPT_GROUP,
                      REVOCATION="deactivate", DRY_RUN="false", OPS_TOPIC_ARN=topic,
                      IOT_DATA_ENDPOINT=f"a1b2c3d4e5f6g7-ats.iot.{REGION}.amazonaws.com",
                      SIGNING_KEY_ARN=boto3.client("kms").create_key(
                          KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"],
                      THING_ARN_PREFIX=f"arn:aws:iot:{REGION}:123456789012:thing/")
    # As the stack passes it (read at deploy time), so the handler makes no GetPublicKey call.
    from shared import commands as signed
    os.environ["SIGNING_KEY_ID"] = signed.key_id(
        boto3.client("kms").get_public_key(KeyId=os.environ["SIGNING_KEY_ARN"])["PublicKey"])
    return iot


def device(iot: Any, n: int) -> tuple[str, str]:
    thing = f"dev-bench-{n:04d}"
    iot.create_thing(thingName=thing)
    cert = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName=thing, principal=cert["certificateArn"])
    return thing, cert["certificateId"]


def recorder_for_handler(recorder: Recorder) -> None:
    handler._dependencies.cache_clear()
    responder = handler._dependencies()
    for client in (responder.iot, responder.iot_data, responder.sns, responder.table.meta.client,
                   responder.queue_shutdown.signer.kms):
        recorder.attach(client)


def run_once(iot: Any, recorder: Recorder, n: int, message: dict[str, Any] | None = None) -> dict[str, Any]:
    thing, cert = device(iot, n)
    message = message or {**SAMPLE, "thingName": thing, "violationId": f"bench{n:04d}"}
    recorder.reset()
    with contextlib.redirect_stdout(io.StringIO()):  # the EMF metric blobs
        start = time.perf_counter()
        result = handler.lambda_handler(sns_event(message, n), Context())
        end = time.perf_counter()
    groups = [g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]]
    status = iot.describe_certificate(certificateId=cert)["certificateDescription"]["status"]
    contained = QUARANTINE_GROUP in groups and status == "INACTIVE"
    return {
        "outcome": result["outcomes"][0]["status"],
        "contained": contained,
        "contained_ms": ((recorder.cert_updated_at or end) - start) * 1000,
        "handler_ms": (end - start) * 1000,
        "iot_sns": recorder.calls["iot"] + recorder.calls["iot-data"] + recorder.calls["sns"] + recorder.calls["kms"],
        "dynamodb": recorder.calls["dynamodb"],
        "operations": list(recorder.operations),
        "message": message,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    recorder = Recorder()
    with mock_aws():
        iot = setup()
        handler._dependencies.cache_clear()
        # Cold: the first invocation builds the clients (hooks attached right after, for the count).
        with contextlib.redirect_stdout(io.StringIO()):
            thing, _ = device(iot, 0)
            start = time.perf_counter()
            handler.lambda_handler(sns_event({**SAMPLE, "thingName": thing, "violationId": "bench-cold"}, 0),
                                   Context())
            cold_ms = (time.perf_counter() - start) * 1000
        recorder_for_handler(recorder)
        runs = [run_once(iot, recorder, n) for n in range(1, args.runs + 1)]
        assert all(r["outcome"] == "contained" and r["contained"] for r in runs), "a run did not contain"

        # A redelivery of the last message, and the same containment without an exempt group.
        recorder.reset()
        with contextlib.redirect_stdout(io.StringIO()):
            dup = handler.lambda_handler(sns_event(runs[-1]["message"], 999), Context())
        dup_calls = dict(recorder.calls)
        assert dup["outcomes"][0]["status"] == "duplicate"
        del os.environ["EXEMPT_GROUP"]
        recorder_for_handler(recorder)
        no_exempt = run_once(iot, recorder, args.runs + 1)

    contained = sorted(r["contained_ms"] for r in runs)
    total = sorted(r["handler_ms"] for r in runs)
    iot_sns = max(r["iot_sns"] for r in runs)
    ddb = max(r["dynamodb"] for r in runs)
    ok = iot_sns <= TARGET_CALLS
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"moto in-process, {args.runs} warm runs (REVOCATION=deactivate, EXEMPT_GROUP set, 1 certificate)")
    print(f"calls per contained device: {' '.join(runs[0]['operations'])}")
    rows = [
        ("violation -> quarantined + INACTIVE, median ms", f"{statistics.median(contained):.1f}",
         f"min {contained[0]:.1f} / max {contained[-1]:.1f}", ""),
        ("whole invocation, median ms", f"{statistics.median(total):.1f}",
         f"min {total[0]:.1f} / max {total[-1]:.1f}", ""),
        ("cold first invocation ms", f"{cold_ms:.1f}", "imports respond, builds clients", ""),
        ("IoT+SNS+KMS calls per contained device", str(iot_sns), f"target <= {TARGET_CALLS}",
         "ok" if ok else "OVER"),
        ("DynamoDB calls per contained device", str(ddb), "1 put + 4 updates", ""),
        ("IoT+SNS+KMS calls, no EXEMPT_GROUP", str(no_exempt["iot_sns"]),
         f"DynamoDB {no_exempt['dynamodb']}", ""),
        ("calls on a duplicate delivery",
         str(dup_calls.get("iot", 0) + dup_calls.get("iot-data", 0) + dup_calls.get("sns", 0)),
         f"DynamoDB {dup_calls.get('dynamodb', 0)}", ""),
    ]
    header = ("measure", "value", "detail", "")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("  ".join("-" * w for w in widths[:3]))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
