"""The local bridge: hands broker messages to the project's real Lambda handlers the way the IoT rules would.

Demo and test scaffolding only (never in a stack). It plays the parts of AWS IoT Core, Firehose and Lambda's
event sources that mosquitto and moto lack, following the path the stacks wire:
* telemetry (Basic Ingest): the telemetry rule's envelope (stacks/telemetry/pipeline.TELEMETRY_SQL) for every
  message of one pump -> ONE Firehose data-transformation event -> the real transform handler, with the
  environment the stack sets (MAX_PAYLOAD_BYTES, TELEMETRY_SHARDS, OBSERVATION_STREAM, BATCH_TABLE) -> what
  Firehose writes: the Ok records' JSON lines, GZIP-compressed, one object per partition under the prefix the
  returned partition keys make (telemetry.layout.s3_prefix); ProcessingFailed records as Firehose's error
  documents under telemetry-errors/processing-failed/. The transform itself puts its per-connection
  aggregates on the observation stream (Kinesis on the moto server), once per batch (idempotency on
  BATCH_TABLE, DynamoDB on the moto server);
* the detector's other rules (stacks/defense/builtin_detector.py) put their own records on that stream,
  partition key as each rule's: presence (connected / disconnected, read from mosquitto's connection log;
  no connect_failed: a refused handshake has no client id there), device metric reports, and the alert
  count (kind alert, the base64 length);
* Lambda's Kinesis event source: every shard read back (GetShardIterator / GetRecords) into the event
  Lambda delivers with a tumbling window -> the real detector handler, each shard's state carried to its
  next invocation -> the violation topic (SNS -> the inbox queue) -> the real auto-response handler;
* alerts: the alert rule's S3 object (`alerts/<thing>/yyyy/MM/dd/<ms>-<uuid>.json`) -> the S3 notification on
  the queue -> the real processor (which calls the vendor);
* the certificate check and DeleteConnection: the broker refuses exactly the certificates that are not ACTIVE
  in the registry (moto), and DeleteConnection ends the session (both by restarting mosquitto with a CRL:
  it reads its CRL only at start).
`principal()` is the thing's ACTIVE certificate in the registry: the local ACL already binds the topic's thing
to the certificate's CN, which is what IoT Core's policy variables do.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
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
from tests.defense.test_detector import alert as alert_count_record
from tests.defense.test_detector import kinesis_record, presence_record

# mosquitto's connection_messages (log_type all): the lifecycle of every client, with its epoch second.
_CONNECTED = re.compile(r"^(\d+): New client connected from ([0-9.]+):\d+ as (\S+) \(")
_DISCONNECTED = re.compile(
    r"^(\d+): (?:Client (\S+) (disconnected|closed its connection)|"
    r"Socket error on client (\S+), disconnecting)"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Bridge:
    def __init__(
        self,
        *,
        backend,
        broker,
        stage: str,
        bucket: str,
        region: str,
        violations_inbox: str,
        telemetry_format: str = "json",
    ):
        if telemetry_format != "json":
            # Parquet rows are made by Firehose's record format conversion, which nothing local plays.
            raise ValueError(f"the demo writes telemetry as Firehose does for json, not {telemetry_format!r}")
        self.broker = broker
        self.bucket = bucket
        self.inbox = violations_inbox
        self.region = region
        self.iot = boto3.client("iot", region_name=region)
        self.s3 = boto3.client("s3", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.kinesis = boto3.client("kinesis", region_name=region)
        self.incoming: queue.Queue = queue.Queue()
        self.detector_state: dict[str, dict] = {}  # shard id -> the state its last invocation returned
        self.delivered = {
            "telemetry": 0,
            "telemetry_rejected": 0,
            "telemetry_objects": 0,
            "observations": 0,
            "aggregates": 0,
            "alerts": 0,
            "presence": 0,
            "violations": 0,
            "responses": 0,
        }
        self.vendor_calls: list[dict] = []
        self.certificates: dict[str, x509.Certificate] = {}  # certificate id -> certificate (for the CRL)
        self.log_offset = 0
        self.sessions: dict[str, str] = {}  # client id -> session id of its current connection
        self.version = 0
        self.telemetry_prefix = f"$aws/rules/{topics.rule_name(stage, 'telemetry')}/"
        self.metrics_prefix = f"$aws/rules/{topics.metrics_rule_name(stage)}/"
        # The delivery stream as the stack names it (stacks/telemetry/pipeline.py).
        self.delivery_stream = f"fleetwarden-{stage}-telemetry"
        self.delivery_stream_arn = (
            f"arn:aws:firehose:{region}:123456789012:deliverystream/{self.delivery_stream}"
        )
        # The observation stream (the stack's ingest_stack.observation_stream), created by the demo's setup.
        self.stream = os.environ["OBSERVATION_STREAM"]
        description = self.kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]
        self.stream_arn = description["StreamARN"]
        self.iterators: dict[str, str] = {}  # shard id -> its next shard iterator
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
        """Deliver every message received so far, in order: the telemetry of this pump as one Firehose
        batch, the other rules' records onto the observation stream; then the detector reads the stream."""
        self._presence()
        envelopes = []
        while True:
            try:
                topic, payload = self.incoming.get_nowait()
            except queue.Empty:
                break
            thing = topic.split("/")[-2]
            now_ms = int(time.time() * 1000)
            if topic.startswith(self.telemetry_prefix):
                # The telemetry rule's SELECT (TELEMETRY_SQL): the device's thing is its client id.
                envelopes.append(
                    {
                        "payload": _b64(payload),
                        "thing": thing,
                        "client_id": thing,
                        "principal": self.principal(thing),
                        "received_at": now_ms,
                    }
                )
            elif topic.startswith(self.metrics_prefix):
                try:
                    report = json.loads(payload)
                except ValueError:
                    continue  # the rule's SQL cannot parse it either: no record
                if not isinstance(report, dict):
                    continue
                # METRICS_SQL: the report's blocks it names, absent ones left out; key ${clientid()}.
                report = {k: v for k, v in report.items() if k in _REPORT_KEYS}
                self._put(
                    kinesis_record(
                        {"kind": "metrics", "thing": thing, "client_id": thing, "report": report}, thing
                    )
                )
            else:
                self._alert(thing, payload, now_ms)
                self._put(alert_count_record(thing, len(payload)))  # ALERT_SQL: kind, client id, b64 length
        if envelopes:
            self._telemetry(envelopes)
        self._detect()

    def _put(self, record: dict) -> None:
        """What a rule's Kinesis action does with its SELECT's output: PutRecord, its partition key.
        `record` is that output as the detector tests build it (a Lambda Kinesis record)."""
        self.kinesis.put_record(
            StreamName=self.stream,
            Data=base64.b64decode(record["kinesis"]["data"]),
            PartitionKey=record["kinesis"]["partitionKey"],
        )

    def _detect(self) -> None:
        """Lambda's Kinesis event source with a tumbling window: each shard's new records (GetRecords from
        where the last read stopped) as one event, with the state the shard's previous invocation returned
        ("Using AWS Lambda with Amazon Kinesis" and its tumbling-window example KinesisTimeWindowEvent,
        https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-windows.html); then every violation
        on the topic -> the auto-response."""
        from defense.auto_response import handler as auto_response
        from defense.detector import handler as detector

        if not self.iterators:
            for shard in self.kinesis.list_shards(StreamName=self.stream)["Shards"]:
                self.iterators[shard["ShardId"]] = self.kinesis.get_shard_iterator(
                    StreamName=self.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
        seconds = int(os.environ.get("WINDOW_SECONDS", "300"))
        start = int(time.time()) // seconds * seconds
        window = {"start": _iso(start), "end": _iso(start + seconds)}
        for shard_id, iterator in self.iterators.items():
            answer = self.kinesis.get_records(ShardIterator=iterator)
            self.iterators[shard_id] = answer["NextShardIterator"]
            if not answer["Records"]:
                continue
            event = {
                "Records": [self._lambda_record(shard_id, r) for r in answer["Records"]],
                "window": window,
                "state": self.detector_state.get(shard_id, {}),
                "shardId": shard_id,
                "eventSourceARN": self.stream_arn,
                "isFinalInvokeForWindow": False,
                "isWindowTerminatedEarly": False,
            }
            self.delivered["observations"] += len(answer["Records"])
            self.delivered["aggregates"] += sum(map(_aggregates, answer["Records"]))
            self.detector_state[shard_id] = detector.lambda_handler(event, LambdaContext())["state"]
        for message in self.sqs.receive_message(QueueUrl=self.inbox, MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            self.sqs.delete_message(QueueUrl=self.inbox, ReceiptHandle=message["ReceiptHandle"])
            self.delivered["violations"] += 1
            auto_response.lambda_handler(sns_event(json.loads(message["Body"])["Message"]), LambdaContext())
            self.delivered["responses"] += 1

    def _lambda_record(self, shard_id: str, record: dict) -> dict:
        """A GetRecords record as Lambda delivers it (data base64, arrival in epoch seconds)."""
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record["PartitionKey"],
                "sequenceNumber": record["SequenceNumber"],
                "data": _b64(record["Data"]),
                "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{record['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/fleetwarden-demo-detector",
            "awsRegion": self.region,
            "eventSourceARN": self.stream_arn,
        }

    def _presence(self) -> None:
        """Lifecycle events (`$aws/events/presence/connected|disconnected/<client id>`, "Lifecycle events",
        https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html) made from mosquitto's
        connection log, put on the observation stream as the presence rule does. Refused TLS handshakes have
        no client id in that log, so there is no connect_failed here."""
        log = self.broker.log()
        if len(log) < self.log_offset:
            self.log_offset = 0
        lines, self.log_offset = log[self.log_offset :].splitlines(), len(log)
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
            self._put(presence_record(event))  # PRESENCE_SQL, keyed ${clientId}
            self.delivered["presence"] += 1

    def _telemetry(self, envelopes: list[dict]) -> None:
        """One Firehose batch: the data-transformation event ("Transform source data in Amazon Data
        Firehose", data-transformation.html) -> the real transform (which sends the batch's aggregates to
        the observation stream itself) -> the objects Firehose writes with GZIP and no conversion: the Ok
        records' lines per partition under `<prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid><file
        extension>` ("Configure Amazon S3 object name format", s3-object-name.html; `.gz` for GZIP is
        unverified, nothing reads the extension), and each ProcessingFailed record
        as Firehose's error document under the error prefix ("Handle failure in data transformation",
        data-transformation-failure-handling.html; that error output is GZIP-compressed too: unverified)."""
        from telemetry.layout import ERROR_PREFIX, s3_prefix
        from telemetry.transform import handler as transform

        now = time.time()
        inputs = {}  # recordId -> the input record (approximateArrivalTimestamp: epoch ms)
        for envelope in envelopes:
            record_id = uuid.uuid4().hex
            inputs[record_id] = {
                "recordId": record_id,
                "approximateArrivalTimestamp": envelope["received_at"],
                "data": _b64(json.dumps(envelope).encode()),
            }
        event = {
            "invocationId": str(uuid.uuid4()),
            "deliveryStreamArn": self.delivery_stream_arn,
            "region": self.region,
            "records": list(inputs.values()),
        }
        answer = transform.lambda_handler(event, LambdaContext())
        partitions: dict[str, list[bytes]] = {}
        for output in answer["records"]:
            if output["result"] == "Ok":
                prefix = s3_prefix(output["metadata"]["partitionKeys"])
                partitions.setdefault(prefix, []).append(base64.b64decode(output["data"]))
                self.delivered["telemetry"] += 1
            else:
                day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
                prefix = f"{ERROR_PREFIX}processing-failed/day={day}/"
                arrived = inputs[output["recordId"]]["approximateArrivalTimestamp"]
                document = {
                    "attemptsMade": 1,
                    "arrivalTimestamp": arrived,
                    "errorCode": "Lambda.ProcessingFailed",
                    "errorMessage": "The Lambda function was successfully invoked but it returned an error "
                    "result.",
                    "attemptEndingTimestamp": int(now * 1000),
                    "rawData": inputs[output["recordId"]]["data"],
                    "lambdaArn": f"arn:aws:lambda:{self.region}:123456789012:function:transform",
                }
                partitions.setdefault(prefix, []).append(json.dumps(document).encode() + b"\n")
                self.delivered["telemetry_rejected"] += 1
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d-%H-%M-%S")
        for prefix, lines in partitions.items():
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{prefix}{self.delivery_stream}-1-{stamp}-{uuid.uuid4()}.gz",
                Body=gzip.compress(b"".join(lines)),
            )
            self.delivered["telemetry_objects"] += 1

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


def _aggregates(record: dict) -> int:
    """How many of the transform's per-connection aggregates a stream record carries (for the demo's
    lines; the detector reads the records itself)."""
    try:
        doc = json.loads(record["Data"])
    except ValueError:
        return 0
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return 1 if kind == "telemetry-batch" else len(doc["aggregates"]) if kind == "telemetry-batches" else 0


# The report blocks METRICS_SQL selects (stacks/defense/builtin_detector.py).
_REPORT_KEYS = ("header", "metrics", "custom_metrics", "hed", "met", "cmet")


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
