"""Pre-provisioning hook: the decision logic against moto, and the real handler.

Events are built as "Pre-provisioning hooks" (AWS IoT developer guide,
https://docs.aws.amazon.com/iot/latest/developerguide/pre-provisioning-hook.html) shows the hook
input: claimCertificateId, certificateId, certificatePem, templateArn, clientId, parameters (the
RegisterThing request's parameters, string to string); the answer is
{"allowProvisioning": bool, "parameterOverrides": {...}}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.awsrequest import AWSResponse
from moto.dynamodb.models import DynamoDBBackend

from identity.provisioning_hook import handler
from identity.provisioning_hook.hook import CONSUME_CONDITION, Budget, evaluate
from identity.tokens import DEFAULT_SERIAL_PATTERN, hash_token, new_token, serial_pattern
from tests.conftest import ROOT
from tests.helpers import NOW, scan

LAMBDAS = ROOT / "lambdas"

SERIAL = "sensor-0001"
CERT = "a1" * 32  # IoT certificate ids are 64 hex digits
CLAIM_CERT = "c3" * 32
PATTERN = serial_pattern({"SERIAL_PATTERN": DEFAULT_SERIAL_PATTERN})
UNHURRIED = Budget(deadline=float("inf"), per_call=handler.ONE_ATTEMPT)  # for the decision logic alone


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


def decide(aws, event, clock, *, tokens_table=None, iot=None, audit_table=None, budget=UNHURRIED):
    return evaluate(event, tokens_table=tokens_table or aws.tokens, audit_table=audit_table or aws.audit,
                    iot=iot or aws.iot, pattern=PATTERN, now=clock, budget=budget)


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
        "certificateId": CERT, "clientId": SERIAL, "token_hash_prefix": hash_token(token)[:8], "uses": 1}
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
    decision = evaluate(hook_event(token="t0k3n"), tokens_table=RecordingTable(), audit_table=RecordingTable(),
                        iot=aws.iot, pattern=PATTERN, now=lambda: NOW, budget=UNHURRIED)
    assert decision.allowed
    [call] = calls
    assert call["ConditionExpression"] == CONSUME_CONDITION
    assert call["Key"] == {"token_hash": hash_token("t0k3n")}
    # The certificate is recorded by the same write that checks it.
    assert "used_by_certificate = :cert" in call["UpdateExpression"]
    assert call["ExpressionAttributeValues"][":cert"] == CERT
    assert call["ExpressionAttributeValues"][":serial"] == SERIAL
    assert call["ReturnValues"] == "ALL_NEW"


def atomic_updates(monkeypatch) -> None:
    """DynamoDB applies a conditional write to an item atomically; moto does not lock, so give it
    the same guarantee. The code under test relies on that guarantee and nothing more."""
    lock = threading.Lock()
    original = DynamoDBBackend.update_item

    def atomic_update_item(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", atomic_update_item)


def test_concurrent_uses_of_one_token_allow_exactly_one(aws, clock, monkeypatch):
    atomic_updates(monkeypatch)
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


# --- a retried RegisterThing (its reply was lost) ---------------------------------------------

def provisioned(aws, serial=SERIAL) -> str:
    """What IoT leaves behind once the template ran for an allowed request: the thing, bound to
    the device's now ACTIVE certificate. Returns that certificate's id."""
    cert = aws.iot.create_keys_and_certificate(setAsActive=True)
    aws.iot.create_thing(thingName=serial)
    aws.iot.attach_thing_principal(thingName=serial, principal=cert["certificateArn"])
    return cert["certificateId"]


def test_the_same_certificate_may_retry_and_the_retry_is_audited_as_such(aws, clock):
    token = issue(aws.tokens, issued_by="alice")
    certificate_id = provisioned(aws)
    event = hook_event(token=token, certificate_id=certificate_id)
    first = decide(aws, event, clock)
    clock.t = NOW + 30
    retry = decide(aws, {**event, "clientId": "claim-7f3a"}, clock)  # a new MQTT session, same certificate

    assert (first.allowed, first.reason) == (True, "allowed")
    assert (retry.allowed, retry.reason) == (True, "retry")
    item = token_item(aws, token)
    assert (item["used_by_certificate"], item["used_at"], item["last_used_at"], item["uses"]) == (
        certificate_id, int(NOW), int(NOW + 30), 2)
    assert item["used_by_client"] == SERIAL  # the first use's, kept
    use, again = sorted(scan(aws.audit), key=lambda r: r["at"])
    assert (use["action"], again["action"]) == ("provisioning-token.use", "provisioning-token.retry")
    assert (again["actor"], again["target"]) == ("alice", SERIAL)
    assert again["details"] == {"certificateId": certificate_id, "clientId": "claim-7f3a",
                                "token_hash_prefix": hash_token(token)[:8], "uses": 2}


def test_a_retry_before_the_thing_exists_is_allowed(aws, clock):
    """The template may have failed after the hook said yes: nothing was created yet."""
    token = issue(aws.tokens)
    certificate_id = aws.iot.create_keys_and_certificate(setAsActive=False)["certificateId"]
    aws.iot.update_certificate(certificateId=certificate_id, newStatus="PENDING_ACTIVATION")
    event = hook_event(token=token, certificate_id=certificate_id)
    assert decide(aws, event, clock).reason == "allowed"
    assert decide(aws, event, clock).reason == "retry"


def test_a_second_certificate_is_denied_even_after_a_retry(aws, clock):
    token = issue(aws.tokens)
    event = hook_event(token=token, certificate_id=provisioned(aws))
    assert decide(aws, event, clock).allowed and decide(aws, event, clock).allowed
    other = decide(aws, {**event, "certificateId": "b2" * 32}, clock)
    assert (other.allowed, other.reason) == (False, "thing-bound-elsewhere")  # the thing is the first's now
    before_the_thing = decide(aws, hook_event(serial="sensor-0009", token=token, certificate_id="b2" * 32), clock)
    assert before_the_thing.reason == "token-replayed"
    assert token_item(aws, token)["uses"] == 2


def test_a_retry_for_another_serial_is_denied(aws, clock):
    token = issue(aws.tokens)
    certificate_id = provisioned(aws)
    assert decide(aws, hook_event(token=token, certificate_id=certificate_id), clock).allowed
    other = decide(aws, hook_event(serial="sensor-0002", token=token, certificate_id=certificate_id), clock)
    assert (other.allowed, other.reason) == (False, "token-wrong-serial")
    assert token_item(aws, token)["uses"] == 1


def test_a_retry_after_the_token_expired_is_denied(aws, clock):
    token = issue(aws.tokens, ttl=900)
    event = hook_event(token=token, certificate_id=provisioned(aws))
    assert decide(aws, event, clock).allowed
    clock.t = NOW + 900
    assert decide(aws, event, clock).reason == "token-expired"
    assert token_item(aws, token)["uses"] == 1
    assert len(scan(aws.audit)) == 1


@pytest.mark.parametrize("status", ["INACTIVE", "REVOKED"])
def test_a_retry_cannot_reactivate_a_contained_certificate(aws, clock, status):
    """The template sets the certificate ACTIVE: a retry after containment would undo it."""
    token = issue(aws.tokens)
    certificate_id = provisioned(aws)
    event = hook_event(token=token, certificate_id=certificate_id)
    assert decide(aws, event, clock).allowed
    aws.iot.update_certificate(certificateId=certificate_id, newStatus=status)
    decision = decide(aws, event, clock)
    assert (decision.allowed, decision.reason) == (False, "certificate-not-active")
    assert status in decision.detail
    assert [r["action"] for r in scan(aws.audit)] == ["provisioning-token.use"]


def test_two_certificates_racing_for_a_token_then_retrying(aws, clock, monkeypatch):
    """One conditional write decides: one certificate wins, and only it may retry."""
    atomic_updates(monkeypatch)
    token = issue(aws.tokens)
    certificates = [aws.iot.create_keys_and_certificate(setAsActive=True)["certificateId"] for _ in range(2)]
    barrier = threading.Barrier(2)

    def race(certificate_id):
        barrier.wait()
        return decide(aws, hook_event(token=token, certificate_id=certificate_id), clock)

    with ThreadPoolExecutor(2) as pool:
        first = dict(zip(certificates, pool.map(race, certificates)))
    [winner] = [c for c, d in first.items() if d.allowed]
    [loser] = [c for c, d in first.items() if not d.allowed]
    assert first[loser].reason == "token-replayed"
    assert token_item(aws, token)["used_by_certificate"] == winner
    assert decide(aws, hook_event(token=token, certificate_id=winner), clock).reason == "retry"
    assert decide(aws, hook_event(token=token, certificate_id=loser), clock).reason == "token-replayed"


# --- the 5-second budget -----------------------------------------------------------------------

class Stopwatch:
    """A monotonic clock that every AWS call of the given clients advances by `per_call` seconds."""

    def __init__(self, *clients, per_call: float):
        self.t, self.calls = 0.0, []
        for client in clients:
            client.meta.events.register("before-call", self._tick)
        self.per_call = per_call

    def _tick(self, model, **_):
        self.calls.append(model.name)
        self.t += self.per_call

    def __call__(self) -> float:
        return self.t


def test_a_call_that_would_not_fit_is_not_started_and_denies(aws, clock):
    """With 2.5 attempts' time left: ListThingPrincipals and UpdateItem run, PutItem is not started."""
    watch = Stopwatch(aws.iot, aws.tokens.meta.client, per_call=handler.ONE_ATTEMPT)
    budget = Budget(deadline=2.5 * handler.ONE_ATTEMPT, per_call=handler.ONE_ATTEMPT, clock=watch)
    token = issue(aws.tokens)
    watch.t, watch.calls = 0.0, []
    decision = decide(aws, hook_event(token=token), clock, budget=budget)
    assert (decision.allowed, decision.reason) == (False, "deadline")
    assert decision.detail.startswith("PutItem not started")
    assert watch.calls == ["ListThingPrincipals", "UpdateItem"]
    # The token is recorded for this certificate: the device's retry can still succeed.
    assert token_item(aws, token)["used_by_certificate"] == CERT


def test_an_exhausted_budget_denies_before_any_call(aws, clock):
    token = issue(aws.tokens)
    budget = Budget(deadline=0.5, per_call=handler.ONE_ATTEMPT, clock=lambda: 0.0)
    decision = decide(aws, hook_event(token=token), clock, budget=budget)
    assert decision.reason == "deadline" and decision.detail.startswith("ListThingPrincipals not started")
    assert "used_at" not in token_item(aws, token)


def test_every_call_gets_one_attempt_within_its_timeouts():
    """The hook's client settings: a throttled call is not retried by botocore (it would double
    the worst case). Checked against botocore itself, outside moto."""
    import boto3

    client = boto3.client("dynamodb", region_name="eu-west-1", config=handler.CLIENT_CONFIG)
    sent = []

    def throttled(request, **_):
        sent.append(request.url)
        return AWSResponse(request.url, 400, {}, _Raw(b'{"__type":"ThrottlingException","message":"slow down"}'))

    client.meta.events.register("before-send", throttled)
    with pytest.raises(client.exceptions.ClientError):
        client.get_item(TableName="t", Key={"k": {"S": "v"}})
    assert len(sent) == 1
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (
        handler.CONNECT_TIMEOUT, handler.READ_TIMEOUT)


class _Raw:
    """Enough of a urllib3 response for botocore to read a canned body."""

    def __init__(self, body: bytes):
        self.body = body

    def stream(self, *_, **__):
        yield self.body


def test_the_worst_case_fits_in_five_seconds():
    """Four calls (DescribeCertificate on a retry only), one attempt each, plus the reserve for
    what the function cannot measure, leave time for this module's init on a cold start."""
    worst = 4 * handler.ONE_ATTEMPT + handler.RESERVE
    assert worst <= handler.IOT_DEADLINE - 0.75  # at least 0.75 s for init (bench/README.md measures it)


def test_the_first_on_demand_invocation_pays_for_init(aws, context, logs, capsys, monkeypatch):
    monkeypatch.setattr(handler, "_first_invocation", True)
    monkeypatch.setattr(handler, "INIT_SECONDS", 4.5)  # an init that ate IoT's 5 s
    monkeypatch.delenv("AWS_LAMBDA_INITIALIZATION_TYPE", raising=False)
    token = issue(aws.tokens, issued_at=handler.time.time())
    assert handler.lambda_handler(hook_event(token=token), context) == {"allowProvisioning": False}
    [line] = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert (line["message"], line["reason"]) == ("provisioning denied", "deadline")
    assert line["detail"].startswith("ListThingPrincipals not started")
    assert emf(capsys)[0]["reason"] == "deadline"
    assert "used_at" not in token_item(aws, token)
    # The environment is warm now: the next invocation has the whole budget.
    assert handler.lambda_handler(hook_event(token=token), context)["allowProvisioning"]


def test_provisioned_concurrency_init_ran_ahead_of_time(aws, context, monkeypatch):
    monkeypatch.setattr(handler, "_first_invocation", True)
    monkeypatch.setattr(handler, "INIT_SECONDS", 60.0)
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "provisioned-concurrency")
    token = issue(aws.tokens, issued_at=handler.time.time())
    assert handler.lambda_handler(hook_event(token=token), context)["allowProvisioning"]


def test_the_function_timeout_bounds_the_budget(aws, context, capsys):
    context.remaining_ms = 500  # less than one attempt before Lambda would stop the function
    token = issue(aws.tokens, issued_at=handler.time.time())
    assert handler.lambda_handler(hook_event(token=token), context) == {"allowProvisioning": False}
    assert emf(capsys)[0]["reason"] == "deadline"


def test_boto3_and_the_clients_are_built_at_init_on_lambda(tmp_path):
    """Provisioned concurrency runs init ahead of time: nothing is left for the first request."""
    code = ("import sys; from identity.provisioning_hook import handler as h; "
            "print('boto3' in sys.modules, h._dependencies.cache_info().currsize)")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(LAMBDAS), "AWS_LAMBDA_FUNCTION_NAME": "hook",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_EC2_METADATA_DISABLED": "true", "TOKENS_TABLE": "t", "AUDIT_TABLE": "a"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "1"]


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
