"""The local bridge: hands broker messages to the project's real Lambda handlers the way the IoT rules would.

Demo and test scaffolding only (never in a stack). It plays the parts of AWS IoT Core that mosquitto lacks:
* the rules: Basic Ingest telemetry -> the rule's envelope -> a Firehose transformation event -> the real
  transform handler -> the S3 object Firehose would write under the returned partition keys; alerts -> the
  alert rule's S3 object (`alerts/<thing>/yyyy/MM/dd/<ms>-<uuid>.json`) -> the S3 notification on the queue ->
  the real processor (which calls the vendor); every device message, metric report and lifecycle event
  (connected / disconnected, read from mosquitto's connection log) -> the detector's
  stream record -> the real detector handler (tumbling window, state carried like Lambda does) -> the
  violation topic -> the real auto-response handler;
* the certificate check and DeleteConnection: the broker refuses exactly the certificates that are not ACTIVE
  in the registry (moto), and DeleteConnection ends the session (both by restarting mosquitto with a CRL:
  it reads its CRL only at start).
`principal()` is the thing's ACTIVE certificate in the registry: the local ACL already binds the topic's thing
to the certificate's CN, which is what IoT Core's policy variables do.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import time
import uuid
from datetime import datetime, timezone

import boto3
from cryptography import x509
from fleetwarden_contracts import topics
from fleetwarden_device.provisioning import CLAIM_CLIENT_PREFIX

from device.local.jobs_service import subscribe
from device.local.provisioning_service import CLAIM_CERTIFICATE_ID
from tests.alerts.test_processor import LambdaContext, s3_notification, s3_record, sqs_event
from tests.defense.test_auto_response import sns_event
from tests.defense.test_detector import kinesis_record, presence_record
from tests.defense.test_detector_handler import tumbling_event
from tests.telemetry.test_transform import firehose_event, record

# mosquitto's connection_messages (log_type all): the lifecycle of every client, with its epoch second.
_CONNECTED = re.compile(r"^(\d+): New client connected from ([0-9.]+):\d+ as (\S+) \(")
_DISCONNECTED = re.compile(
    r"^(\d+): (?:Client (\S+) (disconnected|closed its connection)|"
    r"Socket error on client (\S+), disconnecting)"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Bridge:
    def __init__(self, *, backend, broker, stage: str, bucket: str, region: str, violations_inbox: str):
        self.broker = broker
        self.bucket = bucket
        self.inbox = violations_inbox
        self.iot = boto3.client("iot", region_name=region)
        self.s3 = boto3.client("s3", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.incoming: queue.Queue = queue.Queue()
        self.detector_state: dict = {}
        self.delivered = {"telemetry": 0, "alerts": 0, "presence": 0, "violations": 0, "responses": 0}
        self.vendor_calls: list[dict] = []
        self.certificates: dict[str, x509.Certificate] = {}  # certificate id -> certificate (for the CRL)
        self.log_offset = 0
        self.sessions: dict[str, str] = {}  # client id -> session id of its current connection
        self.version = 0
        self.telemetry_prefix = f"$aws/rules/{topics.rule_name(stage, 'telemetry')}/"
        self.metrics_prefix = f"$aws/rules/{topics.metrics_rule_name(stage)}/"
        for topic in (
            topics.telemetry_topic(topics.rule_name(stage, "telemetry"), "+"),
            topics.alerts_topic("+"),
            topics.metrics_report_topic(topics.metrics_rule_name(stage), "+"),
        ):
            backend.message_callback_add(topic, lambda c, u, m: self.incoming.put((m.topic, m.payload)))
            subscribe(backend, topic)

    # -- what IoT Core's certificate check and DeleteConnection do ------------------------------------------
    def know(self, certificate_id: str, certificate: x509.Certificate) -> None:
        self.certificates[certificate_id] = certificate

    def apply_certificate_statuses(self) -> list[str]:
        """Restart the broker refusing every known certificate that is not ACTIVE; the ids refused."""
        refused = [
            cid
            for cid in self.certificates
            if self.iot.describe_certificate(certificateId=cid)["certificateDescription"]["status"]
            != "ACTIVE"
        ]
        self.broker.restart_refusing([self.certificates[cid] for cid in refused])
        return refused

    def principal(self, thing: str) -> str | None:
        if thing.startswith(CLAIM_CLIENT_PREFIX):
            return CLAIM_CERTIFICATE_ID  # the shared claim certificate
        try:
            principals = self.iot.list_thing_principals(thingName=thing)["principals"]
        except self.iot.exceptions.ResourceNotFoundException:
            return None
        for arn in principals:
            cid = arn.rsplit("/", 1)[1]
            if (
                self.iot.describe_certificate(certificateId=cid)["certificateDescription"]["status"]
                == "ACTIVE"
            ):
                return cid
        return None

    # -- the rules -------------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Deliver every message received so far, in order; then one detector invocation for them."""
        from defense.auto_response import handler as auto_response
        from defense.detector import handler as detector

        stream = self._presence()
        while True:
            try:
                topic, payload = self.incoming.get_nowait()
            except queue.Empty:
                break
            thing = topic.split("/")[-2]
            now_ms = int(time.time() * 1000)
            if topic.startswith(self.telemetry_prefix):
                envelope = {
                    "payload": _b64(payload),
                    "thing": thing,
                    "client_id": thing,
                    "principal": self.principal(thing),
                    "received_at": now_ms,
                }
                self._telemetry(envelope)
                stream.append(kinesis_record(envelope, thing))
            elif topic.startswith(self.metrics_prefix):
                try:
                    report = json.loads(payload)
                except ValueError:
                    continue  # the rule's SQL cannot parse it either: no record
                stream.append(
                    kinesis_record(
                        {"kind": "metrics", "thing": thing, "client_id": thing, "report": report}, thing
                    )
                )
            else:
                self._alert(thing, payload, now_ms)
                stream.append(kinesis_record({"kind": "message", "client_id": thing}, thing))
        if not stream:
            return
        start = int(time.time()) // 300 * 300
        window = {"start": _iso(start), "end": _iso(start + 300)}
        result = detector.lambda_handler(
            tumbling_event(stream, self.detector_state, window=window), LambdaContext()
        )
        self.detector_state = result["state"]
        for message in self.sqs.receive_message(QueueUrl=self.inbox, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            self.sqs.delete_message(QueueUrl=self.inbox, ReceiptHandle=message["ReceiptHandle"])
            self.delivered["violations"] += 1
            auto_response.lambda_handler(sns_event(json.loads(message["Body"])["Message"]), LambdaContext())
            self.delivered["responses"] += 1

    def _presence(self) -> list[dict]:
        """Lifecycle events (`$aws/events/presence/connected|disconnected/<client id>`, "Lifecycle events",
        https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html) made from mosquitto's
        connection log, as the presence rules put them on the detector's stream. Refused TLS handshakes have
        no client id in that log, so there is no connect_failed here."""
        log = self.broker.log()
        if len(log) < self.log_offset:
            self.log_offset = 0
        lines, self.log_offset = log[self.log_offset :].splitlines(), len(log)
        records = []
        for line in lines:
            if match := _CONNECTED.match(line):
                seconds, ip, client = match.groups()
                event_type, extra = "connected", {"ipAddress": ip}
                self.sessions[client] = str(uuid.uuid4())
            elif match := _DISCONNECTED.match(line):
                seconds, client = match.group(1), match.group(2) or match.group(4)
                initiated = match.group(3) == "disconnected"
                event_type = "disconnected"
                extra = {
                    "clientInitiatedDisconnect": initiated,
                    "disconnectReason": "CLIENT_INITIATED_DISCONNECT" if initiated else "CONNECTION_LOST",
                }
            else:
                continue
            if client.startswith("fleetwarden-") or client not in self.sessions:
                continue  # the backend stand-in is not a device
            self.version += 1
            event = {
                "clientId": client,
                "timestamp": int(seconds) * 1000,
                "eventType": event_type,
                "sessionIdentifier": self.sessions[client],
                "versionNumber": self.version,
                "principalIdentifier": self.principal(client) or "0" * 64,
                **extra,
            }
            records.append(presence_record(event))
            self.delivered["presence"] += 1
        return records

    def _telemetry(self, envelope: dict) -> None:
        from telemetry.layout import s3_prefix
        from telemetry.transform import handler as transform

        answer = transform.lambda_handler(
            firehose_event([record(envelope, record_id=uuid.uuid4().hex)]), LambdaContext()
        )
        for output in answer["records"]:
            prefix = s3_prefix(output["metadata"]["partitionKeys"])
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{prefix}demo-{uuid.uuid4().hex}.json",
                Body=base64.b64decode(output["data"]),
            )
            self.delivered["telemetry"] += 1

    def _alert(self, thing: str, payload: bytes, now_ms: int) -> None:
        from alerts.processor import handler as processor

        day = datetime.fromtimestamp(now_ms / 1000, timezone.utc).strftime("%Y/%m/%d")
        key = f"alerts/{thing}/{day}/{now_ms}-{uuid.uuid4()}.json"
        version = self.s3.put_object(Bucket=self.bucket, Key=key, Body=payload).get("VersionId")
        notification = s3_notification(s3_record(key, version, len(payload), bucket=self.bucket))
        answer = processor.lambda_handler(sqs_event([notification]), LambdaContext())
        if answer["batchItemFailures"]:
            raise RuntimeError(f"the alert processor failed: {answer}")
        self.delivered["alerts"] += 1


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
