"""The agent against a real mosquitto over mutual TLS: what it publishes, and every way a connection is
refused."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import psutil
import pytest
from alerts.schema import Alert
from defense.detector import reports
from fleetwarden_contracts import topics
from fleetwarden_device import metrics
from fleetwarden_device.agent import Agent, write_outbox

from device.local.broker import HOST, Broker, LocalPki
from tests.device.conftest import Inbox, device_config, needs_mosquitto, running, wait_until

REFUSAL_WINDOW = 1.5  # seconds an agent keeps retrying (backoff 0.05-0.3 s) without ever being accepted


def refused_throughout(agent: Agent) -> bool:
    with running(agent):
        time.sleep(REFUSAL_WINDOW)
    kinds = [kind for kind, _ in agent.events]
    return "connected" not in kinds and kinds.count("refused") >= 2


def test_connects_with_its_certificate_and_publishes_telemetry_alerts_and_metrics(
    broker, backend, pki, tmp_path
):
    device = pki.device("SN-TLS-0001", tmp_path / "dev")
    config = device_config(tmp_path, broker, device)
    telemetry = Inbox(backend, topics.telemetry_topic(topics.rule_name("local", "telemetry"), device.thing))
    alerts = Inbox(backend, topics.alerts_topic(device.thing))
    reports_inbox = Inbox(
        backend, topics.metrics_report_topic(topics.metrics_rule_name("local"), device.thing)
    )
    write_outbox(
        config,
        "alert",
        {
            "header": {"fw": "1.4.2", "code": 1042, "fields": {"3": 17.5}},
            "trace": base64.b64encode(b"stack trace").decode(),
        },
    )
    with running(Agent(config)) as agent:
        assert telemetry.wait_for(lambda t, p: True), "no telemetry on the Basic Ingest topic"
        _, alert = alerts.wait_for(lambda t, p: True)
        _, report = reports_inbox.wait_for(lambda t, p: True)
        assert wait_until(lambda: not list(config.outbox.glob("*.json"))), "acknowledged alert not removed"
    # TLS 1.3 whenever the server offers it (mosquitto does): the minimum is 1.2, the preference the highest.
    assert agent.events[0] == ("connected", {"session_present": False, "tls": "TLSv1.3"})
    sample = json.loads(telemetry.messages[0][1])
    assert type(sample["ts"]) is int and sample["seq"] >= 1 and isinstance(sample["metrics"], dict)
    # The backend's own validators accept what the agent sent.
    assert Alert.model_validate_json(alert).header.code == 1042
    counts = reports.parse_report(json.loads(report))
    assert counts.established_tcp_connections >= 1  # at least the agent's own connection to the broker


def test_refused_without_a_client_certificate(broker, pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca_file))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="SN-NOCERT-1")
    client.tls_set_context(context)
    accepted = []
    client.on_connect = lambda c, u, f, rc, p: accepted.append(not rc.is_failure)
    try:
        client.connect(HOST, broker.port, keepalive=10)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and client.loop(timeout=0.1) == mqtt.MQTT_ERR_SUCCESS:
            pass
    except OSError:
        pass  # TLS 1.2 refuses during the handshake; TLS 1.3 right after it
    assert True not in accepted
    # mosquitto writes its log line on its own time: wait for it rather than race it.
    assert wait_until(lambda: "peer did not return a certificate" in broker.log())


def test_refused_with_a_certificate_from_another_ca(broker, tmp_path):
    stranger = LocalPki(tmp_path / "other-ca", name="Someone else's CA")
    device = stranger.device("SN-TLS-0002", tmp_path / "dev")
    assert refused_throughout(Agent(device_config(tmp_path, broker, device)))


def test_refused_with_an_expired_certificate(broker, pki, tmp_path):
    device = pki.device("SN-TLS-0003", tmp_path / "dev", expired=True)
    assert refused_throughout(Agent(device_config(tmp_path, broker, device)))


def test_refuses_a_server_whose_certificate_names_another_host(broker, pki, tmp_path):
    """The server certificate names only localhost: dialling 127.0.0.1 fails the host name check."""
    device = pki.device("SN-TLS-0004", tmp_path / "dev")
    agent = Agent(device_config(tmp_path, broker, device, endpoint="127.0.0.1"))
    assert refused_throughout(agent)
    assert any("match" in str(detail) for kind, detail in agent.events if kind == "refused")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_refused_when_the_broker_allows_only_tls_1_1(pki, tmp_path):
    """mosquitto's tls_version is a minimum; OpenSSL's own config caps it at TLS 1.1 (SECLEVEL 0 re-allows
    1.1)."""
    needs_mosquitto()
    conf = tmp_path / "openssl-tls11.cnf"
    conf.write_text(
        "openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = tls11\n"
        "[tls11]\nMinProtocol = TLSv1.1\nMaxProtocol = TLSv1.1\nCipherString = DEFAULT:@SECLEVEL=0\n"
    )
    old = Broker(tmp_path / "broker", pki, tls_version="tlsv1.1", openssl_conf=conf)
    (tmp_path / "broker").mkdir()
    old.start()
    try:
        device = pki.device("SN-TLS-0005", tmp_path / "dev")
        # Control: a client that still accepts TLS 1.1 gets in, so the broker really serves 1.1 and only 1.1.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.load_verify_locations(cafile=str(pki.ca_file))
        context.load_cert_chain(str(device.cert_file), str(device.key_file))
        with (
            socket.create_connection(("127.0.0.1", old.port)) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            assert tls.version() == "TLSv1.1"
        agent = Agent(device_config(tmp_path, old, device))
        assert refused_throughout(agent)
        assert any("VERSION" in str(detail).upper() for kind, detail in agent.events if kind == "refused")
    finally:
        old.stop()


def test_publish_to_another_devices_topic_is_dropped_by_the_acl(broker, backend, pki, tmp_path):
    device = pki.device("SN-TLS-0006", tmp_path / "dev")
    victim_alerts = Inbox(backend, topics.alerts_topic("SN-VICTIM-1"))
    own_alerts = Inbox(backend, topics.alerts_topic(device.thing))
    body = {"header": {"fw": "1.0.0", "code": 1, "fields": {}}, "trace": ""}
    with running(Agent(device_config(tmp_path, broker, device))) as agent:
        assert wait_until(agent.connected.is_set)
        agent.publish(topics.alerts_topic("SN-VICTIM-1"), body)
        agent.publish(topics.alerts_topic(device.thing), body)
        assert own_alerts.wait_for(lambda t, p: True), "the agent's own alert should arrive"
        assert victim_alerts.wait_for(lambda t, p: True, timeout=0.5) is None
    assert wait_until(lambda: f"Denied PUBLISH from {device.thing}" in broker.log())


def test_the_agent_process_never_listens_on_a_port(broker, backend, pki, tmp_path):
    """The real entry point in its own process: connected (it published), and no listening socket at all."""
    device = pki.device("SN-TLS-0007", tmp_path / "dev")
    config = device_config(tmp_path, broker, device)
    path = tmp_path / "device.json"
    path.write_text(
        json.dumps(
            {
                "thing": device.thing,
                "endpoint": HOST,
                "port": broker.port,
                "stage": "local",
                "ca_file": str(pki.ca_file),
                "cert_file": str(device.cert_file),
                "key_file": str(device.key_file),
                "state_dir": str(config.state_dir),
                "telemetry_interval": 0.3,
                "metrics_interval": 0.3,
            }
        )
    )
    telemetry = Inbox(backend, topics.telemetry_topic(topics.rule_name("local", "telemetry"), device.thing))
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetwarden_device", "run", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert telemetry.wait_for(lambda t, p: True, timeout=20), "the agent process never published"
        assert metrics.own_listening_sockets(process.pid) == []
        remote_ports = {c.raddr.port for c in psutil.Process(process.pid).net_connections("tcp") if c.raddr}
        assert broker.port in remote_ports  # we looked at the right process: it holds the broker connection
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert os.stat(device.key_file).st_mode & 0o777 == 0o600
