"""Command tests: moto for KMS (ECC_NIST_P256 signing), IoT (things, groups, jobs), S3 and DynamoDB.

AWS IoT secure tunneling is not in moto: its client is a real boto3 client under botocore's Stubber,
which checks every request against the service model and answers with OpenTunnel's documented
response shape (https://docs.aws.amazon.com/iot/latest/apireference/API_iot-secure-tunneling_OpenTunnel.html).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
from collections.abc import Iterator
from types import SimpleNamespace
from unittest import mock

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from commands.issuer.issue import Issuer, IssuerSettings
from shared import commands
from shared.command_jobs import JobSettings, KmsSigner
from tests.helpers import Clock, create_tables

REGION = "eu-west-1"
THING, OTHER, GROUP = "SN-0001", "SN-0002", "field-units"
ARTIFACTS = "fleetwarden-test-artifacts"
PRESIGN_ROLE = "arn:aws:iam::123456789012:role/fleetwarden-test-presign"
ADMIN = {"sub": "6f1c3c2e-0d4b-4a57-9a1e-6f9b1f0f2a11", "cognito:username": "alice",
         "cognito:groups": "admins", "token_use": "id"}
ANALYST = {**ADMIN, "cognito:username": "mallory", "cognito:groups": "analysts"}
NOW = 1_796_083_200.0


@pytest.fixture
def aws():
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        kms = boto3.client("kms", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        _, audit = create_tables(boto3.resource("dynamodb", region_name=REGION))
        key_arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        for thing in (THING, OTHER):
            iot.create_thing(thingName=thing)
        iot.create_thing_group(thingGroupName=GROUP)
        iot.add_thing_to_thing_group(thingGroupName=GROUP, thingName=THING)
        s3.create_bucket(Bucket=ARTIFACTS, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield SimpleNamespace(iot=iot, kms=kms, s3=s3, audit=audit, key_arn=key_arn)


@pytest.fixture
def tunnels():
    client = boto3.client("iotsecuretunneling", region_name=REGION)
    with Stubber(client) as stub:
        yield SimpleNamespace(client=client, stub=stub)


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def issuer(aws, tunnels, clock):
    settings = IssuerSettings(
        default_lifetime_seconds=24 * 3600, max_artifact_bytes=1024 * 1024, tunnel_lifetime_minutes=30,
        jobs=JobSettings(timeout_minutes=30, retry_attempts=2, artifacts_bucket=ARTIFACTS,
                         presign_role_arn=PRESIGN_ROLE, presign_seconds=3600, region=REGION))
    return Issuer(iot=aws.iot, signer=KmsSigner(aws.kms, aws.key_arn), audit_table=aws.audit, s3=aws.s3,
                  tunnels=tunnels.client, settings=settings, now=clock)


@pytest.fixture
def trusted(aws):
    """What a device trusts: the PEM the stack exports (GetPublicKey), loaded through cryptography."""
    return commands.load_public_keys([KmsSigner(aws.kms, aws.key_arn).public_pem()])


@functools.cache
def _test_ca() -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    return ec.generate_private_key(ec.SECP256R1()), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test IoT CA")])


@contextlib.contextmanager
def iot_signs_the_csr() -> Iterator[None]:
    """moto's CreateCertificateFromCsr signs a fresh RSA key of its own, not the CSR's. IoT's certificate
    carries the CSR's public key (that is what "Creates an X.509 certificate using the specified certificate
    signing request" means: https://docs.aws.amazon.com/iot/latest/apireference/API_CreateCertificateFromCsr.html),
    and the rotation relies on it to find a certificate whose answer was lost: corrected here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from moto.iot.models import IoTBackend

    def create_certificate_from_csr(backend, csr: str, set_as_active: bool):
        request = x509.load_pem_x509_csr(csr.encode("ascii"))
        key, issuer = _test_ca()
        now = datetime.datetime.now(datetime.timezone.utc)
        pem = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(issuer)
               .public_key(request.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256())
               .public_bytes(serialization.Encoding.PEM).decode("ascii"))
        # moto also takes the query string's "false" for true: setAsActive=false means INACTIVE
        active = set_as_active is True or str(set_as_active).lower() == "true"
        return backend.register_certificate(pem, ca_certificate_pem=None, set_as_active=active, status="INACTIVE")

    with mock.patch.object(IoTBackend, "create_certificate_from_csr", create_certificate_from_csr):
        yield
