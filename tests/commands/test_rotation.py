"""Certificate rotation under moto: the happy path end to end, every refusal (with its reason on the
response topic, a metric and an audit record), and the old certificate never retired early."""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from moto import mock_aws

from commands.rotation import handler as rotation_handler
from commands.rotation.rotate import Rotator
from shared import topics
from tests.commands.conftest import OTHER, REGION, THING, iot_signs_the_csr
from tests.helpers import Calls, Clock, LambdaContext, create_tables, scan

POLICY = "fleetwarden-test-device"
ROTATIONS = "fleetwarden-test-rotations"


def make_csr(cn=THING, key=None, ca=False, extra_cn=None) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if extra_cn:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, extra_cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def self_signed(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def create_rotations_table(dynamodb):
    """As the Command stack creates it: partition key `thing`."""
    return dynamodb.create_table(TableName=ROTATIONS, KeySchema=[{"AttributeName": "thing", "KeyType": "HASH"}],
                                 AttributeDefinitions=[{"AttributeName": "thing", "AttributeType": "S"}],
                                 BillingMode="PAY_PER_REQUEST")


@pytest.fixture
def env():
    with mock_aws(), iot_signs_the_csr():
        iot = boto3.client("iot", region_name=REGION)
        iot_data = boto3.client("iot-data", region_name=REGION)
        dynamodb = boto3.resource("dynamodb", region_name=REGION)
        _, audit_table = create_tables(dynamodb)
        table = create_rotations_table(dynamodb)
        iot.create_policy(policyName=POLICY, policyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
        certs = {}
        for thing in (THING, OTHER):
            iot.create_thing(thingName=thing)
            cert = iot.register_certificate_without_ca(certificatePem=self_signed(thing), status="ACTIVE")
            iot.attach_thing_principal(thingName=thing, principal=cert["certificateArn"])
            certs[thing] = cert["certificateId"]
        published: list[tuple[str, dict]] = []
        iot_data.meta.events.register("provide-client-params.iot-data.Publish",
                                      lambda params, **_: published.append((params["topic"], json.loads(params["payload"]))))
        metrics: list[tuple[str, str | None]] = []
        rotator = Rotator(iot=iot, iot_data=iot_data, table=table, audit_table=audit_table, policy_name=POLICY,
                          count=lambda name, value=1, **dims: metrics.append((name, dims.get("reason"))),
                          now=Clock())
        yield SimpleNamespace(iot=iot, table=table, audit=audit_table, certs=certs, published=published,
                              metrics=metrics, rotator=rotator, iot_data=iot_data)


def rule_event(step, principal, thing=THING, **payload):
    """What the rotation rule's SQL hands the function: the device's JSON plus topic(2), topic(4),
    principal() and clientid()."""
    return {**payload, "thing": thing, "step": step, "principal": principal, "client_id": thing}


def status(env, certificate_id):
    return env.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]


def last_answer(env):
    return env.published[-1]


def request(env, csr=None, principal=None, thing=THING, request_id="r-1"):
    return env.rotator.handle(rule_event("request", principal or env.certs[thing], thing=thing,
                                         csr=csr or make_csr(thing), request_id=request_id))


# --- the happy path ------------------------------------------------------------------------------

def test_a_certificate_rotates_without_the_device_ever_lacking_a_working_identity(env):
    old = env.certs[THING]
    result = request(env)
    assert result.outcome == "accepted"
    new = result.certificate_id
    topic, answer = last_answer(env)
    assert topic == f"cmd/{THING}/certs/response/accepted"
    assert answer["request_id"] == "r-1" and answer["certificate_id"] == new
    assert answer["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    # the new certificate is active, attached to the thing and carries the device policy; the old one still works
    assert status(env, new) == "ACTIVE" and status(env, old) == "ACTIVE"
    principals = env.iot.list_thing_principals(thingName=THING)["principals"]
    assert any(p.endswith(new) for p in principals) and any(p.endswith(old) for p in principals)
    new_arn = env.iot.describe_certificate(certificateId=new)["certificateDescription"]["certificateArn"]
    assert [p["policyName"] for p in env.iot.list_attached_policies(target=new_arn)["policies"]] == [POLICY]

    # the device reconnects with the new certificate and confirms from it
    result = env.rotator.handle(rule_event("confirm", new, certificate_id=new))
    assert result.outcome == "confirmed"
    assert last_answer(env) == (f"cmd/{THING}/certs/response/confirmed", {"certificate_id": new, "retired": [old]})
    assert status(env, old) == "INACTIVE" and status(env, new) == "ACTIVE"
    actions = [r["action"] for r in scan(env.audit)]
    assert sorted(actions) == ["certificate.rotation-confirmed", "certificate.rotation-issued"]
    assert ("CertificatesRotated", None) in env.metrics and ("RotationsConfirmed", None) in env.metrics


def test_rsa_2048_is_accepted(env):
    assert request(env, csr=make_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))).outcome == "accepted"


# --- refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, reason", [
    ("wrong cn", "wrong-cn"),
    ("two cns", "wrong-cn"),
    ("rsa 1024", "weak-key"),
    ("p-384", "weak-key"),
    ("ca flag", "ca-requested"),
    ("garbage", "bad-csr"),
    ("not a string", "malformed"),
    ("bad signature", "bad-csr"),
])
def test_every_bad_csr_is_refused_with_a_reason_a_metric_and_an_audit_record(env, case, reason):
    csr = {
        "wrong cn": lambda: make_csr(cn=OTHER),
        "two cns": lambda: make_csr(extra_cn="admin"),
        "rsa 1024": lambda: make_csr(key=rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "p-384": lambda: make_csr(key=ec.generate_private_key(ec.SECP384R1())),
        "ca flag": lambda: make_csr(ca=True),
        "garbage": lambda: "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
        "not a string": lambda: {"pem": "x"},
        "bad signature": lambda: _tampered_csr(),
    }[case]()
    result = env.rotator.handle(rule_event("request", env.certs[THING], csr=csr, request_id="r-9"))
    assert result.outcome == "rejected" and result.reason == reason
    topic, answer = last_answer(env)
    assert topic == f"cmd/{THING}/certs/response/rejected"
    assert answer["reason"] == reason and answer["request_id"] == "r-9" and answer["detail"]
    assert ("RotationRefused", reason) in env.metrics
    [record] = scan(env.audit)
    assert record["action"] == "certificate.rotation-request-refused" and record["details"]["reason"] == reason
    assert len(env.iot.list_certificates()["certificates"]) == 2  # nothing issued
    assert status(env, env.certs[THING]) == "ACTIVE"


def _tampered_csr() -> str:
    """A CSR for THING whose signature was made over other bytes (no proof of the private key)."""
    good = x509.load_pem_x509_csr(make_csr().encode())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def test_another_devices_certificate_cannot_rotate_this_thing(env):
    """SN-0002's certificate publishing on SN-0001's topic (the device policy would refuse it; the
    function refuses it again): no certificate for SN-0001 is issued to it."""
    result = request(env, principal=env.certs[OTHER], csr=make_csr(THING))
    assert result.reason == "not-attached"
    assert last_answer(env)[0] == f"cmd/{THING}/certs/response/rejected"
    assert len(env.iot.list_certificates()["certificates"]) == 2


@pytest.mark.parametrize("principal", [None, "", "us-east-1:cognito-identity", "A" * 64])
def test_a_publisher_that_is_not_a_certificate_is_refused(env, principal):
    assert env.rotator.handle(rule_event("request", principal, csr=make_csr(), request_id="r")).reason == "not-attached"


def test_a_request_without_a_valid_request_id_is_refused(env):
    assert request(env, request_id="../../x").reason == "malformed"


def test_events_from_other_topics_are_ignored_and_counted(env):
    assert env.rotator.handle({"thing": THING, "step": "response", "principal": env.certs[THING]}).outcome == "ignored"
    assert env.published == [] and ("RotationRefused", "malformed") in env.metrics


# --- the old certificate is retired only by the new one --------------------------------------------

def test_a_confirmation_from_the_old_certificate_is_refused_and_retires_nothing(env):
    old = env.certs[THING]
    new = request(env).certificate_id
    result = env.rotator.handle(rule_event("confirm", old, certificate_id=new))
    assert result.reason == "not-new-certificate"
    assert last_answer(env)[0] == f"cmd/{THING}/certs/response/rejected"
    assert status(env, old) == "ACTIVE" and status(env, new) == "ACTIVE"


def test_a_confirmation_naming_another_certificate_or_without_a_rotation_is_refused(env):
    assert env.rotator.handle(rule_event("confirm", env.certs[THING], certificate_id=env.certs[THING])).reason == "no-rotation"
    new = request(env).certificate_id
    assert env.rotator.handle(rule_event("confirm", new, certificate_id="0" * 64)).reason == "certificate-mismatch"
    assert status(env, env.certs[THING]) == "ACTIVE"


def test_a_repeated_confirmation_is_answered_again_and_retires_nothing_more(env):
    """Lambda's retry of a confirmation whose answer was not sent, or the device asking again: the same
    answer, one audit record, and the new certificate stays."""
    old = env.certs[THING]
    new = request(env).certificate_id
    assert env.rotator.handle(rule_event("confirm", new, certificate_id=new)).outcome == "confirmed"
    assert env.rotator.handle(rule_event("confirm", new, certificate_id=new)).outcome == "confirmed"
    assert env.published[-1] == env.published[-2] == (f"cmd/{THING}/certs/response/confirmed",
                                                      {"certificate_id": new, "retired": [old]})
    assert status(env, new) == "ACTIVE" and status(env, old) == "INACTIVE"
    assert [r["action"] for r in scan(env.audit)].count("certificate.rotation-confirmed") == 1
    # from the old certificate (now INACTIVE, but say it still had a session) it is no confirmation
    assert env.rotator.handle(rule_event("confirm", old, certificate_id=new)).reason == "no-rotation"


def test_rotating_again_with_the_unconfirmed_new_certificate_is_refused(env):
    new = request(env).certificate_id
    assert request(env, principal=new).reason == "rotation-pending"


# --- repeats, lost keys, faults ----------------------------------------------------------------------

def test_the_same_csr_again_gets_the_same_certificate(env):
    csr = make_csr()
    first = request(env, csr=csr).certificate_id
    second = request(env, csr=csr, request_id="r-2").certificate_id
    assert first == second and len(env.iot.list_certificates()["certificates"]) == 3
    assert last_answer(env)[1]["request_id"] == "r-2"


def test_a_new_csr_while_one_is_pending_supersedes_it(env):
    first = request(env).certificate_id
    second = request(env, request_id="r-2").certificate_id
    assert first != second
    assert status(env, first) == "INACTIVE" and status(env, second) == "ACTIVE"
    assert status(env, env.certs[THING]) == "ACTIVE"
    assert "certificate.rotation-superseded" in [r["action"] for r in scan(env.audit)]


def test_a_failure_after_the_certificate_exists_resumes_without_a_second_certificate(env):
    error = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "AttachThingPrincipal")
    Calls(env.iot, fail={"attach_thing_principal": [error]})
    csr = make_csr()
    with pytest.raises(ClientError):
        request(env, csr=csr)
    [row] = scan(env.table)
    assert row["status"] == "issued" and row["attached"] is False  # the recorded, resumable state
    result = request(env, csr=csr)  # Lambda's retry of the same event
    assert result.certificate_id == row["new_certificate_id"]
    assert len(env.iot.list_certificates()["certificates"]) == 3
    assert scan(env.table)[0]["attached"] is True


class LosesTheAnswer:
    """CreateCertificateFromCsr applied by IoT, its answer lost (a read timeout) or the invocation killed."""

    def __init__(self, iot):
        self.iot = iot

    def create_certificate_from_csr(self, **request):
        self.iot.create_certificate_from_csr(**request)
        raise ReadTimeoutError(endpoint_url="https://iot.eu-west-1.amazonaws.com")


def certificates(env):
    return {c["certificateId"]: c["status"] for c in env.iot.list_certificates()["certificates"]}


def test_a_certificate_whose_answer_was_lost_is_found_by_the_retry_not_minted_again(env):
    """The same CSR mints a distinct certificate each time (API_CreateCertificateFromCsr.html): the retry
    finds the one the lost call made (INACTIVE, the CSR's key) and adopts it."""
    csr = make_csr()
    env.rotator.iot_create = LosesTheAnswer(env.iot)
    with pytest.raises(ReadTimeoutError):
        request(env, csr=csr)
    [row] = scan(env.table)
    assert row["status"] == "issuing" and "new_certificate_id" not in row  # the intent, recorded first
    [minted] = set(certificates(env)) - set(env.certs.values())
    assert certificates(env)[minted] == "INACTIVE"  # connects no one until the row knows it
    env.rotator.iot_create = env.iot
    result = request(env, csr=csr)  # Lambda's retry of the same event
    assert result.outcome == "accepted" and result.certificate_id == minted
    assert len(certificates(env)) == 3 and certificates(env)[minted] == "ACTIVE"
    assert last_answer(env)[1]["certificate_id"] == minted
    assert scan(env.table)[0]["status"] == "issued" and scan(env.table)[0]["attached"] is True
    assert [r["action"] for r in scan(env.audit)] == ["certificate.rotation-issued"]


def test_another_csr_after_a_lost_answer_leaves_that_certificate_inactive_and_audited(env):
    env.rotator.iot_create = LosesTheAnswer(env.iot)
    with pytest.raises(ReadTimeoutError):
        request(env)
    [orphan] = set(certificates(env)) - set(env.certs.values())
    env.rotator.iot_create = env.iot
    new = request(env, request_id="r-2").certificate_id  # the device lost that key and made another
    assert new != orphan and certificates(env)[orphan] == "INACTIVE" and certificates(env)[new] == "ACTIVE"
    superseded = [r for r in scan(env.audit) if r["action"] == "certificate.rotation-superseded"]
    assert [r["details"]["certificate_id"] for r in superseded] == [orphan]


def test_the_handler_takes_the_rule_event(env, monkeypatch):
    monkeypatch.setenv("IOT_DATA_ENDPOINT", f"a1b2c3-ats.iot.{REGION}.amazonaws.com")
    monkeypatch.setenv("ROTATIONS_TABLE", ROTATIONS)
    monkeypatch.setenv("AUDIT_TABLE", "fleetwarden-test-audit")
    monkeypatch.setenv("DEVICE_POLICY_NAME", POLICY)
    rotation_handler._rotator.cache_clear()
    published = []

    def answered(model, params, **_):
        """moto serves iot-data only on its regional host: the account endpoint the handler uses is
        answered at the client boundary with Publish's documented success (HTTP 200, empty body)."""
        published.append(params["url"])
        return AWSResponse(url="", status_code=200, headers={}, raw=None), {}

    rotation_handler._rotator().iot_data.meta.events.register("before-call.iot-data.Publish", answered)
    # CreateCertificateFromCsr goes through a client that never re-sends it (botocore would re-send a request
    # whose answer timed out, minting a second certificate)
    assert rotation_handler._rotator().iot_create.meta.config.retries["total_max_attempts"] == 1
    try:
        answer = rotation_handler.lambda_handler(
            rule_event("request", env.certs[THING], csr=make_csr(), request_id="r-1"), LambdaContext())
    finally:
        rotation_handler._rotator.cache_clear()
    assert answer["outcome"] == "accepted" and len(answer["certificate_id"]) == 64
    [url] = published
    assert url == f"https://a1b2c3-ats.iot.{REGION}.amazonaws.com/topics/cmd%2F{THING}%2Fcerts%2Fresponse%2Faccepted?qos=1"


def test_rotation_topics_are_the_ones_in_the_device_policy():
    assert topics.cert_rotation_request_topic(THING) == f"cmd/{THING}/certs/request"
    assert topics.cert_rotation_confirm_topic(THING) == f"cmd/{THING}/certs/confirm"
    assert topics.cert_rotation_rule_topic() == "cmd/+/certs/+"
