"""Command tests: moto for KMS (ECC_NIST_P256 signing), IoT (things, groups, jobs), S3 and DynamoDB.

AWS IoT secure tunneling is not in moto: its client is a real boto3 client under botocore's Stubber,
which checks every request against the service model and answers with OpenTunnel's documented
response shape (https://docs.aws.amazon.com/iot/latest/apireference/API_iot-secure-tunneling_OpenTunnel.html).
"""

from __future__ import annotations

from types import SimpleNamespace

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
