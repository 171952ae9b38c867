"""The injector itself: each fault kind does to one DynamoDB PutItem what its name says, as the
function would see it, so a sweep that finds nothing has tested something."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from moto import mock_aws

from tests.faults.injector import (
    DIES, FAIL_CONNECTION, LOST, RESENT, SERVICE_ERROR, Fault, Injector, InvocationDied, moto_served_by, no_backoff,
)

THREE_ATTEMPTS = Config(retries={"total_max_attempts": 3, "mode": "standard"})


@pytest.fixture
def table():
    injector = Injector()
    session = boto3.Session(region_name="eu-west-1")
    injector.install(session._session)
    with mock_aws(), moto_served_by(injector), no_backoff():
        client = session.client("dynamodb", config=THREE_ATTEMPTS)
        client.create_table(TableName="t", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield injector, client


def put(client):
    return client.put_item(TableName="t", Item={"k": {"S": "a"}}, ConditionExpression="attribute_not_exists(k)")


def stored(client) -> bool:
    return "Item" in client.get_item(TableName="t", Key={"k": {"S": "a"}})


@pytest.mark.parametrize("before, code", [(0, "ThrottlingException"), (1, "InternalFailure")])
def test_a_service_error_on_every_attempt_applies_nothing(table, before, code):
    """Even calls get ThrottlingException, odd ones InternalFailure: both modeled service errors."""
    injector, client = table
    injector.arm(Fault(before, SERVICE_ERROR))
    for _ in range(before):
        client.describe_table(TableName="t")
    with pytest.raises(ClientError) as raised:
        put(client)
    attempts = injector.attempts
    injector.arm(None)
    assert raised.value.response["Error"]["Code"] == code
    assert attempts == 3 and not stored(client)  # botocore retried both, in vain


def test_a_connection_error_applies_nothing_and_botocore_gave_up_after_its_attempts(table):
    injector, client = table
    injector.arm(Fault(0, FAIL_CONNECTION))
    with pytest.raises(EndpointConnectionError):
        put(client)
    attempts = injector.attempts
    injector.arm(None)
    assert attempts == 3 and not stored(client)


def test_lost_is_applied_and_seen_as_a_timeout(table):
    injector, client = table
    injector.arm(Fault(0, LOST))
    with pytest.raises((ReadTimeoutError, EndpointConnectionError)):
        put(client)
    injector.arm(None)
    assert stored(client)


def test_resent_is_applied_twice_and_the_second_answer_is_the_condition_failing(table):
    injector, client = table
    injector.arm(Fault(0, RESENT))
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        put(client)  # its own first attempt wrote the item
    attempts = injector.attempts
    injector.arm(None)
    assert attempts == 2 and stored(client)


def test_dies_is_applied_and_escapes_except_exception(table):
    injector, client = table
    injector.arm(Fault(0, DIES))
    with pytest.raises(InvocationDied):
        try:
            put(client)
        except Exception:  # noqa: BLE001 - what a function's handler would do
            pytest.fail("a dead invocation runs no more code")
    injector.arm(None)
    assert stored(client)


def test_calls_are_numbered_once_per_api_call_not_per_attempt(table):
    injector, client = table
    injector.arm(Fault(1, RESENT))
    client.describe_table(TableName="t")
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        put(client)
    assert injector.calls == ["dynamodb.describe_table", "dynamodb.put_item"]
