"""shared.provisioning_tokens and shared.audit."""

from __future__ import annotations

import hashlib
import io
import json
import string
from decimal import Decimal

import pytest
from aws_lambda_powertools import Logger

from shared import audit
from shared.provisioning_tokens import (
    DEFAULT_SERIAL_PATTERN, hash_token, new_token, serial_pattern, validate_serial,
)
from tests.lambdas.conftest import NOW, scan


def test_tokens_are_256_bit_urlsafe_and_unique():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    urlsafe = set(string.ascii_letters + string.digits + "-_")
    assert all(len(t) == 43 and set(t) <= urlsafe for t in tokens)


def test_hash_is_hex_sha256():
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(hash_token("\ud800")) == 64  # a lone surrogate does not raise


@pytest.mark.parametrize("serial", ["abcd", "A1-b_2", "x" * 64, "0000"])
def test_valid_serials(serial):
    assert validate_serial(serial, DEFAULT_SERIAL_PATTERN)


@pytest.mark.parametrize("serial", ["abc", "x" * 65, "-abc", "_abc", "ab cd", "abcd\n", "abcd/", "ab.cd", "",
                                    None, 1234, "aaaé", "+/../../etc"])
def test_invalid_serials(serial):
    assert not validate_serial(serial, DEFAULT_SERIAL_PATTERN)


def test_serial_pattern_comes_from_the_environment():
    assert serial_pattern({}).pattern == DEFAULT_SERIAL_PATTERN
    assert validate_serial("SN-1", serial_pattern({"SERIAL_PATTERN": r"^SN-\d+$"}))
    assert not validate_serial("abcd", serial_pattern({"SERIAL_PATTERN": r"^SN-\d+$"}))


def test_record_writes_the_item_and_logs_it(aws, clock):
    stream = io.StringIO()
    logger = Logger(service="audit-test", stream=stream)
    rec = audit.record(aws.audit, action="thing.do", actor="alice", target="dev-0001",
                       details={"n": 3, "ratio": 0.5, "why": "test"}, now=clock, logger=logger)

    assert rec["at"] == "2023-11-14T22:13:20.000Z" and len(rec["event_id"]) == 32
    [item] = scan(aws.audit)
    assert item == {**rec, "details": {"n": 3, "ratio": Decimal("0.5"), "why": "test"}}
    logged = json.loads(stream.getvalue())
    assert logged["audit"]["event_id"] == rec["event_id"] and logged["audit"]["actor"] == "alice"
    by_target = aws.audit.query(IndexName="by_target", KeyConditionExpression="#t = :t",
                                ExpressionAttributeNames={"#t": "target"},
                                ExpressionAttributeValues={":t": "dev-0001"})["Items"]
    assert [i["event_id"] for i in by_target] == [rec["event_id"]]


@pytest.mark.parametrize("details", [{"ok": True}, {"x": None}, {"x": ["a"]}, {1: "a"}])
def test_record_refuses_details_that_are_not_strings_or_numbers(aws, details):
    with pytest.raises(TypeError):
        audit.record(aws.audit, action="a", actor="b", target="c", details=details, now=lambda: NOW)
    assert scan(aws.audit) == []


def test_record_refuses_an_empty_target(aws):
    with pytest.raises(ValueError):
        audit.record(aws.audit, action="a", actor="b", target="", details={}, now=lambda: NOW)


def test_one_serial_rule_for_config_hook_api_and_fleetctl():
    from lambdas.shared.provisioning_tokens import DEFAULT_SERIAL_PATTERN, validate_serial
    from stacks import config
    from tools.fleetctl import serials

    assert config.DEFAULT_SERIAL_PATTERN == DEFAULT_SERIAL_PATTERN == serials.DEFAULT_SERIAL_PATTERN
    # A device may never be named like a claim client (claim-*): it could be impersonated.
    assert validate_serial("SN-0001") and not validate_serial("claim-0001")
