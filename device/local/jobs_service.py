"""The IoT Jobs device MQTT API, served over the local broker: what AWS IoT Jobs does for a device.

It answers the requests a device publishes and pushes notifications, with the documented topics and payloads
("Jobs device MQTT API operations", https://docs.aws.amazon.com/iot/latest/developerguide/jobs-mqtt-api.html;
"Jobs notifications", jobs-comm-notifications.html):
* `$aws/things/<thing>/jobs/$next/get` -> `.../$next/get/accepted` `{"clientToken", "timestamp",
  "execution"?}`;
* `$aws/things/<thing>/jobs/<jobId>/update` -> `.../<jobId>/update/accepted` (or `/rejected` for an unknown
  job or a job already in a terminal status), and a new `notify-next` when the first pending execution
  changed;
* `queue()` (what CreateJob does for one thing) -> `notify-next` if it became the first pending execution.
Executions are kept in queue order; IN_PROGRESS ones come first, as in a ListNotification. One difference from
AWS is deliberate: replies go through the broker to the device's subscription (AWS delivers them to the
requester without one), which the agent has anyway.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

TERMINAL = ("SUCCEEDED", "FAILED", "REJECTED", "CANCELED", "TIMED_OUT", "REMOVED")


def backend_client(
    host: str, port: int, ca_file: Path, cert_file: Path, key_file: Path, client_id: str
) -> mqtt.Client:
    """A connected, looping client with the backend stand-in's certificate (CN fleetwarden-backend)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.tls_set_context(context)
    client.reconnect_delay_set(0.05, 0.5)
    client.user_data_set([])  # the topic filters subscribed so far: renewed on every (re)connection
    connected = threading.Event()

    def on_connect(c, filters, flags, reason_code, properties):
        if not reason_code.is_failure:
            for topic in filters:
                c.subscribe(topic, qos=1)
            connected.set()

    client.on_connect = on_connect
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise RuntimeError("the backend stand-in could not connect to the local broker")
    return client


def subscribe(client: mqtt.Client, topic: str) -> None:
    """Subscribe now and again after every reconnection (the demo restarts the broker, sessions and all)."""
    client.user_data_get().append(topic)
    client.subscribe(topic, qos=1)


class JobsService:
    def __init__(self, client: mqtt.Client):
        self.client = client
        self.lock = threading.Lock()
        self.executions: dict[str, dict[str, dict[str, Any]]] = {}  # thing -> jobId -> execution
        self.updates: list[
            tuple[str, str, dict]
        ] = []  # (thing, jobId, update request) as the device sent them
        self.changed = threading.Condition(self.lock)
        client.message_callback_add("$aws/things/+/jobs/#", self._on_message)
        subscribe(client, "$aws/things/+/jobs/#")

    def queue(self, thing: str, job_id: str, document: dict) -> None:
        now = int(time.time())
        with self.lock:
            jobs = self.executions.setdefault(thing, {})
            before = self._next(thing)
            jobs[job_id] = {
                "jobId": job_id,
                "thingName": thing,
                "status": "QUEUED",
                "queuedAt": now,
                "lastUpdatedAt": now,
                "versionNumber": 1,
                "executionNumber": 1,
                "jobDocument": document,
            }
            after = self._next(thing)
        if after is not before:
            self._notify_next(thing)

    def status(self, thing: str, job_id: str) -> tuple[str, dict]:
        with self.lock:
            execution = self.executions[thing][job_id]
            return execution["status"], dict(execution.get("statusDetails", {}))

    def wait_terminal(self, thing: str, job_id: str, timeout: float = 10.0) -> tuple[str, dict]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.executions[thing][job_id]["status"] not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} still {self.executions[thing][job_id]['status']}")
                self.changed.wait(remaining)
            execution = self.executions[thing][job_id]
            return execution["status"], dict(execution.get("statusDetails", {}))

    def _next(self, thing: str) -> dict | None:
        pending = [e for e in self.executions.get(thing, {}).values() if e["status"] not in TERMINAL]
        pending.sort(key=lambda e: (e["status"] != "IN_PROGRESS", e["queuedAt"]))
        return pending[0] if pending else None

    def _publish(self, topic: str, body: dict) -> None:
        self.client.publish(topic, json.dumps(body), qos=1)

    def _notify_next(self, thing: str) -> None:
        with self.lock:
            execution = self._next(thing)
        body = {"timestamp": int(time.time())}
        if execution:
            body["execution"] = execution
        self._publish(f"$aws/things/{thing}/jobs/notify-next", body)

    def _on_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")  # $aws things <thing> jobs <...>
        if len(parts) < 5 or parts[-1] in ("accepted", "rejected") or parts[4] == "notify-next":
            return  # our own answers and notifications
        thing, rest = parts[2], parts[4:]
        try:
            request = json.loads(message.payload)
        except ValueError:
            request = {}
        prefix = f"$aws/things/{thing}/jobs"
        token = {"clientToken": request["clientToken"]} if "clientToken" in request else {}
        if rest == ["$next", "get"]:
            with self.lock:
                execution = self._next(thing)
            body = {**token, "timestamp": int(time.time())}
            if execution:
                body["execution"] = execution
            self._publish(f"{prefix}/$next/get/accepted", body)
        elif len(rest) == 2 and rest[1] == "update":
            job_id = rest[0]
            with self.changed:
                execution = self.executions.get(thing, {}).get(job_id)
                if execution is None or execution["status"] in TERMINAL:
                    refusal = "ResourceNotFound" if execution is None else "InvalidStateTransition"
                    self._publish(f"{prefix}/{job_id}/update/rejected", {**token, "code": refusal})
                    return
                before = self._next(thing)
                execution.update(
                    status=request.get("status"),
                    statusDetails=request.get("statusDetails", {}),
                    lastUpdatedAt=int(time.time()),
                    versionNumber=execution["versionNumber"] + 1,
                )
                self.updates.append((thing, job_id, request))
                after = self._next(thing)
                self.changed.notify_all()
            self._publish(f"{prefix}/{job_id}/update/accepted", {**token, "timestamp": int(time.time())})
            if after is not before:
                self._notify_next(thing)
