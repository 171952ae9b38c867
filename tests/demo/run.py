"""`make demo`: one device lives through its whole life, on this machine, with no AWS account.

moto server (ThreadedMotoServer) answers the AWS APIs, a real mosquitto speaks MQTT over mutual TLS with the
ACL written from the device policy, the real agent runs in its own process (`fleetwarden-device`), and the
bridge (bridge.py) hands what it publishes to the project's real Lambda handlers. Each step prints a line with
its outcome and time; a summary table ends the run; the exit status is non-zero if any step did not hold.
Handler logs and metrics go to <workdir>/demo.log, the agent's to <workdir>/agent.log.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGE = "demo"
REGION = "eu-west-1"
THING = "SN-DEMO-0001"
BUCKET = "fleetwarden-demo-data"
FLOOD = 150  # messages in one window; the detector's limit is MAX_MESSAGES below
MAX_MESSAGES = 100
CLAIM_TEMPLATE = f"fleetwarden-{STAGE}-field"


def acl_claim_user() -> str:
    from device.local import acl

    return acl.CLAIM_USER


RESULT = {True: "ok", False: "FAIL", None: "TODO"}


class StepFailed(Exception):
    pass


class StepIncomplete(Exception):
    """What the step could show held, but its end waits on work outside this branch (said in the message)."""


def check(condition: bool, failure: str) -> None:
    if not condition:
        raise StepFailed(failure)


class VendorStub:
    """The alert classifier vendor over HTTPS (certificate from the demo CA): records what it received."""

    def __init__(self, pki):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pki.server_cert_file), str(pki.server_key_file))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://localhost:{self.server.server_address[1]}/v1/classify"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Demo:
    def __init__(self, workdir: Path, out):
        self.workdir = workdir
        self.out = out
        self.steps: list[tuple[str, bool, str, float]] = []
        self.closers: list[Callable[[], None]] = []
        self.agent: subprocess.Popen | None = None

    # -- running steps ---------------------------------------------------------------------------------------
    def step(self, name: str, action: Callable[[], str]) -> bool:
        number = len(self.steps) + 1
        self.out.write(f"[{number:2d}] {name} ...\n")
        started = time.monotonic()
        try:
            outcome, ok = action(), True
        except StepIncomplete as incomplete:
            outcome, ok = str(incomplete), None
        except Exception as error:  # every failure is reported as the step's outcome, then the run goes on
            outcome, ok = f"{type(error).__name__}: {error}", False
        seconds = time.monotonic() - started
        self.steps.append((name, ok, outcome, seconds))
        self.out.write(f"     {RESULT[ok]:<4} {outcome} ({seconds:.2f} s)\n")
        return ok is not False

    def wait(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.bridge.pump()
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}")

    def agent_log(self) -> str:
        path = self.workdir / "agent.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:  # noqa: S110 (best effort at exit)
                pass

    # -- the lifecycle ---------------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, Callable[[], str], bool]]:
        """(name, action, the rest needs it)."""
        return [
            (
                "AWS APIs on moto server: data bucket, tables, secrets, topics, KMS signing key",
                self.aws,
                True,
            ),
            ("mosquitto over mutual TLS, ACL generated from the device policy", self.mqtt, True),
            (
                "factory: the device makes its key and CSR, the factory CA signs it (JITP registers it)",
                self.factory,
                True,
            ),
            ("the agent connects over mutual TLS as its thing name", self.connect, True),
            (
                "field device: one-time token (admin), fleet provisioning, the hook allows it once",
                self.field,
                False,
            ),
            ("telemetry (Basic Ingest) -> transform -> S3", self.telemetry, False),
            (
                "alert -> S3 -> processor -> vendor (HTTPS) gets only the header and an opaque reference",
                self.alert,
                False,
            ),
            (f"a flood of {FLOOD} messages -> built-in detector -> violation", self.flood, False),
            (
                "containment: quarantine group, certificate INACTIVE, session ended, reconnect refused",
                self.containment,
                False,
            ),
            ("reinstatement (audited operator action) -> the device reconnects", self.reinstate, False),
            (
                "a KMS-signed command (IoT Jobs) -> verified on the device, run, SUCCEEDED",
                self.command,
                False,
            ),
            ("a tampered command -> REJECTED bad-signature, nothing run", self.tampered, False),
            (
                "certificate rotation: new key on the device, CSR, new certificate, reconnect, confirm",
                self.rotate,
                False,
            ),
        ]

    def run(self) -> int:
        """Every step (stopping early only when a step the rest needs failed); the number of steps planned."""
        planned = self.plan()
        for name, action, needed in planned:
            if not self.step(name, action) and needed:
                break
        return len(planned)

    def aws(self) -> str:
        import boto3
        from moto.server import ThreadedMotoServer

        from device.local.broker import free_port
        from tests.alerts.test_processor import (
            API_KEY,
            API_KEY_SECRET,
            DEVICE_REF_KEY,
            DEVICE_REF_SECRET,
            IDEMPOTENCY_TABLE,
            create_alert_tables,
        )
        from tests.defense.test_auto_response import INCIDENTS_TABLE, QUARANTINE_GROUP, create_incidents_table
        from tests.helpers import ALERTS_TABLE, AUDIT_TABLE, create_tables, topic_with_inbox

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        self.closers.append(server.stop)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_SESSION_TOKEN": "demo",
            }
        )
        boto3.setup_default_session(region_name=REGION)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        dynamodb = boto3.resource("dynamodb")
        create_alert_tables(dynamodb)
        create_incidents_table(dynamodb)
        create_tables(dynamodb)
        # The telemetry path as the ingest stack builds it: the dev stage's settings (cdk.json), the
        # observation stream (on-demand, as stacks/telemetry/observations.py) and the transform's
        # sent-batches table (Powertools idempotency's key "id", as TelemetryPipeline.feed_detector).
        from stacks.config import load_config

        root = Path(__file__).resolve().parents[2]
        self.stage = load_config(json.loads((root / "cdk.json").read_text())["context"]).stage
        observations = f"fleetwarden-{STAGE}-observations"
        batches = f"fleetwarden-{STAGE}-telemetry-sent-batches"
        boto3.client("kinesis").create_stream(
            StreamName=observations, StreamModeDetails={"StreamMode": "ON_DEMAND"}
        )
        dynamodb.create_table(
            TableName=batches,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(Name=API_KEY_SECRET, SecretString=API_KEY)
        secrets.create_secret(Name=DEVICE_REF_SECRET, SecretString=DEVICE_REF_KEY)
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        violations, self.violations_inbox = topic_with_inbox(sns, sqs, f"fleetwarden-{STAGE}-violations")
        ops = sns.create_topic(Name=f"fleetwarden-{STAGE}-ops")["TopicArn"]
        self.iot = boto3.client("iot")
        self.iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
        self.kms = boto3.client("kms")
        key = self.kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        self.signing_key = key["KeyId"]
        self.signing_key_arn = key["Arn"]
        account = self.signing_key_arn.split(":")[4]
        os.environ.update(
            {
                # the handlers' environments, as the stacks set them
                "ALERTS_TABLE": ALERTS_TABLE,
                "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
                "ALERTS_BUCKET": BUCKET,
                "CLASSIFIER_API_KEY_SECRET": API_KEY_SECRET,
                "DEVICE_REF_KEY_SECRET": DEVICE_REF_SECRET,
                "VIOLATION_TOPIC_ARN": violations,
                "PROFILE_NAME": f"fleetwarden-{STAGE}-builtin",
                "WINDOW_SECONDS": "300",
                "MAX_MESSAGES": str(MAX_MESSAGES),
                "MAX_BYTES": "10000000",
                "MAX_CONNECTS": "50",
                "MAX_DISCONNECTS": "50",
                "MAX_ESTABLISHED_TCP": "1000",
                "MAX_TELEMETRY_BYTES": str(self.stage.max_telemetry_bytes),
                # the telemetry transform's (stacks/telemetry/pipeline.py)
                "MAX_PAYLOAD_BYTES": str(self.stage.max_telemetry_bytes),
                "TELEMETRY_SHARDS": str(self.stage.telemetry_shards),
                "OBSERVATION_STREAM": observations,
                "BATCH_TABLE": batches,
                "INCIDENTS_TABLE": INCIDENTS_TABLE,
                "QUARANTINE_GROUP": QUARANTINE_GROUP,
                "REVOCATION": "deactivate",
                "DRY_RUN": "false",
                "IOT_DATA_ENDPOINT": f"demo-ats.iot.{REGION}.amazonaws.com",
                "SIGNING_KEY_ARN": self.signing_key_arn,  # the auto-response signs the shutdown job
                "THING_ARN_PREFIX": f"arn:aws:iot:{REGION}:{account}:thing/",
                "OPS_TOPIC_ARN": ops,
                "AUDIT_TABLE": AUDIT_TABLE,
                "POWERTOOLS_METRICS_NAMESPACE": "Fleetwarden",
            }
        )
        os.environ.pop("EXEMPT_GROUP", None)
        return (
            f"moto server on 127.0.0.1:{port}; bucket {BUCKET}; "
            f"KMS key {self.signing_key[:8]}... (ECC_NIST_P256)"
        )

    def mqtt(self) -> str:
        import boto3
        from botocore.awsrequest import AWSResponse

        from device.local import acl
        from device.local.broker import HOST, Broker, LocalPki
        from device.local.jobs_service import JobsService, backend_client
        from tests.demo.bridge import Bridge

        self.pki = LocalPki(self.workdir / "pki", name="Fleetwarden demo factory CA")
        self.broker = Broker(self.workdir / "broker", self.pki, stage=STAGE, claim_template=CLAIM_TEMPLATE)
        (self.workdir / "broker").mkdir()
        self.broker.start()
        self.closers.append(self.broker.stop)
        files = self.pki.device(acl.BACKEND_USER, self.workdir / "backend")
        self.backend = backend_client(
            HOST,
            self.broker.port,
            self.pki.ca_file,
            files.cert_file,
            files.key_file,
            "fleetwarden-demo-backend",
        )
        self.closers.append(self.backend.loop_stop)
        self.jobs = JobsService(self.backend)
        self.bridge = Bridge(
            backend=self.backend,
            broker=self.broker,
            stage=STAGE,
            bucket=BUCKET,
            region=REGION,
            violations_inbox=self.violations_inbox,
            telemetry_format=self.stage.telemetry_format,
        )
        self.vendor = VendorStub(self.pki)
        self.closers.append(self.vendor.close)
        os.environ["CLASSIFIER_URL"] = self.vendor.url
        os.environ["SSL_CERT_FILE"] = str(
            self.pki.ca_file
        )  # the processor trusts the stub's demo certificate

        def delete_connection(model, **_):
            """IoT Core's DeleteConnection: end the session; the broker now refuses non-ACTIVE
            certificates."""
            if model.service_model.service_name != "iot-data" or model.name != "DeleteConnection":
                return None
            self.bridge.apply_certificate_statuses()
            return AWSResponse(url="", status_code=200, headers={}, raw=None), {}

        boto3.DEFAULT_SESSION.events.register_last(
            "before-call", delete_connection, unique_id="demo-delete-conn"
        )
        rules = sum(
            1
            for line in acl.device_acl(self.broker.telemetry_rule).splitlines()
            if line.startswith("pattern")
        )
        return f"mosquitto {HOST}:{self.broker.port}, TLS >= 1.2, certificates required, {rules} ACL patterns"

    def factory(self) -> str:
        from cryptography.hazmat.primitives import serialization
        from fleetwarden_contracts import commands

        device_dir = self.workdir / "device"
        device_dir.mkdir()
        public = self.kms.get_public_key(KeyId=self.signing_key)["PublicKey"]
        pem = serialization.load_der_public_key(public).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (device_dir / "command-signing.pem").write_bytes(pem)
        self.key_id = commands.key_id(public)
        (device_dir / "ca.pem").write_bytes(self.pki.ca_file.read_bytes())
        self.config_file = device_dir / "device.json"
        self.config_file.write_text(
            json.dumps(
                {
                    "thing": THING,
                    "endpoint": "localhost",
                    "port": self.broker.port,
                    "stage": STAGE,
                    "ca_file": "ca.pem",
                    "cert_file": "device.cert.pem",
                    "key_file": "device.key.pem",
                    "csr_file": "device.csr.pem",
                    "command_keys": ["command-signing.pem"],
                    "state_dir": "state",
                    "firmware_version": "1.4.2",
                    "telemetry_interval": 2,
                    "metrics_interval": 3600,
                    "backoff_base": 0.2,
                    "backoff_cap": 1.0,
                },
                indent=2,
            )
        )
        keygen = subprocess.run(
            [sys.executable, "-m", "fleetwarden_device", "keygen", "--config", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        check(keygen.returncode == 0, f"keygen failed: {keygen.stderr.strip()}")
        mode = (device_dir / "device.key.pem").stat().st_mode & 0o777
        check(mode == 0o600, f"device key mode {oct(mode)}")
        certificate = self.pki.sign_csr((device_dir / "device.csr.pem").read_bytes(), days=7)
        cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        (device_dir / "device.cert.pem").write_bytes(cert_pem)
        # What JITP does on the first connection: the thing, the certificate ACTIVE, attached.
        ca = self.iot.register_ca_certificate(
            caCertificate=self.pki.ca_file.read_text(),
            verificationCertificate=self.pki.ca_file.read_text(),
            setAsActive=True,
            allowAutoRegistration=True,
        )
        registered = self.iot.register_certificate(
            certificatePem=cert_pem.decode(), caCertificatePem=self.pki.ca_file.read_text(), status="ACTIVE"
        )
        self.iot.create_thing(thingName=THING)
        self.iot.attach_thing_principal(thingName=THING, principal=registered["certificateArn"])
        self.certificate_id = registered["certificateId"]
        self.bridge.know(self.certificate_id, certificate)
        return (
            f"{THING}: key 0600 made on the device, CSR CN={THING}, "
            f"certificate {self.certificate_id[:12]}... "
            f"ACTIVE under CA {ca['certificateId'][:12]}..."
        )

    def connect(self) -> str:
        log = open(self.workdir / "agent.log", "w")
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "fleetwarden_device", "run", "--config", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait(lambda: " connected " in self.agent_log(), 20, "the agent's CONNACK")
        from fleetwarden_device.metrics import own_listening_sockets

        listening = own_listening_sockets(self.agent.pid)
        check(listening == [], f"the agent listens on {listening}")
        self.wait(lambda: self.bridge.delivered["presence"], 10, "the connected lifecycle event")
        tls_version = re.search(r"'tls': '([^']+)'", self.agent_log())
        return (
            f"pid {self.agent.pid} connected as {THING} over {tls_version and tls_version.group(1)}, "
            "listening sockets: none; connected event -> detector"
        )

    def field(self) -> str:
        """The field device provisions itself (`fleetwarden-device provision`: claim certificate, its own key,
        CreateCertificateFromCsr, RegisterThing) through the local fleet-provisioning stand-in, whose decision
        is the real pre-provisioning hook's, with a token from the real token API."""
        from cryptography.hazmat.primitives import serialization
        from identity.provisioning_hook import handler as hook
        from identity.token_api import handler as token_api

        from device.local.provisioning_service import ProvisioningService
        from tests.alerts.test_processor import LambdaContext
        from tests.identity.test_token_api import ADMIN, api_event

        serial = "SN-FIELD-0001"
        os.environ.update(
            {
                "TOKENS_TABLE": "fleetwarden-test-provisioning-tokens",
                "TOKEN_TTL_SECONDS": "900",
                "ADMIN_GROUP": "admins",
            }
        )
        answer = token_api.lambda_handler(api_event(json.dumps({"serial": serial}), ADMIN), LambdaContext())
        check(answer["statusCode"] == 201, f"token API answered {answer['statusCode']}: {answer['body']}")
        token = json.loads(answer["body"])["token"]

        def register(thing: str, certificate_id: str, certificate) -> None:  # RegisterThing's registry calls
            pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
            arn = self.iot.register_certificate(
                certificatePem=pem, caCertificatePem=self.pki.ca_file.read_text(), status="ACTIVE"
            )["certificateArn"]
            self.iot.create_thing(thingName=thing)
            self.iot.attach_thing_principal(thingName=thing, principal=arn)
            self.bridge.know(arn.rsplit("/", 1)[1], certificate)

        ProvisioningService(
            self.backend,
            self.pki,
            CLAIM_TEMPLATE,
            register=register,
            hook=lambda event: hook.lambda_handler(event, LambdaContext()),
        )
        claim = self.pki.device(acl_claim_user(), self.workdir / "claim")
        base = json.loads(self.config_file.read_text())

        def device(name: str) -> Path:
            directory = self.workdir / name
            directory.mkdir()
            (directory / "ca.pem").write_bytes(self.pki.ca_file.read_bytes())
            (directory / "command-signing.pem").write_bytes(
                (self.config_file.parent / "command-signing.pem").read_bytes()
            )
            path = directory / "device.json"
            path.write_text(json.dumps({**base, "thing": serial, "telemetry_interval": 5}))
            return path

        def provision(config: Path) -> subprocess.CompletedProcess:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fleetwarden_device",
                    "provision",
                    "--config",
                    str(config),
                    "--claim-cert",
                    str(claim.cert_file),
                    "--claim-key",
                    str(claim.key_file),
                    "--template",
                    CLAIM_TEMPLATE,
                    # One argument: a token may begin with '-' (base64url), which argparse would read as a flag.
                    f"--token={token}",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )

        field_config = device("field")
        done = provision(field_config)
        check(done.returncode == 0, f"provisioning failed: {done.stderr.strip()[-300:]}")
        # The token leaked: another device (its own key, the same claim certificate) tries it.
        stolen = provision(device("thief"))
        check(stolen.returncode != 0 and "AccessDenied" in stolen.stderr, "the token was accepted twice")
        log = open(self.workdir / "field-agent.log", "w")
        field_agent = subprocess.Popen(
            [sys.executable, "-m", "fleetwarden_device", "run", "--config", str(field_config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.closers.append(lambda: (field_agent.terminate(), field_agent.wait(10)))
        self.wait(
            lambda: " connected " in (self.workdir / "field-agent.log").read_text(),
            20,
            "the field device's CONNACK",
        )
        return (
            f"token for {serial} issued to alice (audited); the device provisioned itself with it "
            "(hook allowed), another device presenting it was refused; connected with its own certificate"
        )

    def telemetry(self) -> str:
        """A report of the agent's, through the transform, lands as a JSON line in its thing's shard of
        the hour it was received (GZIP, as Firehose writes json), and its aggregate reached the detector."""
        import gzip
        from datetime import datetime, timezone

        from telemetry.layout import partition_keys, s3_prefix

        def landed():
            now = datetime.now(timezone.utc)
            keys = partition_keys(THING, now.strftime("%Y-%m-%d"), now.hour, self.stage.telemetry_shards)
            prefix = s3_prefix(keys)
            for listed in self.bridge.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
                body = self.bridge.s3.get_object(Bucket=BUCKET, Key=listed["Key"])["Body"].read()
                for line in gzip.decompress(body).decode().splitlines():
                    row = json.loads(line)
                    if row["thing"] == THING and "uptime_s" in row["metrics"]:
                        return listed["Key"], row
            return None

        key, row = self.wait(landed, 20, "a telemetry object in its thing's partition")
        self.wait(lambda: self.bridge.delivered["aggregates"], 10, "an aggregate on the observation stream")
        return (
            f"s3://{BUCKET}/{key.rsplit('/', 1)[0]}/ holds {sorted(row['metrics'])} (GZIP JSON lines); "
            f"{self.bridge.delivered['aggregates']} per-batch aggregate(s) -> observation stream -> detector"
        )

    def alert(self) -> str:
        trace = self.workdir / "trace.bin"
        trace.write_bytes(b"core dump: secret customer data that must never leave the account")
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleetwarden_device",
                "alert",
                "--config",
                str(self.config_file),
                "--code",
                "1042",
                "--field",
                "3=17.5",
                "--trace-file",
                str(trace),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        check(cli.returncode == 0, f"alert CLI failed: {cli.stderr.strip()}")
        request = self.wait(
            lambda: self.vendor.requests and self.vendor.requests[-1], 20, "the vendor's request"
        )
        sent = json.dumps(request["body"])
        check(
            "trace" not in request["body"] and "core dump" not in sent and THING not in sent,
            f"the vendor received more than the header: {sent}",
        )
        return f"vendor got {sorted(request['body'])}; no trace, no thing name"

    def flood(self) -> str:
        from fleetwarden_device.agent import write_outbox
        from fleetwarden_device.config import load

        config = load(self.config_file)
        for n in range(FLOOD):
            write_outbox(config, "telemetry", {"flood": n})
        self.wait(lambda: self.bridge.delivered["responses"], 40, "a violation and its response")
        return (
            f"{self.bridge.delivered['violations']} violation(s) (aws:num-messages-sent > {MAX_MESSAGES}) "
            "counted from the transform's per-batch aggregates"
        )

    def containment(self) -> str:
        groups = {
            g["groupName"] for g in self.iot.list_thing_groups_for_thing(thingName=THING)["thingGroups"]
        }
        status = self.iot.describe_certificate(certificateId=self.certificate_id)["certificateDescription"][
            "status"
        ]
        check(os.environ["QUARANTINE_GROUP"] in groups, f"{THING} is not in the quarantine group: {groups}")
        check(status == "INACTIVE", f"certificate is {status}")
        connected_before = self.agent_log().count(" connected ")
        self.wait(lambda: " disconnected " in self.agent_log(), 20, "the agent to see its session end")
        time.sleep(2)  # the agent keeps trying with backoff: every attempt must be refused
        log = self.agent_log()
        check(log.count(" connected ") == connected_before, "the contained device got back in")
        refusals = len(re.findall(r" refused ", log))
        check(refusals >= 1, "no refused reconnect")
        # The operator's view: the real CLI in its own process (its boto3 follows AWS_ENDPOINT_URL to moto).
        listed = subprocess.run(
            [sys.executable, "-m", "tools.fleetctl.cli", "incidents", "list",
             "--table", os.environ["INCIDENTS_TABLE"], "--thing", THING, "--json"],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
        )
        check(listed.returncode == 0, f"fleetctl incidents list failed: {listed.stderr.strip()}")
        incidents = json.loads(listed.stdout)
        check(any(i.get("status") == "contained" for i in incidents),
              f"fleetctl shows no contained incident: {incidents}")
        return (f"quarantined, certificate INACTIVE, session ended, {refusals} reconnect(s) refused; "
                f"`fleetctl incidents list` shows it contained")

    def reinstate(self) -> str:
        from defense.device_admin import handler as admin

        from tests.alerts.test_processor import LambdaContext

        reply = admin.lambda_handler(
            {
                "action": "reinstate",
                "thing": THING,
                "reason": "demo: flood explained",
                "actor": "arn:aws:sts::123456789012:assumed-role/operator/alice",
            },
            LambdaContext(),
        )
        check(reply.get("ok") is True, f"reinstate refused: {reply}")
        self.bridge.apply_certificate_statuses()
        connected_before = self.agent_log().count(" connected ")
        self.wait(lambda: self.agent_log().count(" connected ") > connected_before, 20, "the reconnection")
        return f"certificate ACTIVE again, out of quarantine, agent reconnected ({json.dumps(reply)[:80]}...)"

    def _sign(self, document: dict) -> dict:
        from fleetwarden_contracts import commands

        def kms_signer(message: bytes) -> bytes:
            return self.kms.sign(
                KeyId=self.signing_key,
                Message=message,
                MessageType="RAW",
                SigningAlgorithm=commands.SIGNING_ALGORITHM,
            )["Signature"]

        return commands.sign(document, kms_signer)

    def _document(self, command: str, params: dict) -> dict:
        from fleetwarden_contracts import commands

        return commands.unsigned_document(
            command=command,
            params=params,
            issuer="alice@example.com",
            key=self.key_id,
            issued_at=int(time.time()),
            lifetime_seconds=600,
            thing=THING,
        )

    def command(self) -> str:
        from fleetwarden_contracts import commands

        signed = self._sign(self._document("reboot", {"delay_seconds": 0}))
        job_id = f"fw-reboot-{hashlib.sha256(signed['nonce'].encode()).hexdigest()[:32]}"
        self.jobs.queue(THING, job_id, commands.job_document(signed))
        status, details = self.wait_job(job_id)
        check(status == "SUCCEEDED", f"job {status} {details}")
        return f"job {job_id[:20]}... SUCCEEDED {details}"

    def tampered(self) -> str:
        from fleetwarden_contracts import commands

        signed = self._sign(self._document("config", {"desired": {"telemetry_interval": 60}}))
        tampered = {**signed, "params": {"desired": {"telemetry_interval": 1}}}
        job_id = "fw-config-tampered"
        self.jobs.queue(THING, job_id, commands.job_document(tampered))
        status, details = self.wait_job(job_id)
        check(
            (status, details.get("reason")) == ("REJECTED", commands.BAD_SIGNATURE), f"job {status} {details}"
        )
        return f"job {job_id} REJECTED reason={details['reason']}"

    def rotate(self) -> str:
        """The rotation function's part is played by device/local/rotation_service.py (the Commands stack's
        function is not on this branch); the new certificate is registered and attached as it would do."""
        from fleetwarden_contracts import commands, topics

        from device.local import acl
        from device.local.rotation_service import RotationService

        def issued(thing: str, certificate_id: str, certificate) -> None:
            from cryptography.hazmat.primitives import serialization

            pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
            arn = self.iot.register_certificate(
                certificatePem=pem, caCertificatePem=self.pki.ca_file.read_text(), status="ACTIVE"
            )["certificateArn"]
            self.iot.attach_thing_principal(thingName=thing, principal=arn)
            self.bridge.know(arn.rsplit("/", 1)[1], certificate)

        service = RotationService(self.backend, self.pki, on_issued=issued)
        key_before = (self.config_file.parent / "device.key.pem").read_bytes()
        connected_before = self.agent_log().count(" connected ")
        signed = self._sign(self._document("rotate-certificate", {}))
        self.jobs.queue(THING, "fw-rotate-certificate-1", commands.job_document(signed))
        status, details = self.wait_job("fw-rotate-certificate-1")
        check(status == "SUCCEEDED", f"job {status} {details}")
        self.wait(
            lambda: self.agent_log().count(" connected ") > connected_before,
            20,
            "a connection with the new key",
        )
        check(
            (self.config_file.parent / "device.key.pem").read_bytes() != key_before, "the key did not change"
        )
        previous = self.config_file.parent / "device.key.pem.previous"
        self.wait(lambda: service.confirmations and not previous.exists(), 20, "the confirmation")
        return "new key and certificate in use, confirmed, old key deleted"

    def wait_job(self, job_id: str) -> tuple[str, dict]:
        from device.local.jobs_service import TERMINAL

        self.wait(lambda: self.jobs.status(THING, job_id)[0] in TERMINAL, 20, f"job {job_id}")
        return self.jobs.status(THING, job_id)

    def summary(self, planned: int) -> str:
        width = max(len(name) for name, *_ in self.steps)
        lines = ["", f"{'step':<{width}}  result  seconds", f"{'-' * width}  ------  -------"]
        for name, ok, _, seconds in self.steps:
            lines.append(f"{name:<{width}}  {RESULT[ok]:<6}  {seconds:7.2f}")
        passed = sum(ok is True for _, ok, *_ in self.steps)
        todo = sum(ok is None for _, ok, *_ in self.steps)
        lines.append(
            f"\n{passed}/{planned} steps held"
            + (f", {todo} waiting on work outside this branch (TODO)" if todo else "")
            + f"; logs in {self.workdir}"
        )
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(root), str(root / "lambdas")]
    workdir = Path(tempfile.mkdtemp(prefix="fleetwarden-demo-"))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    log = open(workdir / "demo.log", "w")
    os.dup2(log.fileno(), 1)  # handler logs, EMF metrics and moto's access log go to demo.log,
    os.dup2(log.fileno(), 2)  # not over the step lines
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    out.write(f"Fleetwarden demo: one device's life, locally (logs: {workdir})\n")
    demo = Demo(workdir, out)
    started = time.monotonic()
    try:
        planned = demo.run()
    except BaseException:
        out.write(traceback.format_exc())
        raise
    finally:
        demo.close()
    out.write(demo.summary(planned))
    out.write(f"total {time.monotonic() - started:.1f} s\n")
    return 0 if len(demo.steps) == planned and all(ok is not False for _, ok, *_ in demo.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
