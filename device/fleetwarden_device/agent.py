"""The agent: one MQTT connection over mutual TLS, as the thing, on the thing's own topics; never a listener.

Library: paho-mqtt 2.x. It is pure Python over the standard `ssl` module, so every TLS decision (pinned CA,
host name check, minimum version, ALPN) is one visible line in tls.py, it connects to any MQTT 3.1.1 broker
(the tests run it against a real mosquitto), and its loop can be driven by hand: the agent is single-threaded,
which a firmware team can read and port to its own MQTT stack. (The AWS IoT Device SDK v2 wraps the CRT's own
TLS stack, where a minimum version and a pinned CA are build-time concerns of the native library.)

Connection, per the AWS IoT message broker's documented behaviour:
* client id = thing name (the device policy allows Connect only to
  `client/${iot:Connection.Thing.ThingName}`);
* persistent session (cleanSession = 0): subscriptions and QoS 1 messages survive a short outage; AWS keeps
  the session 1 hour by default ("MQTT persistent sessions", https://docs.aws.amazon.com/iot/latest/
  developerguide/mqtt-persistent-sessions.html); the agent subscribes again when `session_present` is 0;
* reconnect with exponential backoff and full jitter (sleep uniform(0, min(cap, base * 2**attempt))): AWS IoT
  throttles Connect per client id and per account ("AWS IoT Core endpoints and quotas", message broker
  limits, https://docs.aws.amazon.com/general/latest/gr/iot-core.html#message-broker-limits), and a whole
  fleet reconnecting at once after an outage must spread out;
* QoS 1 everywhere (AWS IoT Core has no QoS 2).

What it publishes (every topic from `fleetwarden_contracts.topics`):
* telemetry `{"ts": <epoch ms>, "seq": n, "metrics": {...}}` on the Basic Ingest topic of the stage's
  telemetry rule, every `telemetry_interval`, plus any the application drops in the outbox;
* alerts in the alert format `{"header": {"fw", "code", "fields"}, "trace": "<base64>"}` on
  `dt/<thing>/alerts`, written to the outbox by the application (`fleetwarden-device alert`), deleted once the
  broker acknowledged;
* its metric report (metrics.py) on the built-in detector's Basic Ingest topic, every `metrics_interval`.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from fleetwarden_contracts import commands, topics

from . import metrics, tls
from .config import Config
from .handlers import Context, defaults
from .jobs import JobRunner
from .nonces import NonceStore
from .rotation import Rotation

log = logging.getLogger("fleetwarden_device")
QOS = 1


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    return rng() * min(cap, base * 2 ** min(attempt, 32))


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        handlers: Mapping[str, Callable] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.clock = clock
        self.telemetry_topic = topics.telemetry_topic(
            topics.rule_name(config.stage, "telemetry"), config.thing
        )
        self.alerts_topic = topics.alerts_topic(config.thing)
        self.metrics_topic = topics.metrics_report_topic(topics.metrics_rule_name(config.stage), config.thing)
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.events: list[tuple[str, Any]] = []  # ("connected"|"refused"|"disconnected"|"published", detail)
        self.actions: list = []
        self._client: mqtt.Client | None = None
        self._pending: dict[Path, mqtt.MQTTMessageInfo] = {}
        self._seq = 0
        self._next_telemetry = 0.0
        self._next_metrics = time.monotonic() + config.metrics_interval  # the first report after one interval
        pems = [path.read_bytes() for path in config.command_keys]
        context = Context(
            thing=config.thing,
            state_dir=config.state_dir,
            artifact_schemes=config.artifact_schemes,
            publish=self.publish,
            actions=self.actions,
        )
        self.rotation = Rotation(
            thing=config.thing,
            key_file=config.key_file,
            cert_file=config.cert_file,
            state_dir=config.state_dir,
            publish=self.publish,
        )
        self.rotation.resume()
        self.jobs = JobRunner(
            thing=config.thing,
            groups=config.groups,
            trusted_keys=commands.load_public_keys(pems),
            nonces=NonceStore(config.state_dir / "nonces.json", clock),
            handlers={**defaults(), "rotate-certificate": self._rotate, **(handlers or {})},
            context=context,
            publish=self.publish,
            clock=clock,
            journal=config.state_dir / "jobs",
        )

    # -- the connection ------------------------------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        """A fresh client (and TLS context) per attempt: a rotated certificate is picked up on reconnect."""
        c = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=c.thing,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        client.tls_set_context(
            tls.client_context(
                ca_file=c.ca_file,
                cert_file=c.cert_file,
                key_file=c.key_file,
                min_version=c.tls_min_version,
                port=c.port,
            )
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def run(self) -> None:
        """Connect, serve, reconnect with backoff, until stop()."""
        self.config.outbox.mkdir(parents=True, exist_ok=True)
        attempt = 0
        while not self.stopping.is_set():
            client = self._new_client()
            self._client = client
            accepted = False
            try:
                client.connect(self.config.endpoint, self.config.port, keepalive=self.config.keepalive)
                accepted = self._serve(client)
            except OSError as error:  # ssl.SSLError, refused, unreachable, reset: all OSErrors
                self._event("refused", f"{type(error).__name__}: {error}")
            if not accepted:
                self.rotation.on_refused()
            attempt = 0 if accepted else attempt + 1
            if not self.stopping.is_set():
                delay = backoff_delay(attempt, self.config.backoff_base, self.config.backoff_cap)
                log.info("reconnecting in %.2f s (attempt %d)", delay, attempt)
                self.stopping.wait(delay)
        self._client = None

    def stop(self) -> None:
        self.stopping.set()

    def _serve(self, client: mqtt.Client) -> bool:
        """Drive the connection until it ends; True if the broker accepted it (CONNACK success)."""
        accepted = False
        events = len(self.events)
        deadline = time.monotonic() + self.config.keepalive
        while True:
            rc = client.loop(timeout=0.05)
            if self.connected.is_set():
                accepted = True
                if self.stopping.is_set() or self.rotation.reconnect_requested:
                    self.rotation.reconnect_requested = False  # a new certificate: reconnect with it
                    client.disconnect()
                    client.loop(timeout=0.1)
                    break
                self._tick()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                break
            if not accepted and (self.stopping.is_set() or time.monotonic() > deadline):
                break
        self.connected.clear()
        if not accepted and not any(kind == "refused" for kind, _ in self.events[events:]):
            self._event("refused", f"connection closed before CONNACK: {mqtt.error_string(rc)}")
        return accepted

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._event("refused", f"CONNACK {reason_code}")
            return
        if not flags.session_present:  # no persistent session yet: subscribe (again)
            client.subscribe(
                [(topic, QOS) for topic in self.jobs.subscriptions() + self.rotation.subscriptions()]
            )
        self.connected.set()
        tls_socket = client.socket()
        self._event(
            "connected",
            {
                "session_present": flags.session_present,
                "tls": tls_socket.version() if hasattr(tls_socket, "version") else None,
            },
        )
        self.jobs.request_next()  # a job queued while offline is fetched now
        self.rotation.on_connected()  # with a new certificate: confirm it

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            self._event("disconnected", str(reason_code))
        self.connected.clear()

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.startswith(topics.cert_rotation_prefix(self.config.thing) + "/"):
            self.rotation.on_message(message.topic, message.payload)
        else:
            self.jobs.on_message(message.topic, message.payload)

    def _rotate(self, fields: dict, document: dict, context: Context) -> dict:
        """`rotate-certificate`: the job succeeds once the request is sent; the rotation goes on by itself."""
        return {"request_id": self.rotation.start()}

    def publish(self, topic: str, body: Mapping[str, Any]) -> mqtt.MQTTMessageInfo | None:
        client = self._client
        if client is None:
            return None
        info = client.publish(topic, json.dumps(body, separators=(",", ":")), qos=QOS)
        self._event("published", topic)
        return info

    def _event(self, kind: str, detail: Any) -> None:
        (log.warning if kind == "refused" else log.info)("%s %s", kind, detail)
        self.events.append((kind, detail))

    # -- periodic work -------------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_telemetry:
            self._next_telemetry = now + self.config.telemetry_interval
            self.publish_telemetry(sample())
        if now >= self._next_metrics:
            self._next_metrics = now + self.config.metrics_interval
            self.publish(self.metrics_topic, metrics.report())
        self._drain_outbox()

    def publish_telemetry(self, values: Mapping[str, Any]) -> None:
        self._seq += 1
        self.publish(
            self.telemetry_topic, {"ts": int(self.clock() * 1000), "seq": self._seq, "metrics": values}
        )

    def _drain_outbox(self) -> None:
        """Application messages: one JSON file each, deleted only once the broker acknowledged it (PUBACK)."""
        for path, info in list(self._pending.items()):
            if info.is_published():
                path.unlink(missing_ok=True)
                del self._pending[path]
        for path in sorted(self.config.outbox.glob("*.json"))[:50]:
            if path in self._pending:
                continue
            try:
                entry = json.loads(path.read_text())
                kind, body = entry["kind"], entry["body"]
                if kind not in ("alert", "telemetry") or not isinstance(body, dict):
                    raise ValueError(kind)
            except (ValueError, KeyError, TypeError, OSError):
                log.warning(
                    "outbox entry %s is not {kind: alert|telemetry, body: {...}}: moved aside", path.name
                )
                path.rename(path.with_suffix(".invalid"))
                continue
            if kind == "telemetry":
                self._seq += 1
                info = self.publish(
                    self.telemetry_topic, {"ts": int(self.clock() * 1000), "seq": self._seq, "metrics": body}
                )
            else:
                info = self.publish(self.alerts_topic, body)
            if info is not None:
                self._pending[path] = info


def sample() -> dict[str, Any]:
    """The agent's own telemetry: what any Linux device can report (a product adds its sensors)."""
    import psutil

    return {
        "uptime_s": int(time.time() - psutil.boot_time()),
        "cpu_pct": psutil.cpu_percent(interval=None),
        "mem_used_pct": psutil.virtual_memory().percent,
        "load_1m": round(psutil.getloadavg()[0], 3),
    }


def write_outbox(config: Config, kind: str, body: Mapping[str, Any]) -> Path:
    """What the device's application calls (or `fleetwarden-device alert`): queue a message for the agent."""
    config.outbox.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{random.getrandbits(32):08x}"
    partial = config.outbox / f"{name}.partial"
    partial.write_text(json.dumps({"kind": kind, "body": body}))
    final = config.outbox / f"{name}.json"
    partial.rename(final)
    return final
