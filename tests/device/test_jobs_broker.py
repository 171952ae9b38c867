"""Signed commands delivered as IoT jobs over the real broker: verified and run, or REJECTED with the reason.

The backend side signs with a local P-256 key through `commands.sign` (the Commands stack signs with KMS;
same bytes, same verifier) and queues the job with the local IoT Jobs stand-in
(device/local/jobs_service.py)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fleetwarden_contracts import commands, topics
from fleetwarden_device.agent import Agent

from tests.device.conftest import Inbox, device_config, running, wait_until


class Signer:
    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = self.key.public_key()
        self.pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = commands.key_id(
            public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def document(
        self, command="reboot", params=None, *, thing=None, group=None, issued_at=None, lifetime=600
    ):
        unsigned = commands.unsigned_document(
            command=command,
            params=params or {},
            issuer="alice@example.com",
            key=self.key_id,
            issued_at=int(time.time()) if issued_at is None else issued_at,
            lifetime_seconds=lifetime,
            thing=thing,
            group=group,
        )
        return commands.sign(unsigned, lambda data: self.key.sign(data, ec.ECDSA(hashes.SHA256())))


@pytest.fixture(scope="module")
def signer():
    return Signer()


@pytest.fixture
def device(broker, pki, signer, tmp_path, request):
    """A device (thing named after the test) that trusts `signer`, running until the test ends."""
    thing = "SN-JOB-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:10]
    files = pki.device(thing, tmp_path / "dev")
    (tmp_path / "command-key.pem").write_bytes(signer.pem)
    config = device_config(
        tmp_path,
        broker,
        files,
        command_keys=[str(tmp_path / "command-key.pem")],
        groups=["fleet-eu"],
        artifact_schemes=["http"],
        telemetry_interval=30,
        metrics_interval=30,
    )
    return Agent(config)


def run_job(jobs, agent, job_id, document, **unsigned):
    jobs.queue(agent.config.thing, job_id, commands.job_document(document, **unsigned))
    return jobs.wait_terminal(agent.config.thing, job_id)


def test_a_signed_job_is_verified_run_and_reported(jobs, device, signer):
    with running(device):
        status, details = run_job(
            jobs,
            device,
            "fw-reboot-1",
            signer.document(thing=device.config.thing, params={"delay_seconds": 0}),
        )
    assert (status, details["command"], details["action"]) == ("SUCCEEDED", "reboot", "logged")
    assert device.actions == [("reboot", {"delay_seconds": 0})]
    sent = [update["status"] for thing, _, update in jobs.updates if thing == device.config.thing]
    assert sent == ["IN_PROGRESS", "SUCCEEDED"]


def test_a_job_queued_while_offline_runs_on_the_next_connection(jobs, device, signer):
    jobs.queue(
        device.config.thing,
        "fw-reboot-offline",
        commands.job_document(signer.document(thing=device.config.thing)),
    )
    with running(device):
        assert jobs.wait_terminal(device.config.thing, "fw-reboot-offline")[0] == "SUCCEEDED"


def _tampered(signer, thing):
    document = signer.document(thing=thing, params={"delay_seconds": 0})
    return {**document, "params": {"delay_seconds": 3600}}


def _unsigned(signer, thing):
    return {k: v for k, v in signer.document(thing=thing).items() if k != "signature"}


REFUSALS = {
    "tampered": (_tampered, commands.BAD_SIGNATURE),
    "unsigned": (_unsigned, commands.UNSIGNED),
    "expired": (
        lambda s, t: s.document(thing=t, issued_at=int(time.time()) - 7200, lifetime=3600),
        commands.EXPIRED,
    ),
    "mistargeted": (lambda s, t: s.document(thing="SN-SOMEONE-ELSE"), commands.MISTARGETED),
    "other group": (lambda s, t: s.document(group="fleet-us"), commands.MISTARGETED),
    "unknown key": (lambda s, t: Signer().document(thing=t), commands.UNKNOWN_KEY),
    "not yet valid": (
        lambda s, t: s.document(thing=t, issued_at=int(time.time()) + 3600),
        commands.NOT_YET_VALID,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_document_is_rejected_with_its_reason(jobs, device, signer, case):
    make, reason = REFUSALS[case]
    with running(device):
        status, details = run_job(jobs, device, "fw-refused-1", make(signer, device.config.thing))
    assert (status, details["reason"]) == ("REJECTED", reason)
    assert device.actions == []


def test_a_replayed_document_is_rejected_even_after_a_restart(jobs, device, signer):
    document = signer.document(thing=device.config.thing)
    with running(device):
        assert run_job(jobs, device, "fw-first", document)[0] == "SUCCEEDED"
    restarted = Agent(device.config)  # a new process: only the state directory (the nonce store) carries over
    with running(restarted):
        status, details = run_job(jobs, restarted, "fw-replay", document)
    assert (status, details["reason"]) == ("REJECTED", commands.REPLAYED)


def test_a_job_message_with_a_duplicate_key_is_rejected_as_malformed(jobs, device, signer, backend):
    """commands.parse reads the whole Jobs message: a second `command` cannot hide behind the first."""
    thing = device.config.thing
    good = json.dumps(signer.document(thing=thing))
    raw = (
        '{"execution": {"jobId": "fw-dup", "status": "QUEUED", '
        '"jobDocument": {"command": %s, "command": %s}}}' % (good, good)
    )
    with running(device):
        assert wait_until(device.connected.is_set)
        jobs.executions.setdefault(thing, {})["fw-dup"] = {
            "jobId": "fw-dup",
            "status": "QUEUED",
            "queuedAt": 0,
            "versionNumber": 1,
        }
        backend.publish(f"{topics.jobs_prefix(thing)}/notify-next", raw, qos=1)
        status, details = jobs.wait_terminal(thing, "fw-dup")
    assert (status, details["reason"]) == ("REJECTED", commands.MALFORMED)


def test_config_is_applied_and_reported_to_the_named_shadow(jobs, device, signer, backend):
    shadow = Inbox(backend, f"{topics.shadow_prefix(device.config.thing)}/update")
    with running(device):
        status, details = run_job(
            jobs,
            device,
            "fw-config-1",
            signer.document("config", {"desired": {"telemetry_interval": 120}}, thing=device.config.thing),
        )
        assert shadow.wait_for(lambda t, p: True)
    assert status == "SUCCEEDED"
    assert json.loads(shadow.messages[0][1]) == {"state": {"reported": {"telemetry_interval": 120}}}


@pytest.fixture
def artifact_server():
    files = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield files, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_software_update_checks_size_and_sha256_before_success(jobs, device, signer, artifact_server):
    files, base = artifact_server
    firmware = b"firmware 2.0.0 " * 1000
    files["/fw.bin"] = firmware
    digest = hashlib.sha256(firmware).hexdigest()
    files["/evil.bin"] = firmware[:-1] + b"!"
    thing = device.config.thing
    with running(device):
        good = run_job(
            jobs,
            device,
            "fw-update-ok",
            signer.document(
                "software-update", {"version": "2.0.0", "sha256": digest, "size": len(firmware)}, thing=thing
            ),
            artifact_url=f"{base}/fw.bin",
        )
        swapped = run_job(
            jobs,
            device,
            "fw-update-swapped",
            signer.document(
                "software-update", {"version": "2.0.1", "sha256": digest, "size": len(firmware)}, thing=thing
            ),
            artifact_url=f"{base}/evil.bin",
        )
        longer = run_job(
            jobs,
            device,
            "fw-update-long",
            signer.document(
                "software-update", {"version": "2.0.2", "sha256": digest, "size": 10}, thing=thing
            ),
            artifact_url=f"{base}/fw.bin",
        )
    assert good == ("SUCCEEDED", {"command": "software-update", "version": "2.0.0", "sha256": digest})
    assert (device.config.state_dir / "firmware" / "2.0.0.bin").read_bytes() == firmware
    assert swapped[0] == longer[0] == "FAILED"
    assert swapped[1]["reason"] == longer[1]["reason"] == "artifact-mismatch"
    assert not (device.config.state_dir / "firmware" / "2.0.1.bin").exists()
    assert not list((device.config.state_dir / "downloads").iterdir())
