"""Authorization-failure detector: real-shaped CloudWatch Logs subscription deliveries (gzip, base64)
of IoT Core v2 log lines, through the real handler, with moto DynamoDB (the counters table as the
stack creates it), SNS (an SQS queue subscribed to the violation topic reads back what was
published) and IoT (the registry that proves which thing a certificate belongs to).

The log lines are shaped as "CloudWatch Logs AWS IoT log entries" shows them
(https://docs.aws.amazon.com/iot/latest/developerguide/cwl-format.html#log-mb-connect: timestamp,
logLevel, traceId, accountId, status, eventType, protocol, clientId, principalId, sourceIp,
sourcePort; a failure adds reason and details).
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from defense.auth_failures import handler as auth_handler
from defense.auth_failures.counter import FailureCounter, Settings, settings_from_env
from defense.auth_failures.failures import (
    BAD_BASE64,
    BAD_GZIP,
    BAD_JSON,
    BAD_LINE,
    BAD_LOG_EVENT,
    BAD_MESSAGE_TYPE,
    BAD_TIMESTAMP,
    CERTIFICATE,
    THING,
    UNATTRIBUTED,
    MalformedEvent,
    batch_token,
    counter_key,
    decode_event,
    tally,
    window_of,
)
from botocore.exceptions import ClientError
from moto import mock_aws
from shared.violations import Violation, derive_violation_id

from tests.helpers import Calls, captured_logs, drain_published, topic_with_inbox
from tests.defense.test_detector_handler import emf

REGION = "eu-west-1"
ACCOUNT = "123456789012"
TABLE = "fleetwarden-test-detector-counters"
PROFILE = "fleetwarden-test-builtin"
MAX = 5  # MAX_AUTH_FAILURES: more than 5 in a window is a violation
WINDOW_SECONDS = 300
T0 = 1_709_622_300_000  # 2024-03-05T07:05:00Z, a window start, in ms
CLIENT = "sensor-0042"
# The certificate id of the docs' example line (64 hex characters, as IoT's certificate ids are).
PRINCIPAL = "145179c40e2219e18a909d896a5340b74cf97a39641beec2fc3eeafc1a932167"


@dataclass
class LambdaContext:
    function_name: str = "fleetwarden-test-auth-failure-detector"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fleetwarden-test-auth-failure-detector")
    aws_request_id: str = "3e1d0c9b-8a7f-4e6d-9c5b-4a3b2c1d0e9f"


def iot_line(client_id: Any = CLIENT, *, event_type: str = "Publish-In",
             reason: str = "AUTHORIZATION_FAILURE", principal: Any = PRINCIPAL, **extra) -> str:
    """One IoT Core v2 log line, as IoT writes it to AWSIotLogsV2."""
    line = {"timestamp": "2024-03-05 07:05:23.476", "logLevel": "ERROR", "traceId": str(uuid.uuid4()),
            "accountId": ACCOUNT, "status": "Failure", "eventType": event_type, "protocol": "MQTT",
            "clientId": client_id, "principalId": principal,
            "sourceIp": "205.251.233.181", "sourcePort": 13490, "reason": reason,
            "details": "Authorization Failure", **extra}
    return json.dumps(line)


def log_event(message: str, timestamp: int | None = T0 + 23_476) -> dict:
    event = {"id": str(uuid.uuid4().int)[:56], "message": message}
    if timestamp is not None:
        event["timestamp"] = timestamp
    return event


def failures(n: int, client_id: str = CLIENT, at: int = T0 + 1000, **line) -> list[dict]:
    """n failures on an accepted MQTT connection of `client_id` (Publish-In and Subscribe in turn):
    they count against that thing."""
    return [log_event(iot_line(client_id, event_type=("Publish-In", "Subscribe")[i % 2], **line), at + i)
            for i in range(n)]


def refused_connects(n: int, client_id: str, principal: str, at: int = T0 + 1000) -> list[dict]:
    return [log_event(iot_line(client_id, event_type="Connect", principal=principal), at + i)
            for i in range(n)]


def delivery(log_events: list[dict], message_type: str = "DATA_MESSAGE") -> dict:
    """The subscription filter's invocation: base64 of gzip of the CloudWatch Logs JSON."""
    doc = {"messageType": message_type, "owner": ACCOUNT, "logGroup": "AWSIotLogsV2",
           "logStream": "5a3c9f8e-0b7d-4e5f-8a1c-2d3e4f5a6b7c",
           "subscriptionFilters": ["fleetwarden-auth-failures"], "logEvents": log_events}
    if message_type == "CONTROL_MESSAGE":
        doc.update(logGroup="", logStream="", subscriptionFilters=[], logEvents=[{
            "id": "", "timestamp": T0,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Lambda."}])
    return {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(doc).encode())).decode()}}


@pytest.fixture
def aws(monkeypatch):
    """moto: the counters table as the stack makes it, the violation topic read back through SQS,
    and the function's environment. DynamoDB and SNS calls are counted."""
    for key, value in {"COUNTERS_TABLE": TABLE, "PROFILE_NAME": PROFILE,
                       "WINDOW_SECONDS": str(WINDOW_SECONDS), "MAX_AUTH_FAILURES": str(MAX)}.items():
        monkeypatch.setenv(key, value)
    auth_handler._dependencies.cache_clear()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expires_at"})
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic, queue_url = topic_with_inbox(sns, sqs, "fleetwarden-test-violations")
        monkeypatch.setenv("VIOLATION_TOPIC_ARN", topic)

        counter, problems = auth_handler._dependencies()
        assert problems == ()
        db = Calls(counter.client)
        raw_publish = counter.publish
        published_calls: list[dict] = []

        def publish(violation):
            published_calls.append(violation)
            raw_publish(violation)

        counter.publish = publish

        def published() -> list[dict]:
            return drain_published(sqs, queue_url)

        def item(subject: str = CLIENT, window_start: int = T0 // 1000, kind: str = THING) -> dict | None:
            key = {"pk": {"S": counter_key(kind, subject, window_start)}}
            got = dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
            return got.get("Item")

        iot = boto3.client("iot", region_name=REGION)  # the test's registry set-up
        counter.attachments._client = lookups = boto3.client("iot", region_name=REGION)
        iot_calls = Calls(lookups)  # what the detector asks the registry
        yield type("Aws", (), {"db": db, "counter": counter, "dynamodb": dynamodb, "topic": topic, "iot": iot,
                               "iot_calls": iot_calls,
                               "published": staticmethod(published), "item": staticmethod(item),
                               "publish_calls": published_calls})
    auth_handler._dependencies.cache_clear()


@pytest.fixture
def logs():
    with captured_logs(auth_handler.logger) as buffer:
        yield buffer


def invoke(event: Any) -> dict:
    return auth_handler.lambda_handler(event, LambdaContext())


# ---- counting and the one violation -------------------------------------------------------------


def test_up_to_the_limit_nothing_is_published_and_one_more_publishes_one_violation(aws, logs):
    assert invoke(delivery(failures(MAX)))["violations"] == 0
    assert aws.published() == []
    assert aws.item()["count"] == {"N": str(MAX)} and "alarmed" not in aws.item()
    summary = invoke(delivery(failures(1, at=T0 + 9000)))
    assert summary == {"failures": 1, "clients": 1, "violations": 1, "malformed": 0}
    (message,) = aws.published()
    violation = Violation.model_validate(message)
    assert message == {
        "attribution": "proven",
        "violationId": derive_violation_id(thing=CLIENT, profile=PROFILE,
                                           behavior_name="AuthorizationFailures", window=T0 // 1000),
        "thingName": CLIENT, "securityProfileName": PROFILE,
        "behavior": {"name": "AuthorizationFailures", "metric": "aws:num-authorization-failures",
                     "criteria": {"comparisonOperator": "greater-than", "value": {"count": MAX},
                                  "durationSeconds": WINDOW_SECONDS}},
        "metricValue": {"count": MAX + 1}, "violationEventType": "in-alarm",
        "violationEventTime": violation.violationEventTime,
    }
    # alarmed by this delivery (its token), then marked published (the outbox, see counter.py)
    assert "S" in aws.item()["alarmed"] and aws.item()["published"] == {"BOOL": True}
    assert '"violation published"' in logs.getvalue()


def test_more_failures_in_the_same_window_never_publish_again(aws):
    invoke(delivery(failures(MAX + 3)))
    for i in range(4):
        invoke(delivery(failures(2, at=T0 + 10_000 * (i + 1))))
    assert len(aws.published()) == 1
    assert len(aws.publish_calls) == 1
    # This container knows the window alarmed: the later deliveries wrote nothing.
    assert aws.db.calls == ["update_item", "update_item", "update_item"]  # add, alarm, published


def test_a_cold_container_learns_the_alarm_from_the_counter_and_does_not_publish(aws):
    invoke(delivery(failures(MAX + 1)))
    aws.counter.alarmed.clear()  # another container: nothing cached
    invoke(delivery(failures(3, at=T0 + 50_000)))
    assert len(aws.published()) == 1
    assert aws.item()["count"] == {"N": str(MAX + 4)}
    assert aws.db.calls == ["update_item"] * 4  # add, alarm, published, add


def test_failures_split_across_invocations_add_up(aws):
    invoke(delivery(failures(3)))
    invoke(delivery(failures(2, at=T0 + 100_000)))
    assert aws.published() == []
    invoke(delivery(failures(1, at=T0 + 200_000)))
    (message,) = aws.published()
    assert message["metricValue"] == {"count": 6}


def test_one_update_per_client_per_delivery(aws):
    events = (failures(3, "sensor-0001") + failures(2, "sensor-0002")
              + failures(1, "sensor-0001", at=T0 + 5000))
    summary = invoke(delivery(events))
    assert summary["clients"] == 2 and summary["failures"] == 6
    assert aws.db.calls == ["update_item", "update_item"]
    assert aws.item("sensor-0001")["count"] == {"N": "4"}


def test_a_new_window_starts_fresh(aws):
    invoke(delivery(failures(MAX)))
    invoke(delivery(failures(MAX, at=T0 + WINDOW_SECONDS * 1000 + 5)))
    assert aws.published() == []
    assert aws.item()["count"] == {"N": str(MAX)}
    assert aws.item(window_start=T0 // 1000 + WINDOW_SECONDS)["count"] == {"N": str(MAX)}
    invoke(delivery(failures(1, at=T0 + WINDOW_SECONDS * 1000 + 60_000)))
    (message,) = aws.published()
    assert message["violationId"] == derive_violation_id(
        thing=CLIENT, profile=PROFILE, behavior_name="AuthorizationFailures",
        window=T0 // 1000 + WINDOW_SECONDS)


def test_a_delivery_spanning_two_windows_counts_each(aws):
    events = failures(3, at=T0 + WINDOW_SECONDS * 1000 - 2) + failures(4, at=T0 + WINDOW_SECONDS * 1000 + 1)
    invoke(delivery(events))
    assert aws.item()["count"] == {"N": "2"}
    assert aws.item(window_start=T0 // 1000 + WINDOW_SECONDS)["count"] == {"N": "5"}


def test_the_counter_item_has_its_ttl(aws):
    invoke(delivery(failures(1)))
    item = aws.item()
    assert item["pk"] == {"S": f"auth#thing:{CLIENT}#{T0 // 1000}"}
    assert item["expires_at"] == {"N": str(T0 // 1000 + WINDOW_SECONDS + 86_400)}


def test_a_redelivered_or_retried_delivery_is_not_counted_twice(aws, capsys):
    event = delivery(failures(MAX))
    invoke(event)
    invoke(event)
    assert aws.item()["count"] == {"N": str(MAX)}
    assert aws.published() == []
    totals = emf(capsys)
    assert totals["AuthDeliveriesRepeated"] == 1 and totals["AuthFailuresCounted"] == 2 * MAX


def test_a_failed_publish_raises_releases_the_alarm_and_the_retry_publishes_once(aws, monkeypatch, logs):
    event = delivery(failures(MAX + 1) + failures(1, "sensor-0007"))
    real_publish = aws.counter.publish
    attempts = []

    def failing(violation):
        attempts.append(violation)
        raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "Publish")

    aws.counter.publish = failing
    with pytest.raises(auth_handler.CountingError):
        invoke(event)
    assert len(attempts) == 1 and "alarmed" not in aws.item()
    assert aws.item("sensor-0007")["count"] == {"N": "1"}  # the other client was still counted
    assert "will be retried" in logs.getvalue()
    aws.counter.publish = real_publish
    invoke(event)  # Lambda's retry of the same delivery
    (message,) = aws.published()
    assert message["metricValue"] == {"count": MAX + 1}
    assert aws.item()["count"] == {"N": str(MAX + 1)}
    assert aws.item("sensor-0007")["count"] == {"N": "1"}


def test_a_dynamodb_error_raises_after_the_other_clients(aws):
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                            "UpdateItem")
    aws.db.fail["update_item"] = [throttled]
    event = delivery(failures(2, "sensor-0001") + failures(2, "sensor-0002"))
    with pytest.raises(auth_handler.CountingError, match="1 of 2"):
        invoke(event)
    invoke(event)  # the retry counts the first client, and not the second again
    assert aws.item("sensor-0001")["count"] == {"N": "2"} and aws.item("sensor-0002")["count"] == {"N": "2"}


def test_only_one_of_two_concurrent_containers_publishes(aws):
    other = FailureCounter(aws.dynamodb, aws.counter.settings, aws.counter.publish,
                           attachments=aws.counter.attachments, now_ms=lambda: T0, logger=auth_handler.logger)
    invoke(delivery(failures(MAX)))
    first = other.record(THING, CLIENT, T0 // 1000, ["x-1"])  # crosses the limit: wins the alarm
    second = aws.counter.record(THING, CLIENT, T0 // 1000, ["y-1"])  # sees the alarm already set
    assert first.violation is not None and second.violation is None and second.alarmed
    assert len(aws.published()) == 1


def test_the_alarm_race_loser_does_not_publish(aws):
    # Both read a count over the limit before either alarmed: the conditional write decides.
    invoke(delivery(failures(MAX)))
    aws.dynamodb.update_item(TableName=TABLE, Key={"pk": {"S": counter_key(THING, CLIENT, T0 // 1000)}},
                             UpdateExpression="ADD #c :n", ExpressionAttributeNames={"#c": "count"},
                             ExpressionAttributeValues={":n": {"N": "1"}})
    original = aws.counter.client.update_item

    def racing(**kwargs):
        if kwargs.get("ConditionExpression") == "attribute_not_exists(#alarmed)":
            # another container alarms first
            original(TableName=TABLE, Key=kwargs["Key"], UpdateExpression="SET alarmed = :t",
                     ExpressionAttributeValues={":t": {"BOOL": True}})
        return original(**kwargs)

    aws.counter.client = type("Racing", (), {"update_item": staticmethod(racing)})()
    outcome = aws.counter.record(THING, CLIENT, T0 // 1000, ["z-1"])
    assert outcome.alarmed and outcome.violation is None
    assert aws.published() == []


def test_failures_of_a_connection_that_is_no_thing_count_against_its_certificate(aws):
    """A claim connection (client ids `claim-*`, the claim policy's only ones) is not a thing, and
    an HTTP publish has no connection: their failures belong to the certificate."""
    invoke(delivery(failures(MAX + 1, "claim-3f2a9c")))
    (message,) = aws.published()
    assert message["certificateId"] == PRINCIPAL and message["clientId"] == "claim-3f2a9c"
    assert "thingName" not in message
    invoke(delivery(failures(MAX + 1, CLIENT, protocol="HTTP", at=T0 + WINDOW_SECONDS * 1000)))
    (message,) = aws.published()
    assert message["certificateId"] == PRINCIPAL and "thingName" not in message
    assert aws.item(CLIENT) is None


def test_a_principal_that_is_not_a_certificate_is_counted_logged_and_not_reported(aws, logs):
    invoke(delivery(refused_connects(MAX + 2, CLIENT, "AIDACKCEVSQ6C2EXAMPLE:session")))
    assert aws.published() == []
    item = aws.item("AIDACKCEVSQ6C2EXAMPLE:session", kind=UNATTRIBUTED)
    assert item["count"] == {"N": str(MAX + 2)} and "S" in item["alarmed"]
    assert "not a certificate" in logs.getvalue()


# ---- refused Connects: the certificate, not the client id it claimed -----------------------------


def registered(aws, thing: str) -> str:
    """A thing with its own certificate attached; returns the certificate id."""
    aws.iot.create_thing(thingName=thing)
    cert = aws.iot.create_keys_and_certificate(setAsActive=True)
    aws.iot.attach_thing_principal(thingName=thing, principal=cert["certificateArn"])
    return cert["certificateId"]


def test_refused_connects_under_another_devices_client_id_blame_the_certificate_not_that_device(aws):
    cert_a, _cert_b = registered(aws, "SN-A"), registered(aws, "SN-B")
    claim = aws.iot.create_keys_and_certificate(setAsActive=True)["certificateId"]
    invoke(delivery(refused_connects(50, "SN-B", cert_a) + refused_connects(50, "SN-B", claim, at=T0 + 2000)))
    messages = aws.published()
    assert sorted(m["certificateId"] for m in messages) == sorted([cert_a, claim])
    assert all("thingName" not in m and m["clientId"] == "SN-B" for m in messages)
    assert all(m["metricValue"] == {"count": 50} for m in messages)
    assert aws.item("SN-B") is None and aws.item(cert_a, kind=CERTIFICATE)["count"] == {"N": "50"}
    # One ListThingPrincipals per certificate that crossed the limit, none per failure.
    assert aws.iot_calls.calls == ["list_thing_principals", "list_thing_principals"]


def test_refused_connects_of_a_devices_own_certificate_are_that_devices(aws):
    """A certificate attached to the thing it claimed (a quarantined device retrying): its
    violation names the thing, with the thing's id for the window."""
    cert_b = registered(aws, "SN-B")
    invoke(delivery(refused_connects(MAX + 1, "SN-B", cert_b)))
    (message,) = aws.published()
    assert message["thingName"] == "SN-B" and "certificateId" not in message and "clientId" not in message
    assert message["violationId"] == derive_violation_id(
        thing="SN-B", profile=PROFILE, behavior_name="AuthorizationFailures", window=T0 // 1000)


def test_a_registry_error_releases_the_alarm_and_the_retry_attributes_once(aws):
    cert_a = registered(aws, "SN-A")
    event = delivery(refused_connects(MAX + 1, "SN-B", cert_a))
    aws.iot_calls.fail["list_thing_principals"] = [
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
                    "ListThingPrincipals")]
    with pytest.raises(auth_handler.CountingError):
        invoke(event)
    assert aws.published() == [] and "alarmed" not in aws.item(cert_a, kind=CERTIFICATE)
    invoke(event)  # Lambda's retry
    (message,) = aws.published()
    assert message["certificateId"] == cert_a


# ---- deliveries that are not failures ------------------------------------------------------------


def test_a_control_message_is_ignored(aws, logs):
    assert invoke(delivery([], "CONTROL_MESSAGE")) == {"failures": 0, "clients": 0, "violations": 0,
                                                       "malformed": 0}
    assert aws.db.calls == []
    assert "control message ignored" in logs.getvalue()


def test_other_reasons_are_ignored(aws):
    events = [log_event(iot_line(reason="SERVER_ERROR")), log_event(iot_line(status="Success", reason=None))]
    assert invoke(delivery(events))["failures"] == 0
    assert aws.db.calls == []


@pytest.mark.parametrize("event", [
    None, {}, {"awslogs": None}, {"awslogs": {"data": 5}}, {"awslogs": {"data": "!!!not base64"}},
    {"awslogs": {"data": base64.b64encode(b"not gzip").decode()}},
    {"awslogs": {"data": base64.b64encode(gzip.compress(b"{not json")).decode()}},
    {"awslogs": {"data": base64.b64encode(gzip.compress(b"[1, 2]")).decode()}},
    {"awslogs": {"data": base64.b64encode(gzip.compress(b'{"messageType": "SURPRISE"}')).decode()}},
    {"awslogs": {"data": base64.b64encode(  # truncated gzip
        gzip.compress(json.dumps({"messageType": "DATA_MESSAGE"}).encode())[:-4]).decode()}},
])
def test_malformed_deliveries_never_crash(aws, event, logs):
    assert invoke(event)["malformed"] == 1
    assert aws.db.calls == []


def test_a_gzip_bomb_is_refused():
    bomb = gzip.compress(b'{"messageType": "DATA_MESSAGE", "logEvents": [], "pad": "'
                         + b"a" * (20 << 20) + b'"}')
    with pytest.raises(MalformedEvent) as refused:
        decode_event({"awslogs": {"data": base64.b64encode(bomb).decode()}})
    assert refused.value.reason == BAD_GZIP


@pytest.mark.parametrize(("data", "reason"), [
    ("!!!not base64", BAD_BASE64),
    (base64.b64encode(b"not gzip").decode(), BAD_GZIP),
    (base64.b64encode(gzip.compress(b"{not json")).decode(), BAD_JSON),
    (base64.b64encode(gzip.compress(b"\xff\xfe")).decode(), BAD_JSON),
    (base64.b64encode(gzip.compress(b"[1, 2]")).decode(), BAD_MESSAGE_TYPE),
    (base64.b64encode(gzip.compress(b'{"messageType": 1}')).decode(), BAD_MESSAGE_TYPE),
])
def test_a_malformed_delivery_is_refused_with_its_reason(data, reason):
    with pytest.raises(MalformedEvent) as refused:
        decode_event({"awslogs": {"data": data}})
    assert refused.value.reason == reason


def test_a_delivery_decodes_to_the_powertools_document():
    doc = decode_event(delivery(failures(1)))
    assert doc.message_type == "DATA_MESSAGE" and doc.log_group == "AWSIotLogsV2"


def test_a_malformed_delivery_counts_one_total_and_one_breakdown(aws, capsys):
    invoke({"awslogs": {"data": "!!!not base64"}})
    points = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    malformed = [(p["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0], p["AuthEventsMalformed"],
                  p.get("reason")) for p in points if "AuthEventsMalformed" in p]
    assert sorted(malformed) == [(["service"], [1.0], None), (["service", "reason"], [1.0], BAD_BASE64)]


def test_malformed_log_events_are_counted_and_the_rest_still_count(aws, capsys):
    events = [
        "not an event", {"id": "1"}, log_event("not json"), log_event("[1]"),
        log_event(iot_line(timestamp="soon"), timestamp=None),
        # A client id is a claim: an odd one still counts, against the certificate.
        log_event(iot_line(client_id=None)), log_event(iot_line(client_id="")),
        log_event(iot_line(client_id=7)), log_event(iot_line(client_id="x" * 129)),
        *failures(2),
    ]
    summary = invoke(delivery(events))
    assert summary["failures"] == 6 and summary["malformed"] == 5
    assert aws.item()["count"] == {"N": "2"} and aws.item(PRINCIPAL, kind=CERTIFICATE)["count"] == {"N": "4"}
    totals = emf(capsys)
    assert totals["AuthLogLinesMalformed"] == 5 and totals["AuthFailuresCounted"] == 6


def test_tally_reasons_and_fallback_timestamp():
    doc = {"messageType": "DATA_MESSAGE", "logEvents": [
        "x", log_event("nope"), log_event(iot_line(client_id=None)),
        log_event(iot_line(timestamp=5), timestamp=None),
        log_event(iot_line(), timestamp=None),  # the line's own time (UTC) is used
        {"timestamp": T0, "message": iot_line()},  # no id: the content identifies it
    ]}
    result = tally(doc, WINDOW_SECONDS)
    assert result.malformed == {BAD_LOG_EVENT: 1, BAD_LINE: 1, BAD_TIMESTAMP: 1}
    assert result.counted == 3
    assert list(result.failures) == [(CERTIFICATE, PRINCIPAL, T0 // 1000), (THING, CLIENT, T0 // 1000)]
    assert tally({"messageType": "DATA_MESSAGE"}, 300).malformed == {BAD_LOG_EVENT: 1}


def test_helpers():
    assert window_of(T0 + 299_999, 300) == T0 // 1000 and window_of(T0 + 300_000, 300) == T0 // 1000 + 300
    assert batch_token(["b", "a"]) == batch_token(["a", "b"]) != batch_token(["a"])
    settings, problems = settings_from_env({"COUNTERS_TABLE": TABLE, "WINDOW_SECONDS": "0",
                                            "MAX_AUTH_FAILURES": "x", "PROFILE_NAME": ""})
    assert settings == Settings(table=TABLE, topic=None) and len(problems) == 4
    with pytest.raises(KeyError):
        settings_from_env({})
