"""Built-in detector through the real handler: real-shaped Kinesis tumbling-window events, moto SNS
with an SQS queue subscribed to the violation topic to read back exactly what was published.

The state is carried from invocation to invocation as Lambda does (through JSON). SNS calls
are counted by wrapping the handler's client, so "no AWS call for healthy traffic" is checked
directly: the detector has no database at all, and SNS is its only AWS dependency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from defense.detector import handler as detector_handler
from moto import mock_aws
from shared.violations import Violation, parse_violation

from tests.helpers import Calls, captured_logs, drain_published, topic_with_inbox
from tests.defense.test_detector import (
    NEXT_WINDOW,
    SHARD,
    WINDOW,
    WINDOW_START,
    kinesis_record,
    metrics_record,
    presence,
    report,
    telemetry,
)

REGION = "eu-west-1"
ACCOUNT = "123456789012"
PROFILE = "fleetwarden-test-builtin"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/fleetwarden-test-observations"
ENV = {"PROFILE_NAME": PROFILE, "WINDOW_SECONDS": "300", "MAX_MESSAGES": "100", "MAX_BYTES": "50000",
       "MAX_CONNECTS": "5", "MAX_DISCONNECTS": "5", "MAX_ESTABLISHED_TCP": "3"}


@dataclass
class LambdaContext:
    function_name: str = "fleetwarden-test-detector"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fleetwarden-test-detector"
    aws_request_id: str = "0b7c2a8e-5d1f-4f3e-9a6b-2c4d6e8f0a1b"


class CountingSNS:
    """The real (moto) SNS client, with every call recorded."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


def tumbling_event(records: list[dict], state: dict | None = None, *, window=WINDOW, final: bool = False,
                   early: bool = False) -> dict:
    """A Kinesis event with a tumbling window, as Lambda sends it."""
    return {"Records": records, "window": dict(window), "state": {} if state is None else state,
            "shardId": SHARD, "eventSourceARN": STREAM_ARN, "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": early}


@pytest.fixture
def aws(monkeypatch):
    """moto SNS: the violation topic, an SQS queue subscribed to it, and the handler's env."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MAX_TRACKED_THINGS", raising=False)
    sns_client = detector_handler._sns  # the cached builder, before the test replaces it
    detector_handler._settings.cache_clear()
    detector_handler._attachments.cache_clear()
    sns_client.cache_clear()
    with mock_aws():
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic, queue_url = topic_with_inbox(sns, sqs, "fleetwarden-test-violations")
        monkeypatch.setenv("VIOLATION_TOPIC_ARN", topic)
        counting = CountingSNS(boto3.client("sns", region_name=REGION))
        monkeypatch.setattr(detector_handler, "_sns", lambda: counting)

        def published() -> list[dict]:
            """Every violation message delivered to the queue so far (drained)."""
            return drain_published(sqs, queue_url)

        yield type("Aws", (), {"topic": topic, "sns": counting, "published": staticmethod(published),
                               "real_sns": sns_client, "iot": boto3.client("iot", region_name=REGION)})
    detector_handler._settings.cache_clear()
    detector_handler._attachments.cache_clear()
    sns_client.cache_clear()


@pytest.fixture
def logs():
    with captured_logs(detector_handler.logger) as buffer:
        yield buffer


def invoke(event: dict) -> dict:
    response = detector_handler.lambda_handler(event, LambdaContext())
    assert set(response) == {"state", "batchItemFailures"} and response["batchItemFailures"] == []
    return json.loads(json.dumps(response))  # what Lambda keeps of it, and hands back next time


def emf(capsys) -> dict[str, float]:
    """Metric totals (no extra dimension) from the EMF lines printed so far."""
    totals: dict[str, float] = {}
    for line in capsys.readouterr().out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        meta = doc.get("_aws") if isinstance(doc, dict) else None
        if not meta:
            continue
        dims = meta["CloudWatchMetrics"][0]["Dimensions"][0]
        if dims != ["service"]:
            continue
        for metric in meta["CloudWatchMetrics"][0]["Metrics"]:
            value = doc[metric["Name"]]
            value = sum(value) if isinstance(value, list) else value
            totals[metric["Name"]] = totals.get(metric["Name"], 0) + value
    return totals


def test_a_flood_spread_over_invocations_publishes_one_violation(aws, logs, capsys):
    state: dict = {}
    for _ in range(12):
        batch = [telemetry("sensor-0001") for _ in range(10)] + [telemetry("sensor-0002")]
        state = invoke(tumbling_event(batch, state))["state"]
    messages = aws.published()
    assert len(messages) == 1
    violation = Violation.model_validate(messages[0])
    assert violation.thingName == "sensor-0001" and violation.securityProfileName == PROFILE
    assert violation.behavior.name == "MessagesSent" and violation.behavior.metric == "aws:num-messages-sent"
    assert violation.metricValue == {"count": 110} and violation.in_alarm
    assert aws.sns.calls == ["publish_batch"]
    assert state["t"]["sensor-0001"][0] == 120 and state["w"] == WINDOW_START
    assert '"violation published"' in logs.getvalue() and violation.violationId in logs.getvalue()
    totals = emf(capsys)
    assert totals["ViolationsPublished"] == 1 and totals["DetectorRecords"] == 12 * 11


def test_healthy_traffic_makes_no_aws_call(aws, capsys):
    state: dict = {}
    for b in range(20):
        batch = [telemetry(f"sensor-{(b * 100 + i) % 500:04d}") for i in range(100)]
        batch += [presence(f"sensor-{b:04d}", "connected"),
                  metrics_record(f"sensor-{b:04d}", report(established=2))]
        state = invoke(tumbling_event(batch, state))["state"]
    assert aws.sns.calls == []
    assert aws.published() == []
    assert len(state["t"]) == 500
    totals = emf(capsys)
    assert totals["ViolationsPublished"] == 0 and totals["DetectorRecordsMalformed"] == 0


def test_a_listening_port_report_publishes_at_once(aws):
    invoke(tumbling_event([metrics_record("sensor-0005", report(tcp_ports=(23,)))]))
    (message,) = aws.published()
    assert message["thingName"] == "sensor-0005"
    assert message["behavior"]["name"] == "ListeningTcpPorts"
    assert message["metricValue"] == {"count": 1}


def test_many_violations_go_out_in_batches_of_ten(aws):
    storm = [presence(f"sensor-{i:04d}", kind)
             for i in range(12) for kind in ("connected", "disconnected") * 6]
    invoke(tumbling_event(storm))
    messages = aws.published()
    assert len(messages) == 24
    assert {(m["thingName"], m["behavior"]["name"]) for m in messages} == {
        (f"sensor-{i:04d}", name) for i in range(12) for name in ("ConnectionAttempts", "Disconnects")}
    assert aws.sns.calls == ["publish_batch"] * 3


def test_a_failed_publish_raises_and_the_retry_with_the_previous_state_publishes_once(aws, monkeypatch, logs,
                                                                                      capsys):
    state = invoke(tumbling_event([telemetry("sensor-0001")] * 60))["state"]
    batch = [telemetry("sensor-0001")] * 60
    monkeypatch.setenv("VIOLATION_TOPIC_ARN", aws.topic + "-missing")
    with pytest.raises(Exception):
        detector_handler.lambda_handler(tumbling_event(batch, state), LambdaContext())
    assert "the batch will be retried" in logs.getvalue()
    assert emf(capsys)["DetectorPublishFailures"] == 1
    # Lambda retries the same batch with the same previous state.
    monkeypatch.setenv("VIOLATION_TOPIC_ARN", aws.topic)
    retried = invoke(tumbling_event(batch, state))["state"]
    assert retried["t"]["sensor-0001"][0] == 120  # not 180
    (message,) = aws.published()
    assert message["metricValue"] == {"count": 120}


def test_refused_entries_raise(aws, monkeypatch):
    class Refusing:
        def publish_batch(self, **kwargs):
            return {"Successful": [], "Failed": [
                {"Id": e["Id"], "Code": "InternalError", "SenderFault": False}
                for e in kwargs["PublishBatchRequestEntries"]]}

    monkeypatch.setattr(detector_handler, "_sns", lambda: Refusing())
    with pytest.raises(detector_handler.PublishError, match="InternalError"):
        detector_handler.lambda_handler(tumbling_event([telemetry("sensor-0001")] * 101), LambdaContext())


def test_the_final_invoke_returns_an_empty_state_and_the_next_window_starts_fresh(aws, logs):
    state = invoke(tumbling_event([telemetry("sensor-0001")] * 90))["state"]
    final = invoke(tumbling_event([], state, final=True))
    assert final["state"] == {}
    assert '"window closed"' in logs.getvalue()
    # Lambda starts the next window with an empty state: 90 more is still within the limit.
    next_window = tumbling_event([telemetry("sensor-0001")] * 90, final["state"], window=NEXT_WINDOW)
    state = invoke(next_window)["state"]
    assert state["t"]["sensor-0001"][0] == 90
    assert aws.published() == []


def test_a_final_invoke_with_records_still_counts_them(aws):
    state = invoke(tumbling_event([telemetry("sensor-0001")] * 90))["state"]
    assert invoke(tumbling_event([telemetry("sensor-0001")] * 20, state, final=True))["state"] == {}
    (message,) = aws.published()
    assert message["metricValue"] == {"count": 110}


def test_invalid_reports_and_malformed_records_are_counted_without_failing(aws, logs, capsys):
    batch = [metrics_record("sensor-0008", {"header": {}}), kinesis_record("@@@"), kinesis_record(b"{}"),
             {"kinesis": None}, telemetry("sensor-0001")]
    state = invoke(tumbling_event(batch))["state"]
    assert state["t"]["sensor-0001"][0] == 1
    totals = emf(capsys)
    assert totals["DeviceReportsInvalid"] == 1 and totals["DetectorRecordsMalformed"] == 3
    assert '"device metrics report invalid"' in logs.getvalue()


def test_odd_events_do_not_crash(aws, logs, capsys):
    assert detector_handler.lambda_handler(None, LambdaContext()) == {"state": {}, "batchItemFailures": []}
    response = invoke({"Records": "nope", "state": None})
    assert response["state"]["t"] == {}
    assert "no tumbling window" in logs.getvalue()
    assert emf(capsys)["DetectorEventsMalformed"] == 1


def test_a_window_terminated_early_is_reported(aws, logs, capsys):
    invoke(tumbling_event([telemetry("sensor-0001")], early=True))
    assert "terminated early" in logs.getvalue()
    assert emf(capsys)["DetectorWindowsTerminatedEarly"] == 1


def test_bad_settings_keep_defaults_and_say_so(aws, monkeypatch, logs, capsys):
    monkeypatch.setenv("MAX_MESSAGES", "many")
    detector_handler._settings.cache_clear()
    invoke(tumbling_event([telemetry("sensor-0001")] * 101))
    assert "MAX_MESSAGES is not an integer" in logs.getvalue()
    assert emf(capsys)["DetectorConfigInvalid"] == 1
    assert aws.published() == []  # the default limit (600) applies


def test_the_published_message_parses_with_the_shared_parser(aws):
    invoke(tumbling_event([presence("sensor-0004", "connected") for _ in range(6)]))
    (message,) = aws.published()
    parsed = parse_violation(json.dumps(message))
    assert parsed.behavior.criteria == {"comparisonOperator": "greater-than", "value": {"count": 5},
                                        "durationSeconds": 300}


def test_the_real_client_builder_publishes(aws, monkeypatch):
    monkeypatch.setattr(detector_handler, "_sns", aws.real_sns)
    invoke(tumbling_event([telemetry("sensor-0003")] * 101))
    (message,) = aws.published()
    assert message["thingName"] == "sensor-0003"


# ---- refused connections: the registry decides whose they are ---------------------------------------


def registered(iot, thing: str) -> str:
    """A thing with its own certificate attached; returns the certificate id."""
    iot.create_thing(thingName=thing)
    cert = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName=thing, principal=cert["certificateArn"])
    return cert["certificateId"]


def watched_registry() -> Calls:
    """The handler's registry client, with its calls recorded (and errors injectable)."""
    client = boto3.client("iot", region_name=REGION)
    detector_handler._attachments()._client = client
    return Calls(client)


def test_a_devices_own_certificate_refused_as_itself_is_that_devices_violation(aws):
    cert_b = registered(aws.iot, "SN-B")
    lookups = watched_registry()
    invoke(tumbling_event([presence("SN-B", "connect_failed", principal=cert_b) for _ in range(11)]))
    messages = aws.published()
    assert sorted(m["behavior"]["name"] for m in messages) == ["AuthorizationFailures", "ConnectionAttempts"]
    for message in messages:
        assert message["thingName"] == "SN-B" and "certificateId" not in message
        assert parse_violation(json.dumps(message)).kind == "thing"
    assert lookups.calls == ["list_thing_principals"]  # one question; the second violation used the answer


def test_another_certificate_refused_under_a_devices_client_id_stays_a_certificate_violation(aws):
    registered(aws.iot, "SN-B")
    cert_a = registered(aws.iot, "SN-A")
    invoke(tumbling_event([presence("SN-B", "connect_failed", principal=cert_a) for _ in range(11)]))
    messages = aws.published()
    assert {m["certificateId"] for m in messages} == {cert_a}
    assert all("thingName" not in m and m["clientId"] == "SN-B" for m in messages)


def test_a_registry_error_fails_the_batch_and_the_retry_publishes(aws):
    cert_b = registered(aws.iot, "SN-B")
    batch = [presence("SN-B", "connect_failed", principal=cert_b) for _ in range(11)]
    lookups = watched_registry()
    lookups.fail["list_thing_principals"] = [
        ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
                    "ListThingPrincipals")]
    with pytest.raises(ClientError):
        invoke(tumbling_event(batch))
    assert aws.published() == []
    invoke(tumbling_event(batch))  # Lambda's retry, with the same previous state
    assert {m["thingName"] for m in aws.published()} == {"SN-B"}
