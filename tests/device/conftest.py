"""A real mosquitto over mutual TLS (device/local/broker.py), one per test module, and agents run in a thread.

The broker tests skip with one clear line when mosquitto is not installed; `make test` installs it first
(apt-get install mosquitto), so CI runs them."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from fleetwarden_device.agent import Agent
from fleetwarden_device.config import from_dict

from device.local import acl
from device.local.broker import HOST, Broker, LocalPki, mosquitto_path
from device.local.jobs_service import JobsService, backend_client

CLAIM_TEMPLATE = "fleetwarden-local-field"
NO_MOSQUITTO = "mosquitto is not installed: apt-get install -y mosquitto (make test installs it)"


def needs_mosquitto():
    if mosquitto_path() is None:
        pytest.skip(NO_MOSQUITTO)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return LocalPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki, tmp_path_factory):
    needs_mosquitto()
    running = Broker(tmp_path_factory.mktemp("broker"), pki, claim_template=CLAIM_TEMPLATE).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def backend(broker, pki):
    """The local stand-in for IoT Core's services: a client with every topic (the ACL's backend user)."""
    files = pki.device(acl.BACKEND_USER)
    client = backend_client(HOST, broker.port, pki.ca_file, files.cert_file, files.key_file, "backend-test")
    yield client
    client.loop_stop()
    client.disconnect()


@pytest.fixture(scope="module")
def jobs(backend):
    return JobsService(backend)


class Inbox:
    """Messages the backend client receives on one topic filter."""

    def __init__(self, client, topic: str):
        self.messages: list[tuple[str, bytes]] = []
        self.arrived = threading.Condition()
        subscribed = threading.Event()
        acknowledged: set[int] = set()
        client.message_callback_add(topic, self._add)
        client.user_data_get().append(topic)
        previous = client.on_subscribe

        def on_subscribe(c, u, m, codes, p):
            acknowledged.add(m)
            subscribed.set()
            if previous:
                previous(c, u, m, codes, p)

        # The callback is in place before SUBSCRIBE leaves: a fast SUBACK cannot slip past it.
        client.on_subscribe = on_subscribe
        _, mid = client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 15
        while mid not in acknowledged and time.monotonic() < deadline:
            subscribed.wait(0.1)
            subscribed.clear()
        assert mid in acknowledged, f"the broker did not acknowledge the subscription to {topic}"

    def _add(self, client, userdata, message):
        with self.arrived:
            self.messages.append((message.topic, message.payload))
            self.arrived.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for topic, payload in self.messages:
                    if predicate(topic, payload):
                        return topic, payload
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.arrived.wait(remaining)


def device_config(tmp_path: Path, broker, files, **overrides):
    raw = {
        "thing": files.thing,
        "endpoint": HOST,
        "port": broker.port,
        "stage": broker.stage,
        "ca_file": str(broker.pki.ca_file),
        "cert_file": str(files.cert_file),
        "key_file": str(files.key_file),
        "state_dir": str(tmp_path / files.thing / "state"),
        "telemetry_interval": 0.3,
        "metrics_interval": 0.5,
        "backoff_base": 0.05,
        "backoff_cap": 0.3,
        **overrides,
    }
    return from_dict(raw, tmp_path)


@contextlib.contextmanager
def running(agent: Agent):
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stop()
        thread.join(10)
        assert not thread.is_alive(), "the agent did not stop"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
