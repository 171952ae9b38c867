"""The agent's parts without a broker: config, key file, nonce store, backoff, status details, metric report,
the ACL generator."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest
from defense.detector import reports
from fleetwarden_contracts import topics
from fleetwarden_device import identity, metrics
from fleetwarden_device.agent import backoff_delay
from fleetwarden_device.config import ConfigError, from_dict, load
from fleetwarden_device.jobs import status_details
from fleetwarden_device.nonces import NonceStore

from device.local import acl

BASE = {
    "thing": "SN-0001",
    "endpoint": "x.iot.eu-west-1.amazonaws.com",
    "stage": "prod",
    "ca_file": "ca.pem",
    "cert_file": "c.pem",
    "key_file": "k.pem",
}


def test_config_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "device.json").write_text(json.dumps({**BASE, "command_keys": ["keys/a.pem"]}))
    config = load(tmp_path / "device.json")
    assert config.ca_file == tmp_path / "ca.pem" and config.command_keys == (tmp_path / "keys/a.pem",)
    assert (config.port, config.tls_min_version, config.artifact_schemes) == (8883, "1.2", ("https",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"thing": "SN/0001"}, "not a thing name"),
        ({"thing": "+"}, "not a thing name"),
        ({"tls_min_version": "1.1"}, "tls_min_version"),
        ({"port": 0}, "port"),
        ({"groups": "fleet"}, "groups"),
        ({"artifact_schemes": ["ftp"]}, "artifact_schemes"),
        ({"colour": "red"}, "unknown ['colour']"),
        ({"endpoint": None}, "endpoint"),
    ],
)
def test_a_bad_config_is_one_clear_error(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict({**BASE, **change}, tmp_path)


def test_config_file_that_is_not_json(tmp_path):
    (tmp_path / "device.json").write_text("{thing:")
    with pytest.raises(ConfigError, match="not JSON"):
        load(tmp_path / "device.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.json")


def test_the_device_key_is_0600_and_never_overwritten(tmp_path):
    path = tmp_path / "keys" / "device.key.pem"
    key = identity.new_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        identity.new_key(path)
    from cryptography import x509

    csr = x509.load_pem_x509_csr(identity.csr_pem(key, "SN-0001"))
    assert csr.is_signature_valid and csr.subject.rfc4514_string() == "CN=SN-0001"
    assert identity.load_key(path).private_numbers() == key.private_numbers()


def test_nonce_store_refuses_a_replay_across_restarts_and_forgets_expired(tmp_path):
    now = [1_000]
    store = NonceStore(tmp_path / "nonces.json", clock=lambda: now[0])
    assert store.check_and_add("a" * 22, 2_000)
    assert not NonceStore(tmp_path / "nonces.json", clock=lambda: now[0]).check_and_add("a" * 22, 2_000)
    now[0] = 2_001
    assert store.check_and_add("b" * 22, 3_000)
    assert json.loads((tmp_path / "nonces.json").read_text()) == {"b" * 22: 3_000}


def test_a_corrupt_nonce_store_is_an_error_not_an_empty_set(tmp_path):
    (tmp_path / "nonces.json").write_text('["a"]')
    with pytest.raises(ValueError, match="corrupt"):
        NonceStore(tmp_path / "nonces.json").check_and_add("a" * 22, 10**10)


def test_backoff_is_exponential_with_full_jitter_and_capped():
    assert backoff_delay(0, 1.0, 120, rng=lambda: 0.999) < 1.0
    assert backoff_delay(3, 1.0, 120, rng=lambda: 0.5) == 4.0
    assert backoff_delay(50, 1.0, 120, rng=lambda: 0.999) < 120
    assert backoff_delay(5, 1.0, 120, rng=lambda: 0.0) == 0.0


def test_status_details_fit_update_job_execution():
    details = status_details(
        {"reason": "bad-signature", "detail": "x\n" * 600, "bad key!": "v", "empty": " "}
    )
    assert details["reason"] == "bad-signature"
    assert len(details["detail"]) <= 1024 and "\n" not in details["detail"]
    assert "bad key!" not in details and "empty" not in details


def test_the_metric_report_shows_a_real_listening_port_and_the_detector_accepts_it():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        report = metrics.report(report_id=7)
        assert {"interface": "127.0.0.1", "port": port} in report["metrics"]["listening_tcp_ports"]["ports"]
        counts = reports.parse_report(json.loads(json.dumps(report)))
        assert counts.listening_tcp_ports >= 1
        assert metrics.own_listening_sockets(os.getpid()) == [("127.0.0.1", port)]


def test_the_acl_is_the_device_policy():
    text = acl.device_acl(topics.rule_name("prod", "telemetry"))
    rules = {line for line in text.splitlines() if line.startswith("pattern ")}
    assert f"pattern write {topics.telemetry_topic('fleetwarden_prod_telemetry', '%u')}" in rules
    assert f"pattern write {topics.metrics_report_topic('fleetwarden_prod_device_metrics', '%u')}" in rules
    assert f"pattern write {topics.alerts_topic('%u')}" in rules
    assert f"pattern read {topics.jobs_prefix('%u')}/#" in rules
    assert not any("dt/+/" in line or " # " in line for line in rules)
    assert text.split(f"user {acl.BACKEND_USER}")[1].split() == [
        "topic",
        "readwrite",
        "#",
        "topic",
        "readwrite",
        "$aws/#",
    ]


def test_the_acl_generator_refuses_what_it_cannot_translate(monkeypatch):
    from stacks.identity import iot_policies

    real = iot_policies.device_policy_document

    def widened(arn_prefix, rule):
        document = real(arn_prefix, rule)
        document["Statement"][1]["Resource"].append(f"{arn_prefix}:topic/dt/*/alerts")
        return document

    monkeypatch.setattr(acl, "device_policy_document", widened)
    with pytest.raises(ValueError, match="no faithful mosquitto translation"):
        acl.device_acl("fleetwarden_prod_telemetry")


def _config_file(tmp_path):
    path = tmp_path / "device.json"
    path.write_text(json.dumps({**BASE, "firmware_version": "1.4.2"}))
    return path


def test_keygen_cli_makes_key_and_csr_once(tmp_path, capsys):
    from fleetwarden_device.cli import main

    path = _config_file(tmp_path)
    assert main(["keygen", "--config", str(path)]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600
    assert (tmp_path / "device.csr.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    key = (tmp_path / "k.pem").read_bytes()
    assert main(["keygen", "--config", str(path)]) == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "k.pem").read_bytes() == key


def test_alert_cli_queues_the_alert_format_the_backend_accepts(tmp_path, capsys):
    from alerts.schema import Alert
    from fleetwarden_device.cli import main

    path = _config_file(tmp_path)
    (tmp_path / "trace.bin").write_bytes(b"\x00core")
    assert (
        main(
            [
                "alert",
                "--config",
                str(path),
                "--code",
                "1042",
                "--field",
                "3=17.5",
                "--field",
                "4=2",
                "--trace-file",
                str(tmp_path / "trace.bin"),
            ]
        )
        == 0
    )
    [queued] = (tmp_path / "state" / "outbox").glob("*.json")
    entry = json.loads(queued.read_text())
    assert entry["kind"] == "alert"
    alert = Alert.model_validate(entry["body"])
    assert (alert.header.fw, alert.header.code, alert.header.fields) == ("1.4.2", 1042, {"3": 17.5, "4": 2})
    assert main(["alert", "--config", str(path), "--code", "1", "--field", "3=hot"]) == 2
    assert "ID=NUMBER" in capsys.readouterr().err


def test_a_job_interrupted_by_a_restart_is_reported_failed_not_run_again(tmp_path):
    from fleetwarden_device.handlers import Context
    from fleetwarden_device.jobs import JobRunner

    sent, ran = [], []
    runner = JobRunner(
        thing="SN-0001",
        groups=(),
        trusted_keys={},
        nonces=None,
        handlers={"reboot": lambda *a: ran.append(a)},
        clock=lambda: 0,
        context=Context("SN-0001", tmp_path, ("https",), lambda *a: None, []),
        publish=lambda topic, body: sent.append((topic, body)),
        journal=tmp_path / "jobs",
    )
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "fw-1.started").write_text("nonce")
    runner.on_message(
        f"{topics.jobs_prefix('SN-0001')}/notify-next",
        json.dumps({"execution": {"jobId": "fw-1", "status": "IN_PROGRESS", "jobDocument": {}}}).encode(),
    )
    update = sent[0]
    assert update[0] == f"{topics.jobs_prefix('SN-0001')}/fw-1/update"
    assert (update[1]["status"], update[1]["statusDetails"]["reason"]) == ("FAILED", "interrupted")
    assert ran == []


def test_jobs_messages_for_another_thing_are_ignored(tmp_path):
    from fleetwarden_device.handlers import Context
    from fleetwarden_device.jobs import JobRunner

    sent = []
    runner = JobRunner(
        thing="SN-0001",
        groups=(),
        trusted_keys={},
        nonces=None,
        handlers={},
        clock=lambda: 0,
        context=Context("SN-0001", tmp_path, ("https",), lambda *a: None, []),
        publish=lambda topic, body: sent.append((topic, body)),
        journal=tmp_path / "jobs",
    )
    runner.on_message(
        f"{topics.jobs_prefix('SN-0002')}/notify-next",
        json.dumps({"execution": {"jobId": "fw-1", "status": "QUEUED", "jobDocument": {}}}).encode(),
    )
    assert sent == []


def test_on_port_443_the_agent_sends_alpn_x_amzn_mqtt_ca_and_sni(pki, tmp_path):
    """AWS IoT Core on 443 with X.509: ALPN `x-amzn-mqtt-ca` and SNI are required (protocols.html). A TLS
    server on loopback records what the agent's context offers."""
    import ssl
    import threading

    from fleetwarden_device import tls

    from device.local.broker import HOST

    device = pki.device("SN-ALPN-0001", tmp_path / "dev")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))
    server_context.set_alpn_protocols(["x-amzn-mqtt-ca"])
    seen = {}
    server_context.sni_callback = lambda sock, name, ctx: seen.update(sni=name)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def serve():
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as secured:
                seen["alpn"] = secured.selected_alpn_protocol()

        thread = threading.Thread(target=serve)
        thread.start()
        context = tls.client_context(
            ca_file=pki.ca_file, cert_file=device.cert_file, key_file=device.key_file, port=443
        )
        with socket.create_connection(listener.getsockname()) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as secured:
                assert secured.selected_alpn_protocol() == "x-amzn-mqtt-ca"
        thread.join(5)
    assert seen == {"sni": HOST, "alpn": "x-amzn-mqtt-ca"}
    plain = tls.client_context(ca_file=pki.ca_file, cert_file=device.cert_file, key_file=device.key_file)
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2 and plain.verify_mode == ssl.CERT_REQUIRED
    assert plain.check_hostname and plain.get_ca_certs() == context.get_ca_certs()
    assert len(plain.get_ca_certs()) == 1  # the pinned CA only: no system trust store


def test_a_finished_job_redelivered_gets_the_same_report_and_never_runs_twice(tmp_path):
    """The SUCCEEDED update was lost with the connection: IoT Jobs redelivers the execution IN_PROGRESS."""
    import time

    from fleetwarden_device.handlers import Context
    from fleetwarden_device.jobs import JobRunner

    from tests.device.test_jobs_broker import Signer

    signer, sent, ran = Signer(), [], []

    def runner():
        return JobRunner(
            thing="SN-0001",
            groups=(),
            trusted_keys={signer.key_id: signer.key.public_key()},
            nonces=NonceStore(tmp_path / "nonces.json"),
            clock=time.time,
            handlers={"reboot": lambda *a: ran.append(a) or {"action": "done"}},
            context=Context("SN-0001", tmp_path, ("https",), lambda *a: None, []),
            publish=lambda topic, body: sent.append((topic, body)),
            journal=tmp_path / "jobs",
        )

    document = {"command": signer.document(thing="SN-0001")}
    topic = f"{topics.jobs_prefix('SN-0001')}/notify-next"
    for status in ("QUEUED", "IN_PROGRESS"):  # a new runner each time: a restarted agent
        execution = {"jobId": "fw-1", "status": status, "jobDocument": document}
        runner().on_message(topic, json.dumps({"execution": execution}).encode())
    updates = [body for t, body in sent if t.endswith("/fw-1/update")]
    assert [u["status"] for u in updates] == ["IN_PROGRESS", "SUCCEEDED", "SUCCEEDED"]
    assert (
        updates[1]["statusDetails"] == updates[2]["statusDetails"] == {"command": "reboot", "action": "done"}
    )
    assert len(ran) == 1


def test_provision_takes_a_token_that_begins_with_a_dash(tmp_path, monkeypatch, capsys):
    """base64url tokens begin with '-' one time in 64: `--token=TOKEN` must carry them (the demo once failed)."""
    from fleetwarden_device import cli, provisioning

    seen = {}

    def provision(*args, **kwargs):
        seen.update(kwargs)
        return "SN-0001"

    monkeypatch.setattr(provisioning, "provision", provision)
    path = _config_file(tmp_path)
    code = cli.main(["provision", "--config", str(path), "--claim-cert", "c.pem", "--claim-key", "c.key",
                     "--template", "t", "--token=-Abc_123"])
    assert code == 0, capsys.readouterr().err
    assert seen["token"] == "-Abc_123"
