"""A flood from one device ends with that device quarantined and its certificate deactivated,
whichever detection source saw it: the built-in detector's real handler publishes to the
violation topic (moto SNS), and what arrives there drives the real auto-response handler.
A Device Defender alert in the same format takes the same path."""

from __future__ import annotations

import json

import boto3
import pytest
from defense.auto_response import handler as ar_handler
from defense.detector import handler as detector_handler
from moto import mock_aws

from tests.defense.test_auto_response import (
    QUARANTINE_GROUP,
    SAMPLE_DICT,
    LambdaContext,
    create_incidents_table,
    make_thing,
    set_env,
    sns_event,
    use_shared_session,
)
from tests.defense.test_detector import WINDOW, alert, telemetry
from tests.defense.test_detector_handler import tumbling_event
from tests.helpers import topic_with_inbox

DEVICE = "SN-FLOOD-1"
NEIGHBOUR = "SN-CALM-2"
LIMIT = 100


@pytest.fixture
def fleet(monkeypatch):
    ar_handler._dependencies.cache_clear()
    detector_handler._settings.cache_clear()
    detector_handler._sns.cache_clear()
    with mock_aws():
        use_shared_session()  # DeleteConnection answered at the client boundary (moto lacks it)
        iot, sns, sqs = (boto3.client(name, region_name="eu-west-1") for name in ("iot", "sns", "sqs"))
        table = create_incidents_table(boto3.resource("dynamodb", region_name="eu-west-1"))
        iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
        certificates = {thing: make_thing(iot, thing) for thing in (DEVICE, NEIGHBOUR)}
        violations, inbox = topic_with_inbox(sns, sqs, "fleetwarden-test-violations")
        ops = sns.create_topic(Name="fleetwarden-test-ops")["TopicArn"]
        set_env(monkeypatch, OPS_TOPIC_ARN=ops, EXEMPT_GROUP=None)
        for key, value in {"VIOLATION_TOPIC_ARN": violations, "PROFILE_NAME": "fleetwarden-test-builtin",
                           "WINDOW_SECONDS": "300", "MAX_MESSAGES": str(LIMIT), "MAX_BYTES": "10000000",
                           "MAX_CONNECTS": "10", "MAX_DISCONNECTS": "10", "MAX_ESTABLISHED_TCP": "10",
                           "MAX_TELEMETRY_BYTES": "8192", "MAX_ALERT_BYTES": "131072"}.items():
            monkeypatch.setenv(key, value)

        def delivered() -> list[str]:
            """Violation messages the topic delivered (the SNS `Message` strings)."""
            out = []
            for message in sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", []):
                out.append(json.loads(message["Body"])["Message"])
            return out

        yield type("Fleet", (), {"iot": iot, "table": table, "certificates": certificates,
                                 "delivered": staticmethod(delivered)})
    ar_handler._dependencies.cache_clear()
    detector_handler._settings.cache_clear()
    detector_handler._sns.cache_clear()


def contained(fleet, thing: str) -> bool:
    groups = fleet.iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]
    in_quarantine = any(g["groupName"] == QUARANTINE_GROUP for g in groups)
    statuses = {fleet.iot.describe_certificate(certificateId=c)["certificateDescription"]["status"]
                for c in fleet.certificates[thing]}
    return in_quarantine and statuses == {"INACTIVE"}


def untouched(fleet, thing: str) -> bool:
    groups = fleet.iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]
    statuses = {fleet.iot.describe_certificate(certificateId=c)["certificateDescription"]["status"]
                for c in fleet.certificates[thing]}
    return not groups and statuses == {"ACTIVE"}


def test_builtin_detector_flood_spread_over_batches_is_contained(fleet):
    # 30 batches of 5 messages (150 > 100) in one window, interleaved with a calm neighbour:
    # no single batch looks like a flood; the window state adds them up.
    state = {}
    for _ in range(30):
        records = [telemetry(DEVICE) for _ in range(5)]
        records.append(telemetry(NEIGHBOUR))
        state = detector_handler.lambda_handler(tumbling_event(records, state, window=WINDOW), LambdaContext())["state"]

    messages = fleet.delivered()
    assert len(messages) == 1
    violation = json.loads(messages[0])
    assert violation["thingName"] == DEVICE
    assert violation["behavior"]["metric"] == "aws:num-messages-sent"
    assert violation["violationEventType"] == "in-alarm"

    ar_handler.lambda_handler(sns_event(messages[0]), LambdaContext())
    assert contained(fleet, DEVICE)
    assert untouched(fleet, NEIGHBOUR)
    incident = fleet.table.get_item(Key={"violation_id": violation["violationId"]})["Item"]
    assert incident["status"] == "contained"


def test_device_defender_alert_for_a_flood_is_contained_the_same_way(fleet):
    alert = {**SAMPLE_DICT, "thingName": DEVICE}  # Device Defender's own alert format
    ar_handler.lambda_handler(sns_event(json.dumps(alert)), LambdaContext())
    assert contained(fleet, DEVICE)
    assert untouched(fleet, NEIGHBOUR)


def test_a_100_kib_alert_contains_nothing_and_100_kib_of_telemetry_contains_its_sender(fleet):
    """Message size is judged per kind of topic: an alert may be far larger than a telemetry message
    (max_alert_bytes vs max_telemetry_bytes), so one large alert leaves a healthy device alone."""
    detector_handler.lambda_handler(tumbling_event([alert(NEIGHBOUR, 100 * 1024)], {}, window=WINDOW),
                                    LambdaContext())
    assert fleet.delivered() == []
    assert untouched(fleet, NEIGHBOUR)

    detector_handler.lambda_handler(tumbling_event([telemetry(DEVICE, b"x" * 100 * 1024)], {}, window=WINDOW),
                                    LambdaContext())
    [message] = fleet.delivered()
    assert json.loads(message)["behavior"]["name"] == "TelemetryMessageByteSize"
    ar_handler.lambda_handler(sns_event(message), LambdaContext())
    assert contained(fleet, DEVICE)
    assert untouched(fleet, NEIGHBOUR)
