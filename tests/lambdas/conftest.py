"""Lambda tests: `lambdas/` is the code root on AWS Lambda, so it is the import root here too.

Every AWS call goes to moto. Handlers build their boto3 resources on first use; the fixtures
set the environment and create the tables first, and reset that cache around each test.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"
if str(LAMBDAS) not in sys.path:
    sys.path.insert(0, str(LAMBDAS))

from provisioning_hook import handler as hook_handler  # noqa: E402
from token_api import handler as api_handler  # noqa: E402

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


def _reset_handlers() -> None:
    hook_handler._dependencies.cache_clear()
    api_handler._dependencies.cache_clear()


@pytest.fixture
def aws(monkeypatch):
    """moto with both tables and the functions' environment; yields the tables and an IoT client."""
    for key, value in {
        "TOKENS_TABLE": TOKENS_TABLE,
        "AUDIT_TABLE": AUDIT_TABLE,
        "TOKEN_TTL_SECONDS": "900",
        "ADMIN_GROUP": "admins",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SERIAL_PATTERN", raising=False)
    _reset_handlers()
    with mock_aws():
        tokens, audit = create_tables(boto3.resource("dynamodb"))
        yield SimpleNamespace(tokens=tokens, audit=audit, iot=boto3.client("iot"))
    _reset_handlers()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def logs():
    """Everything both handlers' loggers write (the audit module logs through them)."""
    buffer = io.StringIO()
    previous = [h.logger.registered_handler.setStream(buffer) for h in (hook_handler, api_handler)]
    yield buffer
    for h, stream in zip((hook_handler, api_handler), previous):
        h.logger.registered_handler.setStream(stream)


def scan(table) -> list[dict]:
    return table.scan(ConsistentRead=True)["Items"]
