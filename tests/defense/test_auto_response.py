"""Auto-response: moto for the IoT registry (things, groups, certificates), DynamoDB (incidents)
and SNS (ops topic, read back through a subscribed SQS queue).

Most tests go through handler.lambda_handler with real-shaped SNS events carrying the real
Device Defender sample. IoT and SNS calls are counted (and failures injected) with botocore's
before-call hook on the handler's clients, so paginated calls count too and injected errors are
raised as botocore raises them (the service's modeled exception class for a modeled code).
"""

from __future__ import annotations

import copy
import datetime
import functools
import itertools
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from defense.auto_response import handler as ar_handler
from defense.auto_response.commands import QUEUED
from defense.auto_response.respond import (
    MAX_RAW_BYTES,
    ConfigurationError,
    ContainmentError,
    Settings,
    update_expression,
)
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from tests.helpers import Calls, captured_logs, topic_with_inbox

EVENTS = Path(__file__).resolve().parent / "events"
SAMPLE = (EVENTS / "defender-violation-in-alarm.json").read_text()
SAMPLE_DICT = json.loads(SAMPLE)
THING = SAMPLE_DICT["thingName"]  # dev-IZWB
VIOLATION_ID = SAMPLE_DICT["violationId"]
INCIDENTS_TABLE = "fleetwarden-test-incidents"
QUARANTINE_GROUP = "fleetwarden-test-quarantine"
EXEMPT_GROUP = "fleetwarden-test-exempt"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
VIOLATION_TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:fleetwarden-test-violations"
# DescribeEndpoint's answer format: "identifier.iot.region.amazonaws.com" (-ats for iot:Data-ATS).
DATA_ENDPOINT = f"a1b2c3d4e5f6g7-ats.iot.{REGION}.amazonaws.com"
THING_ARN_PREFIX = f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/"


@dataclass
class LambdaContext:
    function_name: str = "fleetwarden-test-auto-response"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fleetwarden-test-auto-response"
    aws_request_id: str = "6a1f0c55-8d3e-4b0e-9d7e-1c2b3a4d5e6f"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def client_error(code: str, operation: str = "UpdateCertificate") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, operation)


def create_incidents_table(dynamodb) -> Any:
    """As the DefenseStack creates it: key violation_id, GSIs by_thing (thing, received_at) and
    by_certificate (certificate_id, received_at)."""
    return dynamodb.create_table(
        TableName=INCIDENTS_TABLE,
        KeySchema=[{"AttributeName": "violation_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "violation_id", "AttributeType": "S"},
            {"AttributeName": "thing", "AttributeType": "S"},
            {"AttributeName": "received_at", "AttributeType": "S"},
            {"AttributeName": "certificate_id", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": index,
            "KeySchema": [{"AttributeName": key, "KeyType": "HASH"},
                          {"AttributeName": "received_at", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        } for index, key in (("by_thing", "thing"), ("by_certificate", "certificate_id"))],
        BillingMode="PAY_PER_REQUEST",
    )


@functools.cache
def certificate_pems(count: int = 32) -> tuple[str, ...]:
    """Self-signed EC certificates made once per session: registering one is far cheaper in moto
    than CreateKeysAndCertificate (an RSA key per call)."""
    pems = []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"device-{n}")])
        start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(n + 1).not_valid_before(start)
                .not_valid_after(start + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
        pems.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return tuple(pems)


_next_pem = itertools.count()


def make_thing(iot, name: str = THING, certificates: int = 1, status: str = "ACTIVE") -> list[str]:
    """A registered device: the thing and its certificate(s) attached as principals."""
    iot.create_thing(thingName=name)
    ids = []
    pems = certificate_pems()
    for _ in range(certificates):
        pem = pems[next(_next_pem) % len(pems)]
        cert = iot.register_certificate_without_ca(certificatePem=pem, status=status)
        iot.attach_thing_principal(thingName=name, principal=cert["certificateArn"])
        ids.append(cert["certificateId"])
    return ids


@functools.cache
def shared_session() -> boto3.Session:
    """One boto3 session for every test: moto resets boto3's default session on each start, and
    rebuilding the service models per test costs more than the tests themselves. moto's stubber is
    a built-in botocore handler, so clients of this session are mocked all the same."""
    return boto3.Session(region_name=REGION)


def use_shared_session() -> None:
    """Call inside mock_aws(): moto restores its own default session when the mock stops."""
    boto3.DEFAULT_SESSION = shared_session()
    # moto has no DeleteConnection: the data plane is answered at the client boundary (botocore's
    # before-call, registered last so a test's Calls can still inject an error first) with the
    # documented success, "HTTP 200 with an empty HTTP body" (API_iotdata_DeleteConnection).
    # (On the generic event: botocore calls a more specific event's handlers first.)
    shared_session().events.register_last("before-call", _connection_deleted, unique_id="tests-delete-connection")


def _connection_deleted(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    if model.service_model.service_name != "iot-data" or model.name != "DeleteConnection":
        return None
    return AWSResponse(url="", status_code=200, headers={}, raw=None), {}


def sns_event(*messages: str, topic: str = VIOLATION_TOPIC) -> dict[str, Any]:
    """What SNS hands Lambda: one record per notification (always one in practice)."""
    return {"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": f"{topic}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
        "Sns": {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Subject": None,
            "Message": message,
            "Timestamp": "2019-11-15T03:00:01.123Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem",
            "UnsubscribeUrl": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {},
        },
    } for message in messages]}


def violation(**changes: Any) -> str:
    data = copy.deepcopy(SAMPLE_DICT)
    data.update(changes)
    return json.dumps(data)


def set_env(monkeypatch, **overrides: str | None) -> None:
    """The function's environment, inside mock_aws: with a fresh ECC_NIST_P256 signing key unless given."""
    if "SIGNING_KEY_ARN" not in overrides:
        from shared import commands

        kms = boto3.client("kms", region_name=REGION)
        overrides["SIGNING_KEY_ARN"] = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        # The stack passes the key id it read at deploy time (GetPublicKey's SPKI, hashed).
        overrides.setdefault("SIGNING_KEY_ID", commands.key_id(
            kms.get_public_key(KeyId=overrides["SIGNING_KEY_ARN"])["PublicKey"]))
    values = {
        "INCIDENTS_TABLE": INCIDENTS_TABLE,
        "QUARANTINE_GROUP": QUARANTINE_GROUP,
        "REVOCATION": "deactivate",
        "EXEMPT_GROUP": EXEMPT_GROUP,
        "DRY_RUN": "false",
        "IOT_DATA_ENDPOINT": DATA_ENDPOINT,
        "THING_ARN_PREFIX": THING_ARN_PREFIX,
        "POWERTOOLS_SERVICE_NAME": "auto-response",
        "POWERTOOLS_METRICS_NAMESPACE": "Fleetwarden",
        **overrides,
    }
    for key, value in values.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


@pytest.fixture
def env(monkeypatch):
    """moto with the incidents table, both thing groups, the ops topic -> SQS; the handler's env."""
    ar_handler._dependencies.cache_clear()
    with mock_aws():
        use_shared_session()
        table = create_incidents_table(boto3.resource("dynamodb"))
        iot, sns, sqs = boto3.client("iot"), boto3.client("sns"), boto3.client("sqs")
        iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
        iot.create_thing_group(thingGroupName=EXEMPT_GROUP)
        topic, queue_url = topic_with_inbox(sns, sqs, "fleetwarden-test-ops")
        set_env(monkeypatch, OPS_TOPIC_ARN=topic)
        yield SimpleNamespace(table=table, iot=iot, sns=sns, sqs=sqs, queue_url=queue_url, topic=topic,
                              monkeypatch=monkeypatch)
    ar_handler._dependencies.cache_clear()


@pytest.fixture
def logs():
    """Everything the handler's logger writes (its stream was bound at import, before capsys)."""
    with captured_logs(ar_handler.logger) as buffer:
        yield buffer


def counted(env, iot_fail: dict[str, list[ClientError]] | None = None,
            sns_fail: dict[str, list[ClientError]] | None = None,
            data_fail: dict[str, list[ClientError]] | None = None) -> SimpleNamespace:
    """Count the calls of the handler's clients (built now, with the current env) from here on;
    `requests` keeps each data-plane request as botocore serialised it (url, method)."""
    responder = ar_handler._dependencies()
    requests: list[dict[str, Any]] = []
    responder.iot_data.meta.events.register(
        "before-call.iot-data.DeleteConnection",
        lambda params, **_: requests.append({"url": params["url"], "method": params["method"]}),
        unique_id="tests-requests")
    return SimpleNamespace(iot=Calls(responder.iot, iot_fail), sns=Calls(responder.sns, sns_fail),
                           kms=Calls(responder.queue_shutdown.signer.kms),
                           data=Calls(responder.iot_data, data_fail), requests=requests, responder=responder)


def invoke(event: Any) -> dict[str, Any]:
    return ar_handler.lambda_handler(event, LambdaContext())


def incident(env, violation_id: str = VIOLATION_ID) -> dict[str, Any] | None:
    return env.table.get_item(Key={"violation_id": violation_id}, ConsistentRead=True).get("Item")


def incidents(env) -> list[dict[str, Any]]:
    return env.table.scan(ConsistentRead=True)["Items"]


def ops_messages(env) -> list[dict[str, Any]]:
    """Every notification on the ops topic so far: {"subject", "text", "details"}."""
    out = []
    while True:
        batch = env.sqs.receive_message(QueueUrl=env.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return out
        for message in batch:
            envelope = json.loads(message["Body"])
            text = envelope["Message"]
            out.append({"subject": envelope.get("Subject"), "text": text,
                        "details": json.loads(text.split("\n\n", 1)[1])})
            env.sqs.delete_message(QueueUrl=env.queue_url, ReceiptHandle=message["ReceiptHandle"])


def in_group(env, group: str = QUARANTINE_GROUP, thing: str = THING) -> bool:
    groups = env.iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]
    return any(g["groupName"] == group for g in groups)


def cert_status(env, certificate_id: str) -> str:
    return env.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]


def metric_names(out: str) -> set[str]:
    """Metric names in the EMF blobs Powertools printed."""
    names = set()
    for line in out.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or not isinstance(blob.get("_aws"), dict):
            continue
        for directive in blob["_aws"].get("CloudWatchMetrics", []):
            names |= {m["Name"] for m in directive.get("Metrics", [])}
    return names


# ---- containment ------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "expected_status"), [
    ("deactivate", "INACTIVE"),
    ("revoke", "REVOKED"),
    ("quarantine-only", "ACTIVE"),
])
def test_sample_violation_contains_the_device(env, mode, expected_status, capsys):
    env.monkeypatch.setenv("REVOCATION", mode)
    (cert,) = make_thing(env.iot)
    calls = counted(env)

    result = invoke(sns_event(SAMPLE))

    assert result["outcomes"][0]["status"] == "contained"
    assert in_group(env)
    assert cert_status(env, cert) == expected_status

    item = incident(env)
    assert item["status"] == "contained"
    assert item["thing"] == THING and item["profile"] == "MySecProfile"
    assert item["behavior"] == "MessagesPub" and item["metric"] == "aws:num-messages-sent"
    assert item["event_type"] == "in-alarm" and item["event_time"] == 1573786800000
    assert item["mode"] == mode
    assert item["violation"] == SAMPLE
    assert item["received_at"].endswith("Z") and len(item["received_at"]) == 24
    assert "lease_until" not in item and "error" not in item
    cert_result = "skipped:quarantine-only" if mode == "quarantine-only" else "done"
    assert item["steps"] == {"quarantine": "done", "shutdown_command": "done",
                             f"certificate:{cert}": cert_result, "disconnect": "done", "notify": "done"}
    assert item["certificates"] == [cert]

    (message,) = ops_messages(env)
    assert message["subject"] == f"Fleetwarden: device {THING} contained"
    assert THING in message["text"] and QUARANTINE_GROUP in message["text"]
    details = message["details"]
    assert details["thing"] == THING and details["outcome"] == "contained" and details["mode"] == mode
    assert details["violation"]["violationId"] == VIOLATION_ID
    assert details["violation"]["metricValue"] == {"count": 54}
    assert details["steps"]["quarantine"] == "done"
    assert details["steps"][f"certificate:{cert}"] == cert_result

    # The call budget: 6 IoT+SNS calls for one certificate, DeleteConnection included, plus the signed
    # shutdown job (KMS Sign + CreateJob; GetPublicKey once per container), in this order: the job is
    # queued after the quarantine and before the certificate, the session is ended last.
    expected_iot = ["list_thing_principals", "list_thing_groups_for_thing", "add_thing_to_thing_group",
                    "create_job"]
    if mode != "quarantine-only":
        expected_iot.append("update_certificate")
    assert calls.iot.calls == expected_iot
    assert calls.kms.calls == ["sign"]  # the key id comes from the stack: no GetPublicKey
    assert calls.data.calls == ["delete_connection"]
    assert calls.sns.calls == ["publish"]
    assert "its live session was ended" in message["text"]
    assert "DevicesContained" in metric_names(capsys.readouterr().out)


def test_without_exempt_group_the_group_lookup_still_tells_a_repeat(env):
    env.monkeypatch.delenv("EXEMPT_GROUP")
    make_thing(env.iot)
    calls = counted(env)
    invoke(sns_event(SAMPLE))
    assert calls.iot.calls == ["list_thing_principals", "list_thing_groups_for_thing",
                               "add_thing_to_thing_group", "create_job", "update_certificate"]
    assert incident(env)["status"] == "contained"


def test_every_certificate_of_the_thing_is_handled(env):
    env.monkeypatch.setenv("REVOCATION", "revoke")
    certs = make_thing(env.iot, certificates=3)
    other = make_thing(env.iot, name="dev-other")[0]  # another device: untouched
    invoke(sns_event(SAMPLE))
    assert [cert_status(env, c) for c in certs] == ["REVOKED"] * 3
    assert cert_status(env, other) == "ACTIVE"
    assert not in_group(env, thing="dev-other")
    steps = incident(env)["steps"]
    assert {f"certificate:{c}" for c in certs} <= set(steps)
    assert all(v == "done" for k, v in steps.items() if k.startswith("certificate:"))


def test_same_message_twice_is_one_incident_and_no_second_round_of_calls(env, capsys, logs):
    make_thing(env.iot)
    invoke(sns_event(SAMPLE))
    first = incident(env)
    capsys.readouterr()

    calls = counted(env)
    result = invoke(sns_event(SAMPLE))

    assert result["outcomes"][0]["status"] == "duplicate"
    assert calls.iot.calls == [] and calls.sns.calls == []
    assert len(incidents(env)) == 1
    assert incident(env) == first
    assert len(ops_messages(env)) == 1
    out = capsys.readouterr().out
    assert "ViolationsDuplicate" in metric_names(out)
    assert "duplicate violation" in logs.getvalue()


@pytest.mark.parametrize("event_type", ["alarm-cleared", "alarm-invalidated"])
def test_cleared_or_invalidated_is_recorded_without_action(env, event_type, capsys):
    (cert,) = make_thing(env.iot)
    env.iot.add_thing_to_thing_group(thingGroupName=QUARANTINE_GROUP, thingName=THING)  # contained earlier
    env.iot.update_certificate(certificateId=cert, newStatus="INACTIVE")
    calls = counted(env)

    result = invoke(sns_event(violation(violationEventType=event_type, violationId="cleared-1")))

    assert result["outcomes"][0]["status"] == "recorded"
    item = incident(env, "cleared-1")
    assert item["status"] == "recorded" and item["event_type"] == event_type and item["steps"] == {}
    assert calls.iot.calls == [] and calls.sns.calls == []
    # No automatic reinstatement: still quarantined, certificate still inactive.
    assert in_group(env) and cert_status(env, cert) == "INACTIVE"
    assert "ViolationsRecorded" in metric_names(capsys.readouterr().out)


def test_clearance_of_a_contained_device_is_added_to_its_incident(env):
    (cert,) = make_thing(env.iot)
    invoke(sns_event(SAMPLE))
    calls = counted(env)
    cleared = violation(violationEventType="alarm-cleared", violationEventTime=1573787100000)

    assert invoke(sns_event(cleared))["outcomes"][0]["status"] == "recorded"

    item = incident(env)
    assert item["status"] == "contained"  # kept: the device stays contained until an operator says so
    assert item["cleared_event_type"] == "alarm-cleared" and item["cleared_event_time"] == 1573787100000
    assert item["cleared_at"].endswith("Z")
    assert calls.iot.calls == [] and calls.sns.calls == []
    assert in_group(env) and cert_status(env, cert) == "INACTIVE"
    assert len(incidents(env)) == 1
    # The clearance redelivered: a duplicate.
    assert invoke(sns_event(cleared))["outcomes"][0]["status"] == "duplicate"


def test_in_alarm_arriving_after_its_clearance_still_contains(env):
    (cert,) = make_thing(env.iot)
    invoke(sns_event(violation(violationEventType="alarm-cleared", violationEventTime=1573787100000)))
    assert incident(env)["status"] == "recorded"

    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "contained"

    item = incident(env)
    assert item["status"] == "contained" and item["event_type"] == "in-alarm"
    assert item["event_time"] == 1573786800000 and item["violation"] == SAMPLE
    assert item["cleared_event_type"] == "alarm-cleared"
    assert in_group(env) and cert_status(env, cert) == "INACTIVE"
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "duplicate"


def test_exempt_thing_is_not_contained_and_ops_are_told(env, capsys):
    (cert,) = make_thing(env.iot)
    env.iot.add_thing_to_thing_group(thingGroupName=EXEMPT_GROUP, thingName=THING)
    calls = counted(env)

    result = invoke(sns_event(SAMPLE))

    assert result["outcomes"][0]["status"] == "exempt"
    assert not in_group(env) and cert_status(env, cert) == "ACTIVE"
    item = incident(env)
    assert item["status"] == "exempt" and item["steps"] == {"notify": "done"}
    assert "add_thing_to_thing_group" not in calls.iot.calls and "update_certificate" not in calls.iot.calls
    (message,) = ops_messages(env)
    assert "exempt" in message["text"] and EXEMPT_GROUP in message["text"]
    assert message["details"]["outcome"] == "exempt"
    assert "ViolationsExempt" in metric_names(capsys.readouterr().out)


def test_dry_run_changes_nothing_records_the_plan_and_tells_ops(env, capsys):
    env.monkeypatch.setenv("DRY_RUN", "true")
    (cert,) = make_thing(env.iot)
    calls = counted(env)

    result = invoke(sns_event(SAMPLE))

    assert result["outcomes"][0]["status"] == "dry-run"
    assert not in_group(env) and cert_status(env, cert) == "ACTIVE"
    item = incident(env)
    assert item["status"] == "dry-run"
    assert item["planned"] == ["quarantine", "shutdown_command", f"certificate:{cert}", "disconnect"]
    assert item["certificates"] == [cert]
    assert item["steps"] == {"notify": "done"}
    assert calls.iot.calls == ["list_thing_principals", "list_thing_groups_for_thing"]
    assert calls.data.calls == []
    (message,) = ops_messages(env)
    assert message["text"].startswith("DRY RUN") and "dry run" in message["subject"]
    assert message["details"]["planned"] == item["planned"]
    assert "ViolationsDryRun" in metric_names(capsys.readouterr().out)


def test_unknown_thing_is_recorded_and_processed(env, capsys, logs):
    calls = counted(env)
    result = invoke(sns_event(SAMPLE))  # no thing registered
    assert result["outcomes"][0]["status"] == "unknown-thing"
    item = incident(env)
    assert item["status"] == "unknown-thing" and item["steps"] == {} and "lease_until" not in item
    assert calls.iot.calls == ["list_thing_principals"] and calls.sns.calls == []
    assert ops_messages(env) == []
    out = capsys.readouterr().out
    assert "ViolationsUnknownThing" in metric_names(out) and "unknown thing" in logs.getvalue()
    # A redelivery is a duplicate, not a second lookup.
    calls = counted(env)
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "duplicate"
    assert calls.iot.calls == []


def test_thing_without_certificates_is_contained_by_the_group_alone(env):
    env.iot.create_thing(thingName=THING)
    invoke(sns_event(SAMPLE))
    assert in_group(env)
    item = incident(env)
    assert item["status"] == "contained" and item["certificates"] == []
    assert item["steps"] == {"quarantine": "done", "shutdown_command": "done",
                             "disconnect": "done", "notify": "done"}
    assert ops_messages(env)[0]["details"]["certificates"] == []


def test_non_certificate_principals_are_counted_not_touched(env):
    make_thing(env.iot)
    responder = counted(env).responder

    def with_cognito(parsed: dict[str, Any], **_: Any) -> None:
        parsed["principals"] = [*parsed["principals"], "eu-west-1:1234abcd-cognito-identity"]

    responder.iot.meta.events.register("after-call.iot.ListThingPrincipals", with_cognito)
    invoke(sns_event(SAMPLE))
    item = incident(env)
    assert item["status"] == "contained" and item["other_principals"] == 1


def test_raw_violation_is_truncated_to_8_kb(env):
    make_thing(env.iot)
    big = violation(violationEventAdditionalInfo={"note": "é" * 20_000})
    invoke(sns_event(big))
    stored = incident(env)["violation"]
    assert len(stored.encode()) <= MAX_RAW_BYTES
    assert big.startswith(stored)


# ---- malformed input -----------------------------------------------------------------------------


MALFORMED = {
    "not-json": ("{not json", "not-json"),
    "empty": ("", "not-json"),
    "array": ("[1, 2]", "not-json"),
    "missing-fields": (json.dumps({"thingName": THING}), "invalid"),
    "time-string": (violation(violationEventTime="x"), "invalid"),
    "time-bool": (violation(violationEventTime=True), "invalid"),
    "time-float": (violation(violationEventTime=1.5), "invalid"),
    "bad-thing": (violation(thingName="dev IZWB/../x"), "invalid"),
    "long-thing": (violation(thingName="a" * 129), "invalid"),
    "bad-id": (violation(violationId="id with spaces"), "invalid"),
    "bad-type": (violation(violationEventType="in-alarm-ish"), "invalid"),
    "behavior-not-object": (violation(behavior="MessagesPub"), "invalid"),
    "thing-number": (violation(thingName=42), "invalid"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_violation_is_counted_and_processed(env, case, capsys, logs):
    make_thing(env.iot)
    body, reason = MALFORMED[case]
    calls = counted(env)

    result = invoke(sns_event(body))

    (outcome,) = result["outcomes"]
    assert outcome["status"] == "malformed" and outcome["detail"]
    assert incidents(env) == [] and calls.iot.calls == [] and calls.sns.calls == []
    assert not in_group(env)
    out = capsys.readouterr().out
    assert "ViolationsMalformed" in metric_names(out)
    assert f'"reason":"{reason}"' in out.replace(" ", "")  # the metric's reason dimension
    assert "violation rejected" in logs.getvalue()


@pytest.mark.parametrize("event", [
    {},
    {"Records": []},
    {"Records": "x"},
    None,
    "a string",
    [1, 2],
    {"Records": [{"eventSource": "aws:sqs", "body": SAMPLE}]},
    {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": 42}}]},
    {"Records": [None]},
])
def test_not_an_sns_event_is_counted_and_processed(env, event, capsys):
    make_thing(env.iot)
    result = invoke(event)
    assert all(o["status"] == "malformed" for o in result["outcomes"])
    assert incidents(env) == [] and not in_group(env)
    assert "ViolationsMalformed" in metric_names(capsys.readouterr().out)


def test_a_bad_record_does_not_stop_a_good_one(env):
    make_thing(env.iot)
    result = invoke(sns_event("nope", SAMPLE))
    assert [o["status"] for o in result["outcomes"]] == ["malformed", "contained"]


# ---- failures and retries ------------------------------------------------------------------------


def test_failed_certificate_update_raises_then_the_retry_finishes_the_rest(env, capsys):
    (cert,) = make_thing(env.iot)
    first = counted(env, iot_fail={"update_certificate": [client_error("ThrottlingException")]})

    with pytest.raises(ContainmentError) as raised:
        invoke(sns_event(SAMPLE))

    assert raised.value.step == f"certificate:{cert}" and raised.value.code == "ThrottlingException"
    assert in_group(env) and cert_status(env, cert) == "ACTIVE"  # cut off already, certificate not yet
    item = incident(env)
    assert item["status"] == "in-progress"
    assert item["steps"] == {"quarantine": "done", "shutdown_command": "done",
                             f"certificate:{cert}": "failed:ThrottlingException"}
    assert item["plan"][-1] == "notify" and item["lease_until"] == 0
    assert item["error"] == f"certificate:{cert}:ThrottlingException"
    assert first.sns.calls == []
    out = capsys.readouterr().out
    assert {"ContainmentStepFailures", "ViolationsNotHandled"} <= metric_names(out)

    # Lambda's retry: the same event again.
    second = counted(env)
    result = invoke(sns_event(SAMPLE))

    assert result["outcomes"][0]["status"] == "contained"
    assert second.iot.calls == ["update_certificate"]  # no lookup, no second add to the group
    assert second.data.calls == ["delete_connection"] and second.sns.calls == ["publish"]
    assert cert_status(env, cert) == "INACTIVE"
    item = incident(env)
    assert item["status"] == "contained" and item["attempts"] == 2
    assert set(item["steps"].values()) <= {"done"} and item["steps"]["disconnect"] == "done"
    assert "lease_until" not in item and "error" not in item
    assert len(ops_messages(env)) == 1
    assert "ContainmentsResumed" in metric_names(capsys.readouterr().out)

    # And a third delivery is a plain duplicate.
    third = counted(env)
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "duplicate"
    assert third.iot.calls == [] and third.sns.calls == []


def test_failed_publish_is_retried_without_repeating_containment(env):
    (cert,) = make_thing(env.iot)
    counted(env, sns_fail={"publish": [client_error("InternalError", "Publish")]})
    with pytest.raises(ContainmentError):
        invoke(sns_event(SAMPLE))
    assert incident(env)["steps"]["notify"] == "failed:InternalError"

    retry = counted(env)
    invoke(sns_event(SAMPLE))
    assert retry.iot.calls == [] and retry.sns.calls == ["publish"]
    assert incident(env)["status"] == "contained" and cert_status(env, cert) == "INACTIVE"
    assert len(ops_messages(env)) == 1


def test_failed_quarantine_raises_and_nothing_else_runs(env):
    (cert,) = make_thing(env.iot)
    calls = counted(env, iot_fail={"add_thing_to_thing_group": [client_error("ServiceUnavailableException")]})
    with pytest.raises(ContainmentError):
        invoke(sns_event(SAMPLE))
    assert "update_certificate" not in calls.iot.calls and calls.sns.calls == []
    assert incident(env)["steps"] == {"quarantine": "failed:ServiceUnavailableException"}
    assert cert_status(env, cert) == "ACTIVE"

    invoke(sns_event(SAMPLE))
    assert in_group(env) and cert_status(env, cert) == "INACTIVE"


def test_missing_quarantine_group_is_a_failure_not_a_skip(env):
    make_thing(env.iot)
    env.monkeypatch.setenv("QUARANTINE_GROUP", "no-such-group")
    with pytest.raises(ContainmentError) as raised:
        invoke(sns_event(SAMPLE))
    assert raised.value.step == "quarantine"
    assert incident(env)["steps"]["quarantine"].startswith("failed:")


def test_failed_lookup_raises_and_the_retry_decides_afresh(env):
    (cert,) = make_thing(env.iot)
    throttled = client_error("ThrottlingException", "ListThingPrincipals")
    counted(env, iot_fail={"list_thing_principals": [throttled]})
    with pytest.raises(ContainmentError) as raised:
        invoke(sns_event(SAMPLE))
    assert raised.value.step == "lookup"
    item = incident(env)
    assert item["status"] == "in-progress" and "plan" not in item
    assert item["error"] == "lookup:ThrottlingException"

    invoke(sns_event(SAMPLE))
    assert incident(env)["status"] == "contained" and cert_status(env, cert) == "INACTIVE"


@pytest.mark.parametrize(("code", "result"), [
    ("ResourceNotFoundException", "skipped:not-found"),
    ("CertificateStateException", "skipped:certificate-state"),
])
def test_certificate_gone_or_in_a_final_state_is_skipped(env, code, result):
    (cert,) = make_thing(env.iot)
    counted(env, iot_fail={"update_certificate": [client_error(code)]})
    invoke(sns_event(SAMPLE))
    item = incident(env)
    assert item["status"] == "contained" and item["steps"][f"certificate:{cert}"] == result


def test_a_concurrent_duplicate_under_a_live_lease_does_nothing(env):
    make_thing(env.iot)
    # Another invocation is working on it right now.
    env.table.put_item(Item={"violation_id": VIOLATION_ID, "thing": THING, "event_type": "in-alarm",
                             "received_at": "2019-11-15T03:00:01.000Z", "status": "in-progress", "steps": {},
                             "lease_until": 4_000_000_000, "attempts": 1})
    calls = counted(env)
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "duplicate"
    assert calls.iot.calls == [] and calls.sns.calls == []


def test_an_expired_lease_is_taken_over(env):
    (cert,) = make_thing(env.iot)
    # An attempt that died (timeout) after quarantining: lease expired, plan recorded.
    env.table.put_item(Item={
        "violation_id": VIOLATION_ID, "thing": THING, "received_at": "2019-11-15T03:00:01.000Z",
        "event_type": "in-alarm",
        "status": "in-progress", "mode": "deactivate", "steps": {"quarantine": "done"}, "lease_until": 1,
        "attempts": 1, "outcome": "contained", "certificates": [cert],
        "plan": ["quarantine", "shutdown_command", f"certificate:{cert}", "disconnect", "notify"],
    })
    calls = counted(env)
    invoke(sns_event(SAMPLE))
    assert calls.iot.calls == ["create_job", "update_certificate"]  # resumed at the shutdown step
    assert incident(env)["status"] == "contained" and cert_status(env, cert) == "INACTIVE"


def test_the_contained_device_has_a_signed_shutdown_job_it_verifies(env):
    """After containment the thing's jobs queue holds one shutdown job whose document verifies with the
    exported public key (cryptography), names this thing and the incident, and expires."""
    from shared import commands
    from shared.command_jobs import KmsSigner

    make_thing(env.iot)
    responder = counted(env).responder
    invoke(sns_event(SAMPLE))
    [execution] = env.iot.list_job_executions_for_thing(thingName=THING)["executionSummaries"]
    job_id = execution["jobId"]
    assert job_id.startswith("fw-shutdown-") and execution["jobExecutionSummary"]["status"] == "QUEUED"
    assert env.iot.describe_job(jobId=job_id)["job"]["targets"] == [f"{THING_ARN_PREFIX}{THING}"]
    document = commands.parse(env.iot.get_job_document(jobId=job_id)["document"])["command"]
    pem = KmsSigner(boto3.client("kms"), responder.settings.signing_key_arn).public_pem()
    signed_at = document["issued_at"]
    fields = commands.verify(document, trusted_keys=commands.load_public_keys([pem]), thing=THING, now=signed_at)
    assert fields["command"] == "shutdown" and fields["issuer"] == "auto-response"
    assert fields["params"] == {"reason": "containment", "incident": VIOLATION_ID}
    assert fields["not_after"] - fields["issued_at"] == 7 * 24 * 3600
    with pytest.raises(commands.CommandRefused):  # another device never acts on it
        commands.verify(document, trusted_keys=commands.load_public_keys([pem]), thing="dev-other", now=signed_at)


def test_a_retried_shutdown_step_finds_its_job_instead_of_making_a_second(env):
    (cert,) = make_thing(env.iot)
    counted(env, iot_fail={"update_certificate": [client_error("ThrottlingException")]})
    with pytest.raises(ContainmentError):
        invoke(sns_event(SAMPLE))
    # The step's result was lost (e.g. a timeout after CreateJob): the retry runs it again.
    env.table.update_item(Key={"violation_id": VIOLATION_ID}, UpdateExpression="REMOVE #s.#c",
                          ExpressionAttributeNames={"#s": "steps", "#c": "shutdown_command"})
    # CreateJob on an existing job id answers ResourceAlreadyExistsException (API_CreateJob.html, Errors;
    # moto would overwrite the job instead): the step reads it as queued.
    retry = counted(env, iot_fail={"create_job": [client_error("ResourceAlreadyExistsException", "CreateJob")]})
    invoke(sns_event(SAMPLE))
    assert retry.iot.calls.count("create_job") == 1
    assert len(env.iot.list_job_executions_for_thing(thingName=THING)["executionSummaries"]) == 1
    assert incident(env)["steps"]["shutdown_command"] == "done" and cert_status(env, cert) == "INACTIVE"


def test_a_kms_failure_fails_the_shutdown_step_before_any_certificate_is_touched(env):
    (cert,) = make_thing(env.iot)
    calls = counted(env)
    Calls(calls.responder.queue_shutdown.signer.kms,
          fail={"sign": [client_error("KMSInvalidStateException", "Sign")]})
    with pytest.raises(ContainmentError) as raised:
        invoke(sns_event(SAMPLE))
    assert raised.value.step == "shutdown_command"
    assert in_group(env) and cert_status(env, cert) == "ACTIVE"
    assert incident(env)["steps"]["shutdown_command"] == "failed:KMSInvalidStateException"


def test_update_expression_uses_placeholders_for_every_name_and_value():
    expression, names, values = update_expression(
        attrs={"status": "contained"}, steps={"certificate:abc": "done"}, add={"attempts": 1},
        remove=("lease_until", "error"))
    assert expression == "SET #a0 = :a0, #steps.#s0 = :s0 ADD #d0 :d0 REMOVE #r0, #r1"
    assert names == {"#a0": "status", "#s0": "certificate:abc", "#d0": "attempts", "#r0": "lease_until",
                     "#r1": "error", "#steps": "steps"}
    assert values == {":a0": "contained", ":s0": "done", ":d0": 1}


# ---- configuration -------------------------------------------------------------------------------


BASE_ENV = {"INCIDENTS_TABLE": "t", "QUARANTINE_GROUP": "q", "OPS_TOPIC_ARN": "arn:aws:sns:eu-west-1:1:ops",
            "IOT_DATA_ENDPOINT": DATA_ENDPOINT, "THING_ARN_PREFIX": THING_ARN_PREFIX,
            "SIGNING_KEY_ARN": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}


def test_settings_defaults():
    settings = Settings.from_env(BASE_ENV)
    assert settings.revocation == "deactivate" and settings.dry_run is False and settings.exempt_group is None


@pytest.mark.parametrize("changes", [
    {"REVOCATION": "delete"},
    {"DRY_RUN": "maybe"},
    {"QUARANTINE_GROUP": ""},
    {"OPS_TOPIC_ARN": ""},
    {"IOT_DATA_ENDPOINT": ""},
    {"SIGNING_KEY_ARN": ""},
    {"THING_ARN_PREFIX": ""},
    {"JOB_TIMEOUT_MINUTES": "0"},
    {"SHUTDOWN_LIFETIME_SECONDS": "ten"},
])
def test_bad_configuration_is_loud(changes):
    with pytest.raises(ConfigurationError):
        Settings.from_env({**BASE_ENV, **changes})


def test_bad_configuration_fails_the_invocation_so_it_is_retried(env):
    make_thing(env.iot)
    env.monkeypatch.setenv("REVOCATION", "nuke")
    with pytest.raises(ConfigurationError):
        invoke(sns_event(SAMPLE))
    assert not in_group(env)


# ---- ending the live session (DeleteConnection) ------------------------------------------------


def test_the_session_is_ended_on_the_account_endpoint_after_the_certificate(env):
    """API_iotdata_DeleteConnection: DELETE /connections/clientId?cleanSession=..&preventWillMessage=..
    (https://docs.aws.amazon.com/iot/latest/apireference/API_iotdata_DeleteConnection.html)."""
    make_thing(env.iot)
    order: list[str] = []
    calls = counted(env)
    for client in (calls.responder.iot, calls.responder.iot_data):
        client.meta.events.register("before-call", lambda model, **_: order.append(model.name))
    invoke(sns_event(SAMPLE))
    assert order[-2:] == ["UpdateCertificate", "DeleteConnection"]
    (request,) = calls.requests
    assert request["method"] == "DELETE"
    assert request["url"].startswith(f"https://{DATA_ENDPOINT}/connections/{THING}?")
    assert "cleanSession=true" in request["url"] and "preventWillMessage=true" in request["url"]


def test_a_device_not_connected_is_success(env):
    make_thing(env.iot)
    gone = client_error("ResourceNotFoundException", "DeleteConnection")
    counted(env, data_fail={"delete_connection": [gone]})
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "contained"
    assert incident(env)["steps"]["disconnect"] == "skipped:not-connected"
    assert "had no live session" in ops_messages(env)[0]["text"]


def test_a_failed_disconnect_is_retried_alone(env):
    (cert,) = make_thing(env.iot)
    counted(env, data_fail={"delete_connection": [client_error("ThrottlingException", "DeleteConnection")]})
    with pytest.raises(ContainmentError) as raised:
        invoke(sns_event(SAMPLE))
    assert raised.value.step == "disconnect"
    assert incident(env)["steps"]["disconnect"] == "failed:ThrottlingException"
    assert in_group(env) and cert_status(env, cert) == "INACTIVE"

    retry = counted(env)
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "contained"
    assert retry.iot.calls == [] and retry.data.calls == ["delete_connection"] and retry.sns.calls == ["publish"]


# ---- repeat violations -------------------------------------------------------------------------


def next_window(n: int) -> str:
    """The same device violating again n windows (5 minutes each) later: a new violation id."""
    return violation(violationId=f"repeat-{n}", violationEventTime=1573786800000 + n * 300_000)


def test_a_contained_device_violating_again_is_recorded_on_its_incident_and_notified_once(env):
    (cert,) = make_thing(env.iot)
    invoke(sns_event(SAMPLE))
    assert len(ops_messages(env)) == 1

    calls = counted(env)
    first = invoke(sns_event(next_window(1)))["outcomes"][0]
    assert first["status"] == "repeat"
    assert calls.iot.calls == ["list_thing_principals", "list_thing_groups_for_thing"]  # no containment again
    assert calls.data.calls == [] and calls.sns.calls == ["publish"]
    (message,) = ops_messages(env)
    assert "still violating" in message["subject"] and message["details"]["repeat_of"] == VIOLATION_ID

    for n in (2, 3, 4):
        calls = counted(env)
        assert invoke(sns_event(next_window(n)))["outcomes"][0]["status"] == "repeat"
        assert calls.sns.calls == [] and "add_thing_to_thing_group" not in calls.iot.calls
    assert ops_messages(env) == []

    open_incident = incident(env)
    assert open_incident["status"] == "contained" and open_incident["repeat_count"] == 4
    assert open_incident["last_repeat_violation_id"] == "repeat-4"
    assert open_incident["last_repeat_event_time"] == 1573786800000 + 4 * 300_000
    assert incident(env, "repeat-3")["status"] == "repeat" and incident(env, "repeat-3")["repeat_of"] == VIOLATION_ID
    # A redelivered repeat is a duplicate: counted once.
    assert invoke(sns_event(next_window(4)))["outcomes"][0]["status"] == "duplicate"
    assert incident(env)["repeat_count"] == 4


def test_a_repeat_step_retried_after_its_write_is_not_counted_twice(env):
    make_thing(env.iot)
    invoke(sns_event(SAMPLE))
    invoke(sns_event(next_window(1)))
    responder = counted(env).responder
    v = __import__("shared.violations", fromlist=["parse_violation"]).parse_violation(next_window(1))
    assert responder._repeat(v, {}, VIOLATION_ID) == "skipped:already-recorded"
    assert incident(env)["repeat_count"] == 1


def test_a_reinstated_device_violating_again_is_contained_again(env):
    (cert,) = make_thing(env.iot)
    invoke(sns_event(SAMPLE))
    # fleetctl device reinstate: out of the group, certificate active, incident marked (device_admin).
    env.iot.remove_thing_from_thing_group(thingGroupName=QUARANTINE_GROUP, thingName=THING)
    env.iot.update_certificate(certificateId=cert, newStatus="ACTIVE")
    env.table.update_item(Key={"violation_id": VIOLATION_ID}, UpdateExpression="SET reinstated_at = :t",
                          ExpressionAttributeValues={":t": "2019-11-15T04:00:00.000Z"})
    ops_messages(env)
    assert invoke(sns_event(next_window(1)))["outcomes"][0]["status"] == "contained"
    assert in_group(env) and cert_status(env, cert) == "INACTIVE"


def test_reinstated_but_not_marked_is_contained_again(env):
    """device_admin marks incidents best effort: the group membership decides, not the mark."""
    (cert,) = make_thing(env.iot)
    invoke(sns_event(SAMPLE))
    env.iot.remove_thing_from_thing_group(thingGroupName=QUARANTINE_GROUP, thingName=THING)
    env.iot.update_certificate(certificateId=cert, newStatus="ACTIVE")
    assert invoke(sns_event(next_window(1)))["outcomes"][0]["status"] == "contained"
    assert cert_status(env, cert) == "INACTIVE"


def test_quarantined_by_hand_without_an_incident_is_contained(env):
    (cert,) = make_thing(env.iot)
    env.iot.add_thing_to_thing_group(thingGroupName=QUARANTINE_GROUP, thingName=THING)
    assert invoke(sns_event(SAMPLE))["outcomes"][0]["status"] == "contained"
    assert cert_status(env, cert) == "INACTIVE"


# ---- certificate violations and unproven attribution -------------------------------------------


def certificate_message(cert: str, **changes: Any) -> str:
    """A certificate violation: Defender's format with thingName absent and certificateId set
    (shared.violations), e.g. refused Connects under another device's client id."""
    data = {k: v for k, v in SAMPLE_DICT.items() if k != "thingName"}
    data.update({"violationId": "cert-violation-1", "certificateId": cert, "clientId": "dev-victim",
                 "behavior": {"name": "AuthorizationFailures", "metric": "aws:num-authorization-failures"},
                 "metricValue": {"count": 50}, **changes})
    return json.dumps(data)


def test_a_certificate_violation_deactivates_that_certificate_and_touches_no_thing(env):
    (attacker,) = make_thing(env.iot, name="dev-attacker")
    (victim,) = make_thing(env.iot, name="dev-victim")
    calls = counted(env)

    outcome = invoke(sns_event(certificate_message(attacker)))["outcomes"][0]

    assert outcome["status"] == "contained"
    assert cert_status(env, attacker) == "INACTIVE" and cert_status(env, victim) == "ACTIVE"
    assert not in_group(env, thing="dev-victim") and not in_group(env, thing="dev-attacker")
    assert calls.iot.calls == ["describe_certificate", "update_certificate"]
    assert calls.data.calls == []  # no DeleteConnection of a client id that is only a claim
    item = incident(env, "cert-violation-1")
    assert item["certificate_id"] == attacker and "thing" not in item and item["client_id"] == "dev-victim"
    assert item["steps"] == {f"certificate:{attacker}": "done", "notify": "done"}
    (message,) = ops_messages(env)
    assert message["details"]["certificate"] == attacker and message["details"]["thing"] is None
    assert "no thing was touched" in message["text"]


CLAIM_POLICY = "fleetwarden-test-claim"


def claim_certificate(env) -> str:
    """The fleet's claim certificate: attached to no thing, holding the claim policy."""
    env.iot.create_policy(policyName=CLAIM_POLICY, policyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
    pem = certificate_pems()[next(_next_pem) % len(certificate_pems())]
    cert = env.iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
    env.iot.attach_policy(policyName=CLAIM_POLICY, target=cert["certificateArn"])
    return cert["certificateId"]


def test_the_claim_certificate_is_reported_never_deactivated(env):
    """It ships on every field device: deactivating it would stop field provisioning for the whole
    fleet, and anyone who pulled it out of one device's firmware could make that happen."""
    set_env(env.monkeypatch, PROTECTED_POLICIES=CLAIM_POLICY)
    claim = claim_certificate(env)
    (victim,) = make_thing(env.iot, name="dev-victim")
    calls = counted(env)

    outcome = invoke(sns_event(certificate_message(claim)))["outcomes"][0]

    assert outcome["status"] == "protected"
    assert cert_status(env, claim) == "ACTIVE" and cert_status(env, victim) == "ACTIVE"
    assert calls.iot.calls == ["describe_certificate", "list_attached_policies"]
    assert incident(env, "cert-violation-1")["steps"] == {"notify": "done"}
    (message,) = ops_messages(env)
    assert "not contained" in message["subject"] and CLAIM_POLICY in message["text"]
    assert message["details"]["outcome"] == "protected"


def test_with_protection_configured_another_certificate_is_still_deactivated(env):
    set_env(env.monkeypatch, PROTECTED_POLICIES=CLAIM_POLICY)
    claim_certificate(env)
    (attacker,) = make_thing(env.iot, name="dev-attacker")
    calls = counted(env)
    assert invoke(sns_event(certificate_message(attacker)))["outcomes"][0]["status"] == "contained"
    assert cert_status(env, attacker) == "INACTIVE"
    assert calls.iot.calls == ["describe_certificate", "list_attached_policies", "update_certificate"]


def test_without_protection_the_claim_certificate_is_deactivated_like_any_other(env):
    claim = claim_certificate(env)  # PROTECTED_POLICIES unset: protect_claim_certificate: false
    assert invoke(sns_event(certificate_message(claim)))["outcomes"][0]["status"] == "contained"
    assert cert_status(env, claim) == "INACTIVE"


def test_a_certificate_violating_again_is_a_repeat(env):
    (attacker,) = make_thing(env.iot, name="dev-attacker")
    invoke(sns_event(certificate_message(attacker)))
    ops_messages(env)
    calls = counted(env)
    for n in (2, 3):
        assert invoke(sns_event(certificate_message(attacker, violationId=f"cert-violation-{n}")))[
            "outcomes"][0]["status"] == "repeat"
    assert calls.iot.calls == ["describe_certificate"] * 2
    assert len(ops_messages(env)) == 1
    assert incident(env, "cert-violation-1")["repeat_count"] == 2


def test_an_unknown_certificate_is_recorded(env):
    outcome = invoke(sns_event(certificate_message("ab" * 32)))["outcomes"][0]
    assert outcome["status"] == "unknown-certificate"
    assert ops_messages(env) == []


def test_a_defender_authorization_failure_alert_is_reported_never_contained(env):
    """Anyone holding any certificate can make refused Connects under a victim's client id; Device
    Defender does not document whom it charges them to, so its alert on that metric contains nothing."""
    (cert,) = make_thing(env.iot)
    behavior = {**SAMPLE_DICT["behavior"], "name": "AuthFailures", "metric": "aws:num-authorization-failures"}
    calls = counted(env)
    outcome = invoke(sns_event(violation(behavior=behavior)))["outcomes"][0]
    assert outcome["status"] == "reported"
    assert calls.iot.calls == [] and calls.data.calls == []
    assert not in_group(env) and cert_status(env, cert) == "ACTIVE"
    (note,) = ops_messages(env)
    assert note["details"]["attribution"] == "unproven"


@pytest.mark.parametrize("subject", ["thing", "certificate"])
def test_unproven_attribution_is_reported_never_contained(env, subject):
    (cert,) = make_thing(env.iot)
    message = (violation(attribution="unproven") if subject == "thing"
               else certificate_message(cert, attribution="unproven"))
    calls = counted(env)
    outcome = invoke(sns_event(message))["outcomes"][0]
    assert outcome["status"] == "reported"
    assert calls.iot.calls == [] and calls.data.calls == [] and calls.sns.calls == ["publish"]
    assert not in_group(env) and cert_status(env, cert) == "ACTIVE"
    (note,) = ops_messages(env)
    assert "not contained" in note["subject"] and note["details"]["attribution"] == "unproven"
