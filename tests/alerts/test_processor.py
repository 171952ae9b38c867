"""Alert processor: moto for S3 (versioned, SSE-KMS), DynamoDB and Secrets Manager; a real HTTP
server on 127.0.0.1 stands in for the classifier and records the exact bytes it receives.

Most tests go through handler.lambda_handler with real-shaped SQS events wrapping real-shaped S3
notifications, so the batch processor, idempotency layer and secrets provider are the real ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import boto3
import pytest
from alerts.processor import handler as alert_handler
from alerts.processor.forwarder import (
    ConfigurationError,
    Forwarder,
    ForwardError,
    classifier_body,
    device_ref,
    urllib_post,
    validate_url,
)
from alerts.processor.process import AlertProcessor, parse_message
from moto import mock_aws
from alerts.model import (
    ALERT_ID_PATTERN,
    MAX_ALERT_BYTES,
    THING_PATTERN,
    Alert,
    AlertHeader,
    alert_id_for,
    index_item,
    normalise_event_time,
    parse_alert,
    parse_alert_key,
    quarantine_key,
)

from tests.helpers import ALERTS_TABLE, create_alerts_table

REGION = "eu-west-1"
BUCKET = "fleetwarden-test-data"
IDEMPOTENCY_TABLE = "fleetwarden-test-alert-idempotency"
API_KEY_SECRET = "fleetwarden/test/classifier-api-key"
DEVICE_REF_SECRET = "fleetwarden/test/device-ref-key"
API_KEY = "test-api-key-4c1f9e0b7d2a"
DEVICE_REF_KEY = "device-ref-key-0123456789abcdef"
THING = "sensor-0042"
TRACE = base64.b64encode(b"stack: frame0 frame1 secret-ish-core-dump").decode()
EVENT_TIME = "2024-03-05T07:08:09.123Z"
TIMEOUT = 0.4


# ---- the classifier stand-in -----------------------------------------------------------------


class Classifier:
    """A real HTTP server in a thread. `mode`: "200", "500", "400", "422", "401" or "hang"."""

    def __init__(self):
        self.mode = "200"
        self.requests: list[SimpleNamespace] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                raw = self.raw_requestline + bytes(self.headers) + body
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append(SimpleNamespace(path=self.path, headers=headers, body=body, raw=raw,
                                                      mode=outer.mode))
                if outer.mode == "hang":
                    outer.release.wait(5)  # well past the client's timeout
                    return
                status = int(outer.mode)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/classify"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def classifier():
    server = Classifier()
    yield server
    server.close()


# ---- AWS (moto) and the function's environment ------------------------------------------------


@dataclass
class LambdaContext:
    function_name: str = "fleetwarden-test-alert-processor"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = (
        "arn:aws:lambda:eu-west-1:123456789012:function:fleetwarden-test-alert-processor")
    aws_request_id: str = "0f4d7b2e-3c1a-4e5f-9a8b-7c6d5e4f3a2b"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def create_alert_tables(dynamodb) -> tuple:
    """The tables as the stack must create them (keys, GSI, TTL attribute)."""
    alerts = create_alerts_table(dynamodb)
    idempotency = dynamodb.create_table(
        TableName=IDEMPOTENCY_TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    boto3.client("dynamodb", region_name=REGION).update_time_to_live(
        TableName=IDEMPOTENCY_TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"})
    return alerts, idempotency


class Env(SimpleNamespace):
    """Handles on the mocked account, and builders for objects and events."""

    def put(self, body: bytes, *, thing: str = THING, key: str | None = None) -> tuple[str, str]:
        key = key or f"alerts/{thing}/2024/03/05/1709622489123-{uuid.uuid4()}.json"
        version = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]
        return key, version

    def put_alert(self, alert: dict | None = None, **kwargs) -> tuple[str, str]:
        return self.put(json.dumps(alert or valid_alert()).encode(), **kwargs)

    def rebuild(self) -> None:
        """A new container: the handler reads its environment and secrets again."""
        self.dirty = True
        alert_handler._dependencies.cache_clear()

    def items(self) -> list[dict]:
        return self.alerts.scan(ConsistentRead=True)["Items"]

    def quarantined(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix="quarantine/")
        return [o["Key"] for o in listing.get("Contents", [])]

    def run(self, *bodies: str | dict, ids: list[str] | None = None) -> dict:
        event = sqs_event(bodies, ids)
        return alert_handler.lambda_handler(event, LambdaContext())


def valid_alert(**header) -> dict:
    return {"header": {"fw": "1.4.2", "code": 1042, "fields": {"3": 17.5, "12": -4}, **header},
            "trace": TRACE}


def s3_record(key: str, version: str | None, size: int, *, bucket: str = BUCKET, event_time: str = EVENT_TIME,
              event_name: str = "ObjectCreated:Put") -> dict:
    """One record exactly as S3 writes it: see
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html"""
    obj = {"key": urllib.parse.quote_plus(key, safe="/"), "size": size,
           "eTag": "0123456789abcdef0123456789abcdef", "sequencer": "0065E6C4D92F5B1A37"}
    if version is not None:
        obj["versionId"] = version
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": event_time,
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:iot-rule"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "alerts-to-queue",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                       "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }


def s3_notification(*records: dict) -> dict:
    return {"Records": list(records)}


TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-03-05T07:00:00.000Z",
              "Bucket": BUCKET, "RequestId": "5582815E1AEA5ADF",
              "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}


def sqs_event(bodies, ids: list[str] | None = None) -> dict:
    """An SQS event as Lambda delivers it from a queue fed by S3 notifications."""
    ids = ids or [str(uuid.uuid4()) for _ in bodies]
    return {"Records": [{
        "messageId": message_id,
        "receiptHandle": f"AQEB{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1709622489200",
                       "SenderId": "AIDAJHIPRHEMV73VRJEBU",
                       "ApproximateFirstReceiveTimestamp": "1709622489210"},
        "messageAttributes": {},
        "md5OfBody": hashlib.md5((body if isinstance(body, str) else json.dumps(body)).encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:fleetwarden-test-alerts",
        "awsRegion": REGION,
    } for message_id, body in zip(ids, bodies)]}


def notify(env: Env, key: str, version: str | None, **kwargs) -> dict:
    versioned = {"VersionId": version} if version else {}
    size = env.s3.head_object(Bucket=BUCKET, Key=key, **versioned)["ContentLength"]
    return s3_notification(s3_record(key, version, kwargs.pop("size", size), **kwargs))


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


ENVIRONMENT = {
    "ALERTS_TABLE": ALERTS_TABLE,
    "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
    "CLASSIFIER_API_KEY_SECRET": API_KEY_SECRET,
    "DEVICE_REF_KEY_SECRET": DEVICE_REF_SECRET,
    "CLASSIFIER_TIMEOUT_SECONDS": str(TIMEOUT),
    "POWERTOOLS_METRICS_NAMESPACE": "Fleetwarden",
}


@pytest.fixture(scope="module")
def account():
    """One mocked account per module (creating clients is the slow part); `env` empties it per test."""
    alert_handler._dependencies.cache_clear()
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        kms_key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key},
            "BucketKeyEnabled": True}]})
        secrets = boto3.client("secretsmanager", region_name=REGION)
        secrets.create_secret(Name=API_KEY_SECRET, SecretString=API_KEY)
        secrets.create_secret(Name=DEVICE_REF_SECRET, SecretString=DEVICE_REF_KEY)
        alerts, idempotency = create_alert_tables(boto3.resource("dynamodb", region_name=REGION))
        yield SimpleNamespace(s3=s3, alerts=alerts, idempotency=idempotency, secrets=secrets)
    alert_handler._dependencies.cache_clear()


def _empty(account) -> None:
    for table, keys in ((account.alerts, ("thing", "alert_id")), (account.idempotency, ("id",))):
        for item in table.scan(ConsistentRead=True)["Items"]:
            table.delete_item(Key={k: item[k] for k in keys})
    listing = account.s3.list_object_versions(Bucket=BUCKET)
    doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
              for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]
    if doomed:
        account.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": doomed, "Quiet": True})


@pytest.fixture
def env(monkeypatch, classifier, account):
    for name, value in {**ENVIRONMENT, "CLASSIFIER_URL": classifier.url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ALERTS_BUCKET", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    classifier.mode = "200"
    classifier.requests.clear()
    _empty(account)
    log = io.StringIO()
    previous = alert_handler.logger.registered_handler.setStream(log)
    state = Env(**vars(account), classifier=classifier, log=log, dirty=False)
    yield state
    alert_handler.logger.registered_handler.setStream(previous)
    if state.dirty:  # the test changed the environment or a secret: the next one starts afresh
        account.secrets.put_secret_value(SecretId=API_KEY_SECRET, SecretString=API_KEY)
        alert_handler._dependencies.cache_clear()


def expected_ref(thing: str = THING) -> str:
    return hmac.new(DEVICE_REF_KEY.encode(), thing.encode(), hashlib.sha256).hexdigest()


def assert_untouched(env: Env, key: str, version: str) -> None:
    head = env.s3.head_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert "reason" not in head.get("Metadata", {})
    tags = env.s3.get_object_tagging(Bucket=BUCKET, Key=key, VersionId=version)["TagSet"]
    assert tags == []
    assert env.quarantined() == []


# ---- valid alerts ----------------------------------------------------------------------------


def test_valid_alert_is_indexed_and_forwarded_with_only_the_minimal_payload(env, capsys):
    key, version = env.put_alert()
    response = env.run(notify(env, key, version))

    assert failures(response) == []
    alert_id = alert_id_for(EVENT_TIME, BUCKET, key, version)
    assert alert_id.startswith("2024-03-05T07:08:09.123Z#")
    assert env.items() == [{
        "thing": THING, "alert_id": alert_id, "received_at": "2024-03-05T07:08:09.123Z",
        "code": 1042, "fw": "1.4.2", "field_count": 2, "bucket": BUCKET, "key": key, "version_id": version,
        "size": len(json.dumps(valid_alert()).encode()),  # the bytes read: the trace download is checked against it
    }]
    by_id = env.alerts.query(IndexName="by_alert_id", KeyConditionExpression="alert_id = :a",
                             ExpressionAttributeValues={":a": alert_id})["Items"]
    assert [i["thing"] for i in by_id] == [THING]

    [request] = env.classifier.requests
    assert request.path == "/v1/classify"
    assert json.loads(request.body) == {
        "device_ref": expected_ref(),
        "alert_id": alert_id,
        "header": {"fw": "1.4.2", "code": 1042, "fields": {"3": 17.5, "12": -4.0}},
    }
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == alert_id  # the vendor contract (README)
    raw = request.raw
    for secret in (TRACE, base64.b64decode(TRACE).decode(), THING, BUCKET, key, key.rsplit("/", 1)[1],
                   DEVICE_REF_KEY, version):
        assert secret.encode() not in raw, secret
    assert env.quarantined() == []
    out = capsys.readouterr().out
    assert "AlertsForwarded" in out
    assert TRACE not in env.log.getvalue()


def test_key_is_url_decoded_from_the_event(env):
    key, version = env.put_alert(key="alerts/sensor_7/2024/03/05/1709622489123-a.b.json")
    record = s3_record(key, version, 100)
    record["s3"]["object"]["key"] = "alerts/sensor_7/2024/03/05/1709622489123-a%2Eb.json"
    assert failures(env.run(s3_notification(record))) == []
    assert [i["key"] for i in env.items()] == [key]
    assert len(env.classifier.requests) == 1


def test_two_records_in_one_notification(env):
    (k1, v1), (k2, v2) = env.put_alert(), env.put_alert(thing="sensor-0043")
    body = s3_notification(s3_record(k1, v1, 200), s3_record(k2, v2, 200))
    assert failures(env.run(body)) == []
    assert sorted(i["thing"] for i in env.items()) == [THING, "sensor-0043"]
    assert sorted(json.loads(r.body)["device_ref"] for r in env.classifier.requests) == sorted(
        [expected_ref(), expected_ref("sensor-0043")])


# ---- quarantine --------------------------------------------------------------------------------


INVALID_BODIES = {
    "malformed-json": (b'{"header": {"fw": "1.4.2", "code": 1042', "invalid-json"),
    "not-utf8": (b'\xff\xfe{"header": 1}', "invalid-json"),
    "duplicate-keys": (b'{"header": {"fw": "1", "code": 1, "fields": {}}, "header": {}, "trace": "aA=="}',
                       "invalid-json"),
    "wrong-types": (json.dumps(valid_alert(code="1042")).encode(), "invalid-alert"),
    "bool-code": (json.dumps(valid_alert(code=True)).encode(), "invalid-alert"),
    "bool-field": (json.dumps(valid_alert(fields={"3": True})).encode(), "invalid-alert"),
    "non-numeric-field-id": (json.dumps(valid_alert(fields={"temp": 1.0})).encode(), "invalid-alert"),
    "nan-field": (b'{"header": {"fw": "1", "code": 1, "fields": {"3": NaN}}, "trace": "aA=="}',
                  "invalid-alert"),
    "too-many-fields": (json.dumps(valid_alert(fields={str(i): 1 for i in range(65)})).encode(),
                        "invalid-alert"),
    "missing-header": (json.dumps({"trace": TRACE}).encode(), "invalid-alert"),
    "invalid-base64": (json.dumps({**valid_alert(), "trace": "not base64!"}).encode(), "invalid-alert"),
    "empty-trace": (json.dumps({**valid_alert(), "trace": ""}).encode(), "invalid-alert"),
    "extra-key": (json.dumps({**valid_alert(), "thing": THING}).encode(), "invalid-alert"),
    "array": (b"[]", "invalid-alert"),
}


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
def test_invalid_body_is_quarantined_not_indexed_not_forwarded(env, case, capsys):
    body, reason = INVALID_BODIES[case]
    key, version = env.put(body)
    response = env.run(notify(env, key, version))

    assert failures(response) == []
    assert env.items() == []
    assert env.classifier.requests == []
    target = f"quarantine/{reason}/{key}"
    assert env.quarantined() == [target]
    copy = env.s3.get_object(Bucket=BUCKET, Key=target)
    assert copy["Metadata"] == {"reason": reason}
    assert copy["Body"].read() == body
    assert env.s3.get_object_tagging(Bucket=BUCKET, Key=target)["TagSet"] == [
        {"Key": "fleetwarden-quarantine", "Value": reason}]
    assert env.s3.get_object_tagging(Bucket=BUCKET, Key=key, VersionId=version)["TagSet"] == [
        {"Key": "fleetwarden-quarantine", "Value": reason}]
    assert env.s3.head_object(Bucket=BUCKET, Key=key, VersionId=version)["ContentLength"] == len(body)
    out = capsys.readouterr().out
    assert "AlertsQuarantined" in out and f'"reason":"{reason}"' in out
    log = env.log.getvalue()
    assert "alert object quarantined" in log and '"level":"WARNING"' in log
    assert TRACE not in log


def test_quarantine_copies_the_version_named_by_the_event(env):
    key, bad_version = env.put(b"not json")
    env.put_alert(key=key)  # a newer, valid version of the same key
    assert failures(env.run(notify(env, key, bad_version))) == []
    copy = env.s3.get_object(Bucket=BUCKET, Key=f"quarantine/invalid-json/{key}")
    assert copy["Body"].read() == b"not json"
    assert env.items() == [] and env.classifier.requests == []


def test_oversized_by_event_size_is_quarantined_without_reading(env, monkeypatch):
    key, version = env.put_alert()
    deps = alert_handler._dependencies()
    monkeypatch.setattr(deps.s3, "get_object", lambda **_: pytest.fail("oversized object was read"))
    body = s3_notification(s3_record(key, version, MAX_ALERT_BYTES + 1))
    assert failures(env.run(body)) == []
    assert env.quarantined() == [f"quarantine/oversized/{key}"]
    assert env.items() == [] and env.classifier.requests == []


def test_oversized_object_is_quarantined_even_if_the_event_understates_it(env):
    body = json.dumps({**valid_alert(), "trace": base64.b64encode(b"x" * MAX_ALERT_BYTES).decode()}).encode()
    key, version = env.put(body)
    assert failures(env.run(s3_notification(s3_record(key, version, 10)))) == []
    assert env.quarantined() == [f"quarantine/oversized/{key}"]
    assert env.items() == [] and env.classifier.requests == []


def test_object_of_exactly_the_limit_is_read(env):
    padding = MAX_ALERT_BYTES - len(json.dumps({**valid_alert(), "trace": ""}).encode())
    trace = base64.b64encode(b"x" * (padding // 4 * 3)).decode()
    body = json.dumps({**valid_alert(), "trace": trace}).encode()
    body = body.replace(b'"trace"', b' ' * (MAX_ALERT_BYTES - len(body)) + b'"trace"')
    assert len(body) == MAX_ALERT_BYTES
    key, version = env.put(body)
    assert failures(env.run(notify(env, key, version))) == []
    assert len(env.items()) == 1 and len(env.classifier.requests) == 1


@pytest.mark.parametrize("key", [
    "alerts/sensor-0042/2024/03/05/../x.json",
    "alerts/sensor 0042/2024/03/05/1.json",
    "alerts/sensor-0042/2024/3/5/1.json",
    "alerts/sensor-0042/2024/03/05/1.txt",
    "telemetry/sensor-0042/2024/03/05/1.json",
    "alerts/sensor-0042/1.json",
])
def test_unexpected_key_is_quarantined(env, key):
    _, version = env.put_alert(key=key)
    assert failures(env.run(notify(env, key, version))) == []
    assert env.quarantined() == [f"quarantine/unexpected-key/{key}"]
    head = env.s3.head_object(Bucket=BUCKET, Key=f"quarantine/unexpected-key/{key}")
    assert head["Metadata"] == {"reason": "unexpected-key"}
    assert env.items() == [] and env.classifier.requests == []


def test_quarantine_copies_are_never_quarantined_again(env):
    key, version = env.put(b"{")
    env.run(notify(env, key, version))
    [copy] = env.quarantined()
    copy_version = env.s3.head_object(Bucket=BUCKET, Key=copy)["VersionId"]
    assert failures(env.run(notify(env, copy, copy_version))) == []
    assert env.quarantined() == [copy]


# ---- duplicates ----------------------------------------------------------------------------------


def test_duplicate_event_in_the_same_batch_forwards_and_indexes_once(env, capsys):
    key, version = env.put_alert()
    body = notify(env, key, version)
    response = env.run(body, body)
    assert failures(response) == []
    assert len(env.classifier.requests) == 1
    assert len(env.items()) == 1
    assert "AlertEventsDuplicate" in capsys.readouterr().out


def test_duplicate_event_in_a_later_batch_forwards_and_indexes_once(env):
    key, version = env.put_alert()
    body = notify(env, key, version)
    assert failures(env.run(body)) == []
    env.rebuild()  # even from a fresh container
    assert failures(env.run(body)) == []
    assert len(env.classifier.requests) == 1
    assert len(env.items()) == 1


def test_a_result_stored_by_the_previous_version_still_reads_back(env, capsys):
    """Idempotency records live 24 h: those written before results were ObjectResults (plain
    dicts, the same field names) must still count as processed after a deploy."""
    key, version = env.put_alert()
    body = notify(env, key, version)
    assert failures(env.run(body)) == []
    [record] = env.idempotency.scan()["Items"]
    stored = json.loads(record["data"])
    old = {"outcome": "forwarded", "alert_id": stored["alert_id"]}  # what the previous version stored
    env.idempotency.update_item(Key={"id": record["id"]}, UpdateExpression="SET #d = :d",
                                ExpressionAttributeNames={"#d": "data"},
                                ExpressionAttributeValues={":d": json.dumps(old)})
    capsys.readouterr()
    assert failures(env.run(body)) == []
    assert len(env.classifier.requests) == 1 and len(env.items()) == 1
    assert "AlertEventsDuplicate" in capsys.readouterr().out


def test_the_processor_refuses_an_idempotency_config_that_cannot_tell_duplicates():
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from alerts.processor.process import IDEMPOTENCY_KEY_JMESPATH, new_idempotency_config

    class Store:  # never reached: the check comes first
        pass

    with pytest.raises(ValueError, match="new_idempotency_config"):
        AlertProcessor(s3=None, table=None, forward=None, persistence_store=Store(),
                       idempotency_config=IdempotencyConfig(event_key_jmespath=IDEMPOTENCY_KEY_JMESPATH))
    assert new_idempotency_config(expires_after_seconds=60).expires_after_seconds == 60


def test_a_new_version_of_the_same_key_is_a_new_alert(env):
    key, v1 = env.put_alert()
    _, v2 = env.put_alert(key=key)
    assert failures(env.run(notify(env, key, v1), notify(env, key, v2))) == []
    assert len(env.classifier.requests) == 2
    assert sorted(i["version_id"] for i in env.items()) == sorted([v1, v2])


def test_duplicate_quarantine_event_is_harmless(env):
    key, version = env.put(b"nope")
    body = notify(env, key, version)
    assert failures(env.run(body, body)) == []
    assert env.quarantined() == [f"quarantine/invalid-json/{key}"]


# ---- classifier failures -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "hang", "refused"])
def test_classifier_failure_fails_the_message_then_a_retry_forwards_once(env, mode, monkeypatch, capsys):
    key, version = env.put_alert()
    body = notify(env, key, version)
    if mode == "refused":
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        monkeypatch.setenv("CLASSIFIER_URL", f"http://127.0.0.1:{port}/v1/classify")
        env.rebuild()
    env.classifier.mode = mode
    response = env.run(body, ids=["m-1"])

    assert failures(response) == ["m-1"]
    assert len(env.classifier.requests) == (0 if mode == "refused" else 2)  # two attempts, no more
    assert_untouched(env, key, version)
    assert env.s3.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read() == json.dumps(
        valid_alert()).encode()
    assert "AlertForwardFailures" in capsys.readouterr().out

    # SQS redelivers the message; the classifier is back.
    monkeypatch.setenv("CLASSIFIER_URL", env.classifier.url)
    env.rebuild()
    env.classifier.mode = "200"
    env.classifier.requests.clear()
    assert failures(env.run(body, ids=["m-1"])) == []
    assert len(env.classifier.requests) == 1
    assert len(env.items()) == 1  # indexed on the first attempt, the replayed put is harmless
    # and a further duplicate is not forwarded again
    assert failures(env.run(body)) == []
    assert len(env.classifier.requests) == 1


@pytest.mark.parametrize("status", ["400", "422"])
def test_classifier_rejection_is_processed_not_retried(env, status, capsys):
    key, version = env.put_alert()
    env.classifier.mode = status
    assert failures(env.run(notify(env, key, version))) == []
    assert len(env.classifier.requests) == 1
    assert len(env.items()) == 1
    assert "AlertsRejectedByClassifier" in capsys.readouterr().out
    assert env.quarantined() == []


def test_unauthorised_retries_once_with_a_fresh_api_key(env):
    key, version = env.put_alert()
    alert_handler._dependencies().forward.__self__.secrets.get(API_KEY_SECRET)  # the old key is cached
    env.secrets.put_secret_value(SecretId=API_KEY_SECRET, SecretString="rotated-key")
    env.classifier.mode = "401"
    assert failures(env.run(notify(env, key, version), ids=["m-1"])) == ["m-1"]
    assert [r.headers["x-api-key"] for r in env.classifier.requests] == [API_KEY, "rotated-key"]


def test_mixed_batch_reports_exactly_the_failing_message(env, monkeypatch):
    good_key, good_version = env.put_alert()
    bad_key, bad_version = env.put(b"{{{")
    failing_key, failing_version = env.put_alert(thing="sensor-0666")

    real_forward = alert_handler._dependencies().forward

    def forward(*, thing, alert_id, header):  # the classifier is down for this one device
        if thing == "sensor-0666":
            env.classifier.mode = "500"
        try:
            return real_forward(thing=thing, alert_id=alert_id, header=header)
        finally:
            env.classifier.mode = "200"

    monkeypatch.setattr(alert_handler._dependencies(), "forward", forward)
    response = env.run(
        notify(env, good_key, good_version),
        notify(env, bad_key, bad_version),
        notify(env, failing_key, failing_version),
        TEST_EVENT,
        ids=["valid", "malformed", "failing", "test-event"],
    )
    assert failures(response) == ["failing"]
    assert [i["key"] for i in env.items()] == [good_key, failing_key] or sorted(
        i["key"] for i in env.items()) == sorted([good_key, failing_key])
    assert env.quarantined() == [f"quarantine/invalid-json/{bad_key}"]
    assert_ok = [json.loads(r.body)["device_ref"] for r in env.classifier.requests if r.mode == "200"]
    assert assert_ok == [expected_ref()]


def test_every_message_failing_is_reported_not_raised(env):
    key, version = env.put_alert()
    env.classifier.mode = "500"
    response = env.run(notify(env, key, version), notify(env, key, version), ids=["a", "b"])
    assert failures(response) == ["a", "b"]


def test_configuration_error_fails_every_message(env, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_URL", "http://classifier.example.com/v1")  # plain http off-host
    env.rebuild()
    key, version = env.put_alert()
    assert failures(env.run(notify(env, key, version), TEST_EVENT, ids=["a", "b"])) == ["a", "b"]
    assert env.items() == []
    assert "CLASSIFIER_URL must use https" in env.log.getvalue()


# ---- messages that name no object -------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "not json at all",
    "[]",
    "{}",
    json.dumps({"Records": []}),
    json.dumps({"Records": [{"eventSource": "aws:sqs"}]}),
    json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}]}),
    json.dumps(s3_notification(s3_record("alerts/x/2024/03/05/1.json", None, 1, event_time="yesterday"))),
    json.dumps(s3_notification(s3_record("alerts/x/2024/03/05/1.json", None, 1, bucket="Not_A_Bucket"))),
])
def test_non_s3_message_is_counted_and_processed(env, body, capsys):
    assert failures(env.run(body)) == []
    assert "AlertMessagesInvalid" in capsys.readouterr().out
    assert env.items() == [] and env.classifier.requests == [] and env.quarantined() == []


def test_test_event_and_non_creation_events_are_ignored(env, capsys):
    key, version = env.put_alert()
    removed = s3_notification(s3_record(key, version, 10, event_name="ObjectRemoved:Delete"))
    assert failures(env.run(TEST_EVENT, removed)) == []
    assert env.items() == [] and env.classifier.requests == []
    assert "AlertMessagesInvalid" not in capsys.readouterr().out


def test_object_gone_is_processed_and_counted(env, capsys):
    key, version = env.put_alert()
    body = notify(env, key, version)
    env.s3.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert failures(env.run(body)) == []
    assert "AlertObjectsMissing" in capsys.readouterr().out
    assert env.items() == [] and env.classifier.requests == []


def test_foreign_bucket_is_ignored_when_the_bucket_is_pinned(env, monkeypatch):
    monkeypatch.setenv("ALERTS_BUCKET", BUCKET)
    env.rebuild()
    key, version = env.put_alert()
    body = s3_notification(s3_record(key, version, 10, bucket="someone-elses-bucket"))
    assert failures(env.run(body)) == []
    assert env.items() == [] and env.classifier.requests == []


def test_not_enough_time_left_fails_the_message_before_any_work(env, monkeypatch):
    key, version = env.put_alert()

    class Hurried(LambdaContext):
        def get_remaining_time_in_millis(self) -> int:
            return 1_000

    response = alert_handler.lambda_handler(sqs_event([notify(env, key, version)], ["m"]), Hurried())
    assert failures(response) == ["m"]
    assert env.items() == [] and env.classifier.requests == []
    assert env.idempotency.scan()["Items"] == []  # no in-progress record left behind


# ---- units: the shared contract, the forwarder, parsing ---------------------------------------


def test_alert_key_layout():
    assert parse_alert_key("alerts/sensor-0042/2024/03/05/1709622489123-0b1c.json") == "sensor-0042"
    for key in ("alerts/sensor-0042/2024/03/05/1.json\n", "alerts//2024/03/05/1.json", None, 42,
                "alerts/a/2024/03/05/.json", "alerts/a/2024/03/05/x/1.json",
                "alerts/a/\u0662\u0660\u0662\u0664/03/05/1.json"):
        assert parse_alert_key(key) is None


def test_alert_ids_sort_by_time_and_differ_per_version():
    early = alert_id_for("2024-03-05T07:08:09Z", BUCKET, "k", "v1")
    late = alert_id_for("2024-03-05T07:08:09.5+00:00", BUCKET, "k", "v1")
    assert early.startswith("2024-03-05T07:08:09.000Z#") and late.startswith("2024-03-05T07:08:09.500Z#")
    assert early < late
    assert alert_id_for(EVENT_TIME, BUCKET, "k", "v1") != alert_id_for(EVENT_TIME, BUCKET, "k", "v2")
    assert alert_id_for(EVENT_TIME, "ab", "c", None) != alert_id_for(EVENT_TIME, "a", "bc", None)
    assert ALERT_ID_PATTERN.fullmatch(alert_id_for(EVENT_TIME, BUCKET, "k", None))
    assert THING_PATTERN.fullmatch(THING) and not THING_PATTERN.fullmatch("a/b")
    assert normalise_event_time("2024-03-05T09:08:09.123456+02:00") == "2024-03-05T07:08:09.123Z"
    assert normalise_event_time("0999-01-01T00:00:00Z") == "0999-01-01T00:00:00.000Z"
    for odd in ("9999-12-31T23:59:59-05:00", "yesterday", "", None):
        with pytest.raises(ValueError):
            normalise_event_time(odd)


def test_index_item_has_no_trace_and_omits_a_missing_version():
    alert = Alert.model_validate(valid_alert())
    item = index_item(thing=THING, alert=alert, event_time=EVENT_TIME, bucket=BUCKET, key="k", version=None)
    assert "version_id" not in item and TRACE not in json.dumps(item)
    assert item["alert_id"] == alert_id_for(EVENT_TIME, BUCKET, "k", None)


def test_quarantine_key_for_a_very_long_key():
    key = "x/" * 511
    target = quarantine_key("unexpected-key", key)
    assert target.startswith("quarantine/unexpected-key/_long-key/") and len(target) <= 1024
    with pytest.raises(ValueError):
        quarantine_key("because", "k")


def test_classifier_body_is_exactly_the_three_keys():
    header = AlertHeader(fw="1", code=7, fields={"1": 2})
    assert json.loads(classifier_body("ref", "id", header)) == {
        "device_ref": "ref", "alert_id": "id", "header": {"fw": "1", "code": 7, "fields": {"1": 2.0}}}
    assert parse_alert(json.dumps(valid_alert()).encode()).header.fields == {"3": 17.5, "12": -4.0}


def test_classifier_url_rules():
    assert validate_url("https://classifier.example.com/v1") == "https://classifier.example.com/v1"
    assert validate_url("http://localhost:8080/x") == "http://localhost:8080/x"
    for url in ("http://classifier.example.com/v1", "ftp://x", "https://user:pw@x.example.com/", "", None,
                "https:///nohost", "file:///etc/passwd"):
        with pytest.raises(ConfigurationError):
            validate_url(url)


def test_device_ref_needs_a_real_key():
    assert device_ref(DEVICE_REF_KEY, THING) == expected_ref()
    with pytest.raises(ConfigurationError):
        device_ref("short", THING)


class StaticSecrets:
    def __init__(self, **values):
        self.values = values

    def get(self, name, *, refresh=False):
        return self.values[name]


def test_redirects_are_not_followed(classifier):
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", classifier.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        classifier.requests.clear()
        classifier.mode = "200"
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        assert urllib_post(url, b"{}", {"x-api-key": "k"}, 1.0) == 307
        forwarder = Forwarder(url, secrets=StaticSecrets(a="k", d=DEVICE_REF_KEY), api_key_secret="a",
                              device_ref_key_secret="d", timeout=1.0, sleep=lambda s: None)
        with pytest.raises(ForwardError):
            forwarder.forward(thing=THING, alert_id="id", header=AlertHeader(fw="1", code=1, fields={}))
        assert classifier.requests == []  # the key never reached the redirect target
    finally:
        server.shutdown()
        server.server_close()


def test_forwarder_attempts_are_bounded():
    calls, sleeps = [], []

    def post(url, body, headers, timeout):
        calls.append(timeout)
        raise TimeoutError()

    forwarder = Forwarder("https://c.example.com/", secrets=StaticSecrets(a="k", d=DEVICE_REF_KEY),
                          api_key_secret="a", device_ref_key_secret="d", timeout=3, post=post,
                          sleep=sleeps.append, attempts=10, backoff=30)
    with pytest.raises(ForwardError, match="TimeoutError"):
        forwarder.forward(thing=THING, alert_id="id", header=AlertHeader(fw="1", code=1, fields={}))
    assert len(calls) == 3 and all(t == 3 for t in calls)  # capped at 3 attempts
    assert all(s <= 2.0 for s in sleeps)  # capped backoff
    assert forwarder.worst_case_seconds() <= 3 * 3 + 4


def test_secret_with_a_line_break_is_a_configuration_error():
    forwarder = Forwarder("https://c.example.com/", secrets=StaticSecrets(a="k\n", d=DEVICE_REF_KEY),
                          api_key_secret="a", device_ref_key_secret="d", post=lambda *a: 200)
    with pytest.raises(ConfigurationError):
        forwarder.forward(thing=THING, alert_id="id", header=AlertHeader(fw="1", code=1, fields={}))


def test_parse_message_never_raises_on_odd_records():
    assert parse_message(None).invalid
    assert parse_message("[" * 100_000).invalid
    surrogate = s3_record("a", None, 1)
    surrogate["s3"]["object"]["key"] = "a\ud800"
    parsed = parse_message(json.dumps({"Records": [surrogate, 3, {"eventSource": "aws:s3"}]}))
    assert parsed.objects == [] and len(parsed.invalid) == 3


def test_the_alert_contract_imports_without_pydantic():
    """The alerts API imports alerts.model for the key layout: pydantic (~60 ms of cold start) loads
    only when Alert or AlertHeader is first used."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, alerts.model as m; assert 'pydantic' not in sys.modules; "
            "m.Alert; assert 'pydantic' in sys.modules")
    lambdas = Path(__file__).resolve().parents[2] / "lambdas"
    subprocess.run([sys.executable, "-c", code], cwd=lambdas, check=True, timeout=60)


def test_processor_without_idempotency_is_plain_logic():
    """process.py needs no Lambda and no idempotency table: fakes for everything."""
    calls = []

    class Body:
        def __init__(self, data):
            self.data = data

        def read(self, n):
            return self.data[:n]

        def close(self):
            pass

    class S3:
        def get_object(self, **kwargs):
            data = json.dumps(valid_alert()).encode()
            return {"Body": Body(data), "ContentLength": len(data)}

    class Table:
        def put_item(self, **kwargs):
            calls.append(("put", kwargs["Item"]["thing"]))

    def forward(*, thing, alert_id, header):
        calls.append(("forward", thing))
        return SimpleNamespace(rejected=False, status=200, attempts=1)

    counted = []
    processor = AlertProcessor(s3=S3(), table=Table(), forward=forward,
                               count=lambda name, reason=None: counted.append(name))
    key = "alerts/sensor-1/2024/03/05/1.json"
    outcomes = processor.process_message(json.dumps(s3_notification(s3_record(key, "v1", 10))))
    assert [o.outcome for o in outcomes] == ["forwarded"]
    assert calls == [("put", "sensor-1"), ("forward", "sensor-1")] and counted == ["AlertsForwarded"]
