"""Signed commands: documents per second per core (KMS excluded) and AWS calls per command.

Usage: .venv/bin/python bench/bench_signing.py [--seconds 2]

1. Backend, one core: build + check params + canonicalise + sign one `reboot` document with a LOCAL P-256
   key (the same `commands.sign` the issuer calls with KMS as the signer; the KMS round trip, ~10-30 ms
   in-region and KMS's per-key request quota, is what bounds the real issuer and is excluded here).
2. Device, one core: `commands.parse` + `commands.verify` (signature, time, target, nonce) + `check_params`
   of the job document as it arrives over MQTT: the device-side verifier's rate.
3. AWS calls per command: the issuer (`commands.issuer.issue.Issuer.send`) under moto for each command
   type, counted with botocore before-call hooks on its own clients (KMS Sign, IoT, S3, DynamoDB audit,
   secure tunneling under botocore's Stubber since moto lacks it). The key id is passed in, as the stack
   passes it, so no GetPublicKey.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="eu-west-1",
                  AWS_EC2_METADATA_DISABLED="true")

import boto3  # noqa: E402
from botocore.stub import Stubber  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from moto import mock_aws  # noqa: E402

from shared import commands  # noqa: E402
from shared.command_jobs import JobSettings, KmsSigner  # noqa: E402

NOW = 1_796_083_200


class Nonces:
    def __init__(self):
        self.seen = set()

    def check_and_add(self, nonce, not_after):
        if nonce in self.seen:
            return False
        self.seen.add(nonce)
        return True


def rate(fn, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def local_rates(seconds: float) -> tuple[float, float]:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = commands.load_public_keys([pem])
    kid = next(iter(keys))

    def signer(data: bytes) -> bytes:
        return private.sign(data, ec.ECDSA(hashes.SHA256()))

    def sign_one():
        params = {"delay_seconds": 10, "reason": "bench"}
        commands.check_params("reboot", params)
        document = commands.unsigned_document(command="reboot", params=params, issuer="alice", key=kid,
                                              issued_at=NOW, lifetime_seconds=3600, thing="SN-0001")
        return commands.sign(document, signer)

    wire = json.dumps(commands.job_document(sign_one())).encode()
    nonces = Nonces()

    def verify_one():
        nonces.seen.clear()  # every iteration verifies the same document: a fresh store each time
        fields = commands.verify(commands.parse(wire)["command"], trusted_keys=keys, thing="SN-0001",
                                 now=NOW + 10, nonces=nonces)
        commands.check_params(fields["command"], fields["params"])

    return rate(sign_one, seconds), rate(verify_one, seconds)


class Recorder:
    def __init__(self):
        self.calls: Counter[str] = Counter()

    def attach(self, client):
        client.meta.events.register("provide-client-params", self._count)  # before the Stubber answers

    def _count(self, model, **_):
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1


def calls_per_command() -> dict[str, Counter]:
    from commands.issuer.issue import Issuer, IssuerSettings

    results = {}
    with mock_aws():
        region = "eu-west-1"
        iot, kms, s3 = (boto3.client(n, region_name=region) for n in ("iot", "kms", "s3"))
        dynamodb = boto3.resource("dynamodb", region_name=region)
        audit = dynamodb.create_table(TableName="bench-audit", BillingMode="PAY_PER_REQUEST",
                                      KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
                                      AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}])
        key_arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        key_id = commands.key_id(kms.get_public_key(KeyId=key_arn)["PublicKey"])
        iot.create_thing(thingName="SN-0001")
        s3.create_bucket(Bucket="bench-artifacts", CreateBucketConfiguration={"LocationConstraint": region})
        firmware = b"firmware" * 1000
        digest = hashlib.sha256(firmware).hexdigest()
        s3.put_object(Bucket="bench-artifacts", Key=f"artifacts/{digest}", Body=firmware, ChecksumAlgorithm="SHA256")
        tunnels = boto3.client("iotsecuretunneling", region_name=region)
        recorder = Recorder()
        for client in (iot, kms, s3, audit.meta.client, tunnels):
            recorder.attach(client)
        issuer = Issuer(iot=iot, signer=KmsSigner(kms, key_arn, key_id), audit_table=audit, s3=s3, tunnels=tunnels,
                        settings=IssuerSettings(jobs=JobSettings(artifacts_bucket="bench-artifacts", region=region,
                                                                 presign_role_arn="arn:aws:iam::123456789012:role/p")),
                        now=lambda: NOW)
        claims = {"cognito:username": "alice", "cognito:groups": "admins"}
        params = {"config": {"desired": {"interval": 30}}, "reboot": {}, "shutdown": {}, "rotate-certificate": {},
                  "software-update": {"version": "2.0.0", "sha256": digest, "size": len(firmware)},
                  "remote-access": {}}
        for command in commands.COMMANDS:
            recorder.calls.clear()
            with Stubber(tunnels) as stub:
                if command == "remote-access":
                    stub.add_response("open_tunnel", {"tunnelId": "t-1", "tunnelArn": "arn:aws:iot:eu-west-1:1:tunnel/t-1",
                                                      "sourceAccessToken": "s", "destinationAccessToken": "d"})
                issuer.send(claims, json.dumps({"command": command, "thing": "SN-0001", "params": params[command]}))
            results[command] = Counter(recorder.calls)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    sign_rate, verify_rate = local_rates(args.seconds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"sign (build + params + canonical + local ECDSA P-256), one core: {sign_rate:,.0f} documents/s")
    print(f"device verify (parse + verify + params), one core:            {verify_rate:,.0f} documents/s")
    for command, calls in calls_per_command().items():
        print(f"{command:20s} {sum(calls.values())} calls: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(calls.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
