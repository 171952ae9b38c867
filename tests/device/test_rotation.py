"""Certificate rotation on the device: new key, CSR, new certificate checked, reconnect with it, confirm, and
only then the old key dropped; refused answers and a refused new certificate leave a working identity."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from fleetwarden_contracts import topics
from fleetwarden_device import identity
from fleetwarden_device.agent import Agent
from fleetwarden_device.rotation import MAX_REFUSALS, Rotation

from device.local import acl
from device.local.rotation_service import RotationService
from tests.device.conftest import device_config, running, wait_until
from tests.device.test_jobs_broker import Signer, run_job

@pytest.fixture(scope="module")
def rotation_service(backend, pki):
    return RotationService(backend, pki)


def _der(path):
    return (
        identity.load_key(path)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def test_a_signed_rotate_job_rotates_and_the_old_key_goes_only_after_confirmation(
    broker, pki, jobs, rotation_service, tmp_path
):
    signer = Signer()
    files = pki.device("SN-ROT-0001", tmp_path / "dev")
    (tmp_path / "key.pem").write_bytes(signer.pem)
    config = device_config(
        tmp_path,
        broker,
        files,
        command_keys=[str(tmp_path / "key.pem")],
        telemetry_interval=30,
        metrics_interval=30,
    )
    old_key = _der(files.key_file)
    agent = Agent(config)
    with running(agent):
        status, details = run_job(
            jobs, agent, "fw-rotate-1", signer.document("rotate-certificate", thing=files.thing)
        )
        assert status == "SUCCEEDED" and details["request_id"]
        assert wait_until(lambda: sum(kind == "connected" for kind, _ in agent.events) >= 2), agent.events
        thing, request = rotation_service.requests[-1]
        assert (thing, request["request_id"]) == (files.thing, details["request_id"])
        new_key = _der(files.key_file)
        assert new_key != old_key  # connected again, now with the new key and certificate
        # The device policy lets a device confirm on its own rotation topic only (the ACL is generated
        # from it): the old key goes once the backend has the confirmation.
        assert f"pattern write {topics.cert_rotation_confirm_topic('%u')}" in acl.device_acl(
            topics.rule_name("local", "telemetry"))
        assert wait_until(lambda: agent.rotation.completed)
        assert not files.key_file.with_name("device.key.pem.previous").exists()


def _rotation(tmp_path, sent):
    key_file, cert_file = tmp_path / "device.key.pem", tmp_path / "device.cert.pem"
    identity.new_key(key_file)
    cert_file.write_text("old certificate")
    return Rotation(
        thing="SN-0001",
        key_file=key_file,
        cert_file=cert_file,
        state_dir=tmp_path / "state",
        publish=lambda topic, body: sent.append((topic, body)),
    )


def _answer(rotation, outcome, body):
    rotation.on_message(
        f"{topics.cert_rotation_response_prefix('SN-0001')}/{outcome}", json.dumps(body).encode()
    )


def test_a_certificate_for_another_key_or_thing_is_refused_and_nothing_swaps(tmp_path, pki):
    sent = []
    rotation = _rotation(tmp_path, sent)
    request_id = rotation.start()
    assert sent[0][0] == topics.cert_rotation_request_topic("SN-0001")
    stranger = pki.device("SN-0001", tmp_path / "stranger").certificate  # right CN, another key
    other_thing = pki.sign_csr(identity.csr_pem(identity.load_key(rotation.next_key), "SN-0002"))
    for certificate in (stranger, other_thing):
        _answer(
            rotation,
            "accepted",
            {
                "request_id": request_id,
                "certificate_id": "ab" * 32,
                "certificate_pem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
            },
        )
    assert (
        rotation.state()["phase"] == "requested"
        and (tmp_path / "device.cert.pem").read_text() == "old certificate"
    )


def test_a_rejected_request_drops_the_new_key(tmp_path):
    rotation = _rotation(tmp_path, [])
    request_id = rotation.start()
    _answer(rotation, "rejected", {"request_id": request_id, "reason": "wrong-cn", "detail": "x"})
    assert not rotation.next_key.exists() and rotation.state() == {}


def test_a_refused_new_certificate_swaps_back_to_the_old_one(tmp_path, pki):
    sent = []
    rotation = _rotation(tmp_path, sent)
    old = _der(rotation.key_file)
    request_id = rotation.start()
    certificate = pki.sign_csr(identity.csr_pem(identity.load_key(rotation.next_key), "SN-0001"))
    _answer(
        rotation,
        "accepted",
        {
            "request_id": request_id,
            "certificate_id": "cd" * 32,
            "certificate_pem": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        },
    )
    assert rotation.state()["phase"] == "switched" and _der(rotation.key_file) != old
    for _ in range(MAX_REFUSALS):
        rotation.on_refused()
    assert _der(rotation.key_file) == old and (tmp_path / "device.cert.pem").read_text() == "old certificate"
    assert rotation.state() == {}


def test_a_swap_interrupted_by_a_restart_is_finished(tmp_path, pki):
    rotation = _rotation(tmp_path, [])
    request_id = rotation.start()
    certificate = pki.sign_csr(identity.csr_pem(identity.load_key(rotation.next_key), "SN-0001"))
    new = _der(rotation.next_key)
    rotation.next_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    rotation._save({"phase": "switching", "request_id": request_id, "certificate_id": "ef" * 32})
    import os

    os.replace(rotation.key_file, rotation.previous_key)  # the power went out after the first rename
    restarted = Rotation(
        thing="SN-0001",
        key_file=rotation.key_file,
        cert_file=rotation.cert_file,
        state_dir=tmp_path / "state",
        publish=lambda *a: None,
    )
    restarted.resume()
    assert _der(restarted.key_file) == new and restarted.state()["phase"] == "switched"
    assert restarted.previous_key.exists() and restarted.previous_cert.exists()
