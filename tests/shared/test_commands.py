"""The signed command document: what the backend signs is what the device verifies, and nothing else passes.

KMS Sign returns a DER-encoded ECDSA signature for ECDSA_SHA_256
(https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html, Response Syntax "Signature"), and
GetPublicKey returns the DER SubjectPublicKeyInfo
(https://docs.aws.amazon.com/kms/latest/APIReference/API_GetPublicKey.html): the KMS test signs through moto
exactly that way.
"""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

from shared import commands
from shared.commands import CommandRefused

NOW = 1_796_083_200


class Nonces:
    def __init__(self):
        self.seen = {}

    def check_and_add(self, nonce, not_after):
        if nonce in self.seen:
            return False
        self.seen[nonce] = not_after
        return True


def _local_key():
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = commands.load_public_keys([pem])
    return private, next(iter(keys)), keys


@pytest.fixture(scope="module")
def key():
    return _local_key()


def _signed(key, **overrides):
    private, kid, _ = key
    fields = dict(command="reboot", params={}, issuer="alice@example.com", key=kid, issued_at=NOW,
                  lifetime_seconds=3600, thing="SN-0001")
    fields.update(overrides)
    document = commands.unsigned_document(**fields)
    return commands.sign(document, lambda data: private.sign(data, ec.ECDSA(hashes.SHA256())))


def _verify(key, document, **overrides):
    options = dict(trusted_keys=key[2], thing="SN-0001", now=NOW + 10)
    options.update(overrides)
    return commands.verify(document, **options)


def test_canonical_form_is_sorted_compact_utf8():
    assert commands.canonical_bytes({"b": 1, "a": {"d": "é", "c": [True, None]}}) == \
        '{"a":{"c":[true,null],"d":"é"},"b":1}'.encode("utf-8")


@pytest.mark.parametrize("value", [1.5, 2**53, float("nan"), b"bytes", {1: "x"}, "\ud800"])
def test_canonical_form_refuses_what_another_language_would_write_differently(value):
    with pytest.raises(ValueError):
        commands.canonical_bytes({"params": {"x": value}})


def test_signed_document_verifies_after_a_trip_through_json(key):
    document = _signed(key, command="config", params={"interval": 30, "mode": "eco"})
    wire = json.dumps(commands.job_document(document), indent=2).encode()  # any whitespace, any key order
    received = commands.parse(wire)["command"]
    fields = _verify(key, received)
    assert fields["command"] == "config" and fields["params"] == {"interval": 30, "mode": "eco"}


def test_kms_signature_verifies_with_the_exported_public_key():
    with mock_aws():
        kms = boto3.client("kms", region_name="eu-west-1")
        key_arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        der = kms.get_public_key(KeyId=key_arn)["PublicKey"]
        pem = serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        trusted = commands.load_public_keys([pem])
        assert list(trusted) == [commands.key_id(der)]
        document = commands.unsigned_document(command="shutdown", params={}, issuer="auto-response",
                                              key=commands.key_id(der), issued_at=NOW, lifetime_seconds=600,
                                              thing="SN-0001")
        signed = commands.sign(document, lambda data: kms.sign(
            KeyId=key_arn, Message=data, MessageType="RAW",
            SigningAlgorithm=commands.SIGNING_ALGORITHM)["Signature"])
    assert commands.verify(signed, trusted_keys=trusted, thing="SN-0001", now=NOW)["command"] == "shutdown"


def test_every_changed_byte_is_refused(key):
    document = _signed(key, params={"interval": 30})
    text = commands.canonical_bytes({k: v for k, v in document.items() if k != "signature"}).decode()
    for index in range(len(text)):
        tampered = text[:index] + ("x" if text[index] != "x" else "y") + text[index + 1:]
        try:
            candidate = json.loads(tampered)
        except ValueError:
            continue  # not JSON any more: parse refuses it before verify
        if not isinstance(candidate, dict):
            continue
        candidate["signature"] = document["signature"]
        with pytest.raises(CommandRefused) as refused:
            _verify(key, candidate)
        assert refused.value.reason in (commands.BAD_SIGNATURE, commands.MALFORMED, commands.UNKNOWN_KEY)


def test_flipped_signature_bit_is_refused(key):
    document = _signed(key)
    signature = bytearray(base64.b64decode(document["signature"]))
    signature[-1] ^= 1
    with pytest.raises(CommandRefused) as refused:
        _verify(key, {**document, "signature": base64.b64encode(bytes(signature)).decode()})
    assert refused.value.reason == commands.BAD_SIGNATURE


@pytest.mark.parametrize("document, reason", [
    ({"command": "reboot"}, commands.UNSIGNED),
    ({"signature": "AAAA"}, commands.MALFORMED),
    ([], commands.MALFORMED),
])
def test_shapeless_documents_are_refused(key, document, reason):
    with pytest.raises(CommandRefused) as refused:
        _verify(key, document)
    assert refused.value.reason == reason


def test_unknown_key_expired_future_and_mistargeted_documents_are_refused(key):
    other = _local_key()
    cases = [
        (_signed(other), {}, commands.UNKNOWN_KEY),
        (_signed(key), {"now": NOW + 3600}, commands.EXPIRED),
        (_signed(key), {"now": NOW - commands.CLOCK_SKEW_SECONDS - 1}, commands.NOT_YET_VALID),
        (_signed(key), {"thing": "SN-0002"}, commands.MISTARGETED),
        (_signed(key, thing=None, group="line-7"), {"groups": ("line-8",)}, commands.MISTARGETED),
    ]
    for document, options, reason in cases:
        with pytest.raises(CommandRefused) as refused:
            _verify(key, document, **options)
        assert refused.value.reason == reason
    assert _verify(key, _signed(key, thing=None, group="line-7"), groups=("line-7",))["target"] == {"group": "line-7"}


def test_rolled_over_keys_both_verify_while_both_are_trusted(key):
    new = _local_key()
    trusted = {**key[2], **new[2]}
    for signer in (key, new):
        assert _verify(key, _signed(signer), trusted_keys=trusted)["key_id"] == signer[1]


def test_a_replayed_nonce_is_refused_and_a_refused_document_does_not_burn_its_nonce(key):
    nonces = Nonces()
    document = _signed(key)
    with pytest.raises(CommandRefused):
        _verify(key, document, thing="SN-0002", nonces=nonces)  # mistargeted: nonce untouched
    assert _verify(key, document, nonces=nonces)
    with pytest.raises(CommandRefused) as refused:
        _verify(key, document, nonces=nonces)
    assert refused.value.reason == commands.REPLAYED


def test_an_unknown_command_with_a_valid_signature_is_refused(key):
    private, kid, trusted = key
    document = commands.unsigned_document(command="reboot", params={}, issuer="a", key=kid, issued_at=NOW,
                                          lifetime_seconds=60, thing="SN-0001")
    document["command"] = "format-disk"
    signed = commands.sign(document, lambda data: private.sign(data, ec.ECDSA(hashes.SHA256())))
    with pytest.raises(CommandRefused) as refused:
        _verify(key, signed)
    assert refused.value.reason == commands.UNKNOWN_COMMAND


def test_the_backend_refuses_to_sign_a_document_the_device_would_refuse(key):
    for bad in ({"lifetime_seconds": 0}, {"lifetime_seconds": commands.MAX_LIFETIME_SECONDS + 1},
                {"thing": "SN 1"}, {"group": "g"}, {"params": {"ratio": 0.5}}, {"issuer": ""}):
        with pytest.raises(ValueError):
            _signed(key, **bad)


@pytest.mark.parametrize("raw", [b'{"command": 1, "command": 2}', b"[1]", b"{", b'{"a": 1.5}', b'{"a": NaN}',
                                 b"\xff"])
def test_parse_refuses_duplicates_floats_and_garbage(raw):
    with pytest.raises(CommandRefused) as refused:
        commands.parse(raw)
    assert refused.value.reason == commands.MALFORMED
