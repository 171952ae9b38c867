"""shared.audit: the audit record of every privileged action, in the table the identity stack creates."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import boto3
import pytest
from aws_lambda_powertools import Logger
from moto import mock_aws

from shared import audit
from tests.helpers import NOW, create_tables, scan


@pytest.fixture
def audit_table():
    with mock_aws():
        yield create_tables(boto3.resource("dynamodb"))[1]


def test_record_writes_the_item_and_logs_it(audit_table, clock):
    stream = io.StringIO()
    logger = Logger(service="audit-test", stream=stream)
    rec = audit.record(audit_table, action="thing.do", actor="alice", target="dev-0001",
                       details={"n": 3, "ratio": 0.5, "why": "test"}, now=clock, logger=logger)

    assert rec["at"] == "2023-11-14T22:13:20.000Z" and len(rec["event_id"]) == 32
    [item] = scan(audit_table)
    assert item == {**rec, "details": {"n": 3, "ratio": Decimal("0.5"), "why": "test"}}
    logged = json.loads(stream.getvalue())
    assert logged["audit"]["event_id"] == rec["event_id"] and logged["audit"]["actor"] == "alice"
    by_target = audit_table.query(IndexName="by_target", KeyConditionExpression="#t = :t",
                                ExpressionAttributeNames={"#t": "target"},
                                ExpressionAttributeValues={":t": "dev-0001"})["Items"]
    assert [i["event_id"] for i in by_target] == [rec["event_id"]]


@pytest.mark.parametrize("details", [{"ok": True}, {"x": None}, {"x": ["a"]}, {1: "a"}])
def test_record_refuses_details_that_are_not_strings_or_numbers(audit_table, details):
    with pytest.raises(TypeError):
        audit.record(audit_table, action="a", actor="b", target="c", details=details, now=lambda: NOW)
    assert scan(audit_table) == []


def test_record_refuses_an_empty_target(audit_table):
    with pytest.raises(ValueError):
        audit.record(audit_table, action="a", actor="b", target="", details={}, now=lambda: NOW)
