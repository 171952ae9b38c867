"""Pre-provisioning hook: the decision logic against moto, and the real handler."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.awsrequest import AWSResponse
from moto.dynamodb.models import DynamoDBBackend

from identity.provisioning_hook import handler
from identity.provisioning_hook.hook import CONSUME_CONDITION, evaluate
from identity.tokens import DEFAULT_SERIAL_PATTERN, hash_token, new_token, serial_pattern
from tests.helpers import NOW, scan

SERIAL = "sensor-0001"
CERT = "a1" * 32  # IoT certificate ids are 64 hex digits
CLAIM_CERT = "c3" * 32
PATTERN = serial_pattern({"SERIAL_PATTERN": DEFAULT_SERIAL_PATTERN})


def hook_event(serial=SERIAL, token="", certificate_id=CERT, client_id=SERIAL) -> dict:
    """The payload IoT sends a pre-provisioning hook (payload version 2020-04-01)."""
    return {
        "claimCertificateId": CLAIM_CERT,
        "certificateId": certificate_id,
        "certificatePem": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n",
        "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/fleetwarden-test",
        "clientId": client_id,
        "parameters": {"SerialNumber": serial, "ProvisioningToken": token},
    }


def issue(tokens_table, serial=SERIAL, *, issued_by="alice", issued_at=NOW, ttl=900) -> str:
    """Store a token the way the token API does (hash only)."""
    token = new_token()
    tokens_table.put_item(Item={"token_hash": hash_token(token), "serial": serial, "issued_by": issued_by,
                                "issued_at": int(issued_at), "expires_at": int(issued_at) + ttl})
    return token


def decide(aws, event, clock, *, tokens_table=None, iot=None, audit_table=None):
    return evaluate(event, tokens_table=tokens_table or aws.tokens, audit_table=audit_table or aws.audit,
                    iot=iot or aws.iot, pattern=PATTERN, now=clock)


def fail(client, operation: str, code: str) -> None:
    """Every later `operation` call of this boto3 client fails with `code`, raised as botocore
    raises a service error (the modeled class when there is one)."""
    def respond(**kwargs):
        error = {"Error": {"Code": code, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://injected", 400, {}, None), error

    client.meta.events.register(f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}",
                                respond)


def token_item(aws, token) -> dict:
    return aws.tokens.get_item(Key={"token_hash": hash_token(token)}, ConsistentRead=True)["Item"]


def bind_thing(aws, serial=SERIAL) -> str:
    """Create the thing with a certificate attached; returns that certificate's id."""
    aws.iot.create_thing(thingName=serial)
    cert = aws.iot.create_keys_and_certificate(setAsActive=True)
    aws.iot.attach_thing_principal(thingName=serial, principal=cert["certificateArn"])
    return cert["certificateId"]


# --- the token ---------------------------------------------------------------------------------

def test_valid_token_allows_once_and_is_marked_used_and_audited(aws, clock):
    token = issue(aws.tokens, issued_by="alice")
    decision = decide(aws, hook_event(token=token), clock)
    assert (decision.allowed, decision.reason, decision.serial) == (True, "allowed", SERIAL)

    item = token_item(aws, token)
    assert (item["used_at"], item["used_by_certificate"], item["used_by_client"]) == (int(NOW), CERT, SERIAL)
    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == (
        "provisioning-token.use", "alice", SERIAL)
    assert record["details"] == {
        "certificateId": CERT, "clientId": SERIAL, "token_hash_prefix": hash_token(token)[:8]}
    assert token not in json.dumps(scan(aws.tokens) + scan(aws.audit), default=str)

    replay = decide(aws, hook_event(token=token, certificate_id="b2" * 32), clock)
    assert (replay.allowed, replay.reason) == (False, "token-replayed")
    assert len(scan(aws.audit)) == 1


def test_expired_token_is_denied(aws, clock):
    token = issue(aws.tokens, ttl=900)
    clock.t = NOW + 900  # expires_at is exclusive
    assert decide(aws, hook_event(token=token), clock).reason == "token-expired"
    assert "used_at" not in token_item(aws, token)


def test_token_just_before_expiry_is_allowed(aws, clock):
    token = issue(aws.tokens, ttl=900)
    clock.t = NOW + 899.9
    assert decide(aws, hook_event(token=token), clock).allowed


def test_token_for_another_serial_is_denied(aws, clock):
    token = issue(aws.tokens, serial="sensor-0002")
    assert decide(aws, hook_event(token=token), clock).reason == "token-wrong-serial"
    assert "used_at" not in token_item(aws, token)


def test_unknown_token_is_denied(aws, clock):
    issue(aws.tokens)
    decision = decide(aws, hook_event(token=new_token()), clock)
    assert (decision.allowed, decision.reason) == (False, "token-unknown")
    assert scan(aws.audit) == []


def test_consume_is_one_conditional_update_and_never_a_read(aws):
    """The decision rests on the atomic write alone; no get-then-put race."""
    calls = []

    class RecordingTable:
        def update_item(self, **kwargs):
            calls.append(kwargs)
            return {"Attributes": {"token_hash": kwargs["Key"]["token_hash"], "issued_by": "alice"}}

        def put_item(self, **kwargs):
            pass

        def __getattr__(self, name):  # get_item, query, scan...: must not be called
            raise AssertionError(f"unexpected call {name}")

    # No such thing in moto's IoT: a new device.
    decision = evaluate(hook_event(token="t0k3n"), tokens_table=RecordingTable(),
                        audit_table=RecordingTable(), iot=aws.iot, pattern=PATTERN, now=lambda: NOW)
    assert decision.allowed
    [call] = calls
    assert call["ConditionExpression"] == CONSUME_CONDITION
    assert call["Key"] == {"token_hash": hash_token("t0k3n")}
    assert call["ExpressionAttributeValues"][":serial"] == SERIAL
    assert call["ReturnValues"] == "ALL_NEW"


def test_concurrent_uses_of_one_token_allow_exactly_one(aws, clock, monkeypatch):
    # DynamoDB applies a conditional write to an item atomically; moto does not lock, so give it
    # the same guarantee. The code under test relies on that guarantee and nothing more.
    lock = threading.Lock()
    original = DynamoDBBackend.update_item

    def atomic_update_item(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", atomic_update_item)
    token = issue(aws.tokens)
    racers = 8
    barrier = threading.Barrier(racers)

    def race(i):
        barrier.wait()
        return decide(aws, hook_event(token=token, certificate_id=f"{i:02x}" * 32), clock)

    with ThreadPoolExecutor(racers) as pool:
        decisions = list(pool.map(race, range(racers)))
    assert sorted(d.reason for d in decisions) == ["allowed"] + ["token-replayed"] * (racers - 1)
    assert len(scan(aws.audit)) == 1


# --- the thing ---------------------------------------------------------------------------------

def test_thing_bound_to_another_certificate_is_denied_and_the_token_kept(aws, clock):
    bind_thing(aws)
    token = issue(aws.tokens)
    decision = decide(aws, hook_event(token=token), clock)
    assert (decision.allowed, decision.reason) == (False, "thing-bound-elsewhere")
    assert "used_at" not in token_item(aws, token)
    assert scan(aws.audit) == []


def test_thing_bound_to_this_certificate_is_allowed(aws, clock):
    certificate_id = bind_thing(aws)
    token = issue(aws.tokens)
    assert decide(aws, hook_event(token=token, certificate_id=certificate_id), clock).allowed


def test_thing_without_principals_is_allowed(aws, clock):
    aws.iot.create_thing(thingName=SERIAL)
    token = issue(aws.tokens)
    assert decide(aws, hook_event(token=token), clock).allowed


# --- malformed input ---------------------------------------------------------------------------

def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


MALFORMED = {
    "not a dict": ["certificateId"],
    "none": None,
    "empty": {},
    "missing parameters": _without(hook_event(token="x"), "parameters"),
    "parameters not a dict": {**hook_event(token="x"), "parameters": "SerialNumber=sensor-0001"},
    "missing certificateId": _without(hook_event(token="x"), "certificateId"),
    "certificateId not a string": hook_event(token="x", certificate_id=12345),
    "certificateId not hex": hook_event(token="x", certificate_id="z" * 64),
    "missing clientId": _without(hook_event(token="x"), "clientId"),
    "clientId not a string": hook_event(token="x", client_id=["sensor-0001"]),
    "missing serial": {**hook_event(token="x"), "parameters": {"ProvisioningToken": "x"}},
    "serial not a string": hook_event(serial=1234, token="x"),
    "serial too short": hook_event(serial="abc", token="x"),
    "serial with a slash": hook_event(serial="sensor/0001", token="x"),
    "serial with a newline": hook_event(serial="sensor-0001\n", token="x"),
    "missing token": {**hook_event(), "parameters": {"SerialNumber": SERIAL}},
    "empty token": hook_event(token=""),
    "token not a string": hook_event(token={"token": "x"}),
    "huge token": hook_event(token="x" * 257),
}


@pytest.mark.parametrize("event", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_events_are_denied(aws, clock, event):
    decision = decide(aws, event, clock)
    assert not decision.allowed
    assert decision.reason in {"malformed-event", "invalid-serial", "invalid-token-format"}


# --- failing dependencies ----------------------------------------------------------------------

def test_missing_tokens_table_denies(aws, clock):
    token = issue(aws.tokens)
    aws.tokens.delete()
    assert decide(aws, hook_event(token=token), clock).reason == "dynamodb-error"


def test_dynamodb_client_error_denies(aws, clock):
    token = issue(aws.tokens)
    fail(aws.tokens.meta.client, "UpdateItem", "ProvisionedThroughputExceededException")
    decision = decide(aws, hook_event(token=token), clock)
    assert (decision.allowed, decision.reason) == (False, "dynamodb-error")
    assert "ProvisionedThroughputExceededException" in decision.detail


def test_iot_error_denies_and_keeps_the_token(aws, clock):
    token = issue(aws.tokens)
    fail(aws.iot, "ListThingPrincipals", "AccessDeniedException")
    decision = decide(aws, hook_event(token=token), clock)
    assert decision.reason == "iot-error" and "AccessDeniedException" in decision.detail
    assert "used_at" not in token_item(aws, token)


def test_audit_failure_denies(aws, clock):
    aws.audit.delete()
    assert decide(aws, hook_event(token=issue(aws.tokens)), clock).reason == "audit-error"


# --- the real handler --------------------------------------------------------------------------

def emf(capsys) -> list[dict]:
    """The CloudWatch EMF documents Metrics printed on flush."""
    out = capsys.readouterr().out
    return [doc for doc in map(json.loads, filter(None, out.splitlines())) if "_aws" in doc]


def test_handler_allows_a_valid_request(aws, context, logs, capsys):
    token = issue(aws.tokens, issued_by="alice", issued_at=handler.time.time())
    assert handler.lambda_handler(hook_event(token=token), context) == {
        "allowProvisioning": True, "parameterOverrides": {}}

    [metrics] = emf(capsys)
    assert metrics["ProvisioningAllowed"] == [1.0]
    assert metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fleetwarden"
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert [line["audit"]["actor"] for line in lines if "audit" in line] == ["alice"]
    assert any(line["message"] == "provisioning allowed" and line["serial"] == SERIAL for line in lines)
    assert token not in logs.getvalue()
    assert scan(aws.audit)[0]["actor"] == "alice"


@pytest.mark.parametrize("event", [None, "x", [], {}, _without(hook_event(token="x"), "parameters"),
                                   hook_event(serial="no", token="x"), hook_event(token="x" * 10_000)])
def test_handler_denies_malformed_events_without_raising(aws, context, logs, capsys, event):
    assert handler.lambda_handler(event, context) == {"allowProvisioning": False}
    by_reason, total = emf(capsys)  # the single metric is printed at once, the total on flush
    assert total["ProvisioningDenied"] == [1.0]
    assert total["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert by_reason["ProvisioningDenied"] == [1.0]
    assert by_reason["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "reason"]]
    [line] = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert line["message"] == "provisioning denied" and line["reason"] == by_reason["reason"]
    assert line["level"] == "WARNING"


def test_handler_logs_the_reason_but_never_the_token(aws, context, logs, capsys):
    token = issue(aws.tokens, serial="sensor-0002", issued_at=handler.time.time())
    assert handler.lambda_handler(hook_event(token=token), context) == {"allowProvisioning": False}
    assert emf(capsys)[0]["reason"] == "token-wrong-serial"
    assert '"reason":"token-wrong-serial"' in logs.getvalue()
    assert token not in logs.getvalue()


def test_handler_without_configuration_denies(aws, context, monkeypatch, capsys):
    monkeypatch.delenv("TOKENS_TABLE")
    assert handler.lambda_handler(hook_event(token="x"), context) == {"allowProvisioning": False}
    assert emf(capsys)[0]["reason"] == "configuration-error"
