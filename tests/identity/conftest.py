"""Identity function tests (pre-provisioning hook, token API): moto with the identity tables.

Every AWS call goes to moto. Handlers build their boto3 resources on first use; the fixtures
set the environment and create the tables first, and reset that cache around each test.
"""

from __future__ import annotations

from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from identity.provisioning_hook import handler as hook_handler  # noqa: E402
from identity.token_api import handler as api_handler  # noqa: E402

from tests.helpers import AUDIT_TABLE, TOKENS_TABLE, LambdaContext, captured_logs, create_tables  # noqa: E402


class HookContext(LambdaContext):
    """The Lambda context with the remaining time the hook reads (a 4 s function, just invoked)."""

    remaining_ms = 4000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def context():
    return HookContext()


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
def logs():
    """Everything both handlers' loggers write (the audit module logs through them)."""
    with captured_logs(hook_handler.logger, api_handler.logger) as buffer:
        yield buffer

