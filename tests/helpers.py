"""Test helpers shared by the function tests of every capability."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError


class Calls:
    """The API calls a boto3 client makes, by method name, seen by botocore's before-call hook
    (so a paginator's calls count too). `fail` queues errors per method: the call is answered
    with the error's response and botocore raises it as it would a service's answer, with the
    modeled exception class (e.g. iot.exceptions.ResourceNotFoundException) for a modeled code."""

    HOOK = "tests-calls"

    def __init__(self, client: Any, fail: dict[str, list[ClientError]] | None = None):
        self.calls: list[str] = []
        self.fail = fail or {}
        client.meta.events.unregister("before-call", unique_id=self.HOOK)  # one counter per client
        client.meta.events.register("before-call", self._before, unique_id=self.HOOK)

    def _before(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        name = xform_name(model.name)
        self.calls.append(name)
        pending = self.fail.get(name)
        if not pending:
            return None
        error = pending.pop(0)
        return AWSResponse(url="", status_code=400, headers={}, raw=None), error.response


def topic_with_inbox(sns: Any, sqs: Any, name: str) -> tuple[str, str]:
    """An SNS topic and an SQS queue subscribed to it (read it with drain_published): (topic ARN, queue URL)."""
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, queue_url


def drain_published(sqs: Any, queue_url: str) -> list[dict]:
    """Every JSON message an SNS topic delivered to this subscribed queue so far (drained)."""
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for message in got:
            out.append(json.loads(json.loads(message["Body"])["Message"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


TOKENS_TABLE = "fleetwarden-test-provisioning-tokens"
AUDIT_TABLE = "fleetwarden-test-audit"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    """An injectable `now`: tests move time instead of sleeping."""

    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class LambdaContext:
    function_name: str = "fleetwarden-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:fleetwarden-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


def create_tables(dynamodb) -> tuple:
    """The tables exactly as the CDK stack creates them (keys, GSI)."""
    tokens = dynamodb.create_table(
        TableName=TOKENS_TABLE,
        KeySchema=[{"AttributeName": "token_hash", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "token_hash", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    audit = dynamodb.create_table(
        TableName=AUDIT_TABLE,
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "event_id", "AttributeType": "S"},
            {"AttributeName": "target", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": "by_target",
            "KeySchema": [{"AttributeName": "target", "KeyType": "HASH"},
                          {"AttributeName": "at", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        BillingMode="PAY_PER_REQUEST",
    )
    return tokens, audit


def scan(table) -> list[dict]:
    return table.scan(ConsistentRead=True)["Items"]


@contextlib.contextmanager
def captured_logs(*loggers: Any) -> Iterator[io.StringIO]:
    """Everything these Powertools loggers write while inside (their streams were bound at import,
    before pytest's capture), restored afterwards."""
    buffer = io.StringIO()
    previous = [logger.registered_handler.setStream(buffer) for logger in loggers]
    try:
        yield buffer
    finally:
        for logger, stream in zip(loggers, previous):
            logger.registered_handler.setStream(stream)


ALERTS_TABLE = "fleetwarden-test-alerts"


def create_alerts_table(dynamodb) -> Any:
    """The alerts table as alerts.model describes it: thing/alert_id, GSI by_alert_id (ALL)."""
    return dynamodb.create_table(
        TableName=ALERTS_TABLE,
        KeySchema=[{"AttributeName": "thing", "KeyType": "HASH"},
                   {"AttributeName": "alert_id", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "thing", "AttributeType": "S"},
                              {"AttributeName": "alert_id", "AttributeType": "S"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "by_alert_id",
            "KeySchema": [{"AttributeName": "alert_id", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        BillingMode="PAY_PER_REQUEST",
    )
