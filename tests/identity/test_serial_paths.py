"""One device whose name uses the serial alphabet's unusual characters ('_' and '-', first and last,
letters of both cases) goes through every path a thing name travels, built as AWS builds each input.

The alphabet (identity.tokens.SERIAL_ALPHABET: A-Z a-z 0-9 '_' '-', 1-128 characters) is what all
of them carry. AWS IoT would accept ':' in a thing name too ("CreateThing", AWS IoT API reference,
https://docs.aws.amazon.com/iot/latest/apireference/API_CreateThing.html: [a-zA-Z0-9:_-]+, length
1-128), but the telemetry and alert paths refuse it, so synthesis refuses a serial_pattern that
could match it (tests/test_config.py) and validate_serial refuses it at run time (below).

Where each input comes from:
- rule SQL topic(n): the n-th '/'-separated level of the topic, and a Basic Ingest topic's
  `$aws/rules/<rule>` prefix is not visible to it ("Reducing messaging costs with Basic Ingest",
  https://docs.aws.amazon.com/iot/latest/developerguide/iot-basic-ingest.html; "Functions",
  https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-functions.html#iot-function-topic);
- the S3 rule action's key is its substitution template, values inserted as they are ("S3",
  https://docs.aws.amazon.com/iot/latest/developerguide/s3-rule-action.html: key
  `${topic()}/${timestamp()}` for topic some/topic writes into the some/topic folder);
- S3 event notifications carry the key URL-encoded, a space as '+' ("Event message structure",
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html). Which
  other characters S3 escapes is not listed there: the test sends the key both as quote_plus makes
  it and with every character but letters and digits percent-encoded (the worst case);
- Firehose builds the S3 prefix from the transform's partition keys ("Understand custom prefixes
  for Amazon S3 objects", https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html); whether
  it escapes a key value is not documented (unverified), so only alphabet characters may reach one.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from types import SimpleNamespace

import pytest

from alerts import model as alerts_model
from alerts.processor.process import AlertProcessor
from defense.detector import windows
from defense.detector.windows import Limits, fold
from identity.provisioning_hook import handler as hook_handler
from identity.token_api import handler as api_handler
from identity.token_api.issue import issue_token
from identity.tokens import CLAIM_CLIENT_PREFIX, DEFAULT_SERIAL_PATTERN, MAX_SERIAL_LENGTH, SERIAL_ALPHABET
from identity.tokens import hash_token, new_token, serial_pattern, validate_serial
from shared import topics, violations
from shared.api import ApiError
from shared.violations import parse_violation, violation_json
from stacks.config import load_config
from telemetry.transform import handler as transform_handler
from telemetry import layout
from telemetry.transform import transform
from tests.identity.iot_policy_eval import Connection, client, is_allowed, resolve, topic, topicfilter
from tests.infra.synth import cdk_context, topic_rules
from tools.fleetctl import serials as fleetctl_serials

ODD = "_x-Y_9-"  # '_' first, '-' last, both cases: every kind of character a serial may hold
NEIGHBOUR = "_x-Y_9"  # a prefix of ODD: policy variables must not let one reach the other's topics
PATTERN = r"^[A-Za-z0-9_-]{4,64}$"  # a stage's custom serial_pattern that admits ODD
TELEMETRY_RULE = topics.rule_name("dev", "telemetry")
RECEIVED_AT = 1_709_622_489_123  # 2024-03-05T07:08:09.123Z, as timestamp() gives it
PRINCIPAL = "a1" * 32  # principal(): the certificate id


def rule_topic_level(mqtt_topic: str, n: int) -> str:
    """What topic(n) returns for a message on `mqtt_topic` (Basic Ingest prefix removed)."""
    levels = mqtt_topic.split("/")
    if mqtt_topic.startswith("$aws/rules/"):
        levels = levels[3:]
    return levels[n - 1]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- the one alphabet -------------------------------------------------------------------------------

def test_the_stage_pattern_admitting_odd_names_passes_synthesis_checks():
    context = cdk_context()
    context["fleetwarden"]["stages"]["dev"]["serial_pattern"] = PATTERN
    assert load_config({**context, "stage": "dev"}).stage.serial_pattern == PATTERN
    assert validate_serial(ODD, PATTERN) and validate_serial(NEIGHBOUR, PATTERN)


def test_every_path_accepts_the_whole_alphabet_and_the_longest_name():
    longest = (SERIAL_ALPHABET * 2)[:MAX_SERIAL_LENGTH]
    for name in (SERIAL_ALPHABET, longest, ODD):
        assert transform.SAFE_THING.fullmatch(name)  # telemetry S3 partition
        assert alerts_model.THING_PATTERN.fullmatch(name)  # alerts index, alerts API parameter
        assert alerts_model.parse_alert_key(f"alerts/{name}/2024/03/05/1709622489123-a.json") == name
        assert windows.THING_ID.fullmatch(name)  # built-in detector
        assert re.fullmatch(violations.THING_NAME_PATTERN, name)  # violation contract
        assert validate_serial(name, r"^.+$")  # hook and token API
        assert fleetctl_serials.validate_serial(name, r"^.+$") == name  # CSR and signing (JITP CN)
    assert not transform.SAFE_THING.fullmatch(longest + "a")
    assert not validate_serial(longest + "a", r"^.+$")


def test_fleetctl_restates_the_serial_rule_exactly():
    """fleetctl is installed without lambdas/, so it carries its own copy."""
    assert (fleetctl_serials.SERIAL_ALPHABET, fleetctl_serials.MAX_SERIAL_LENGTH,
            fleetctl_serials.CLAIM_CLIENT_PREFIX, fleetctl_serials.DEFAULT_SERIAL_PATTERN) == (
        SERIAL_ALPHABET, MAX_SERIAL_LENGTH, CLAIM_CLIENT_PREFIX, DEFAULT_SERIAL_PATTERN)


@pytest.mark.parametrize("serial", ["SN:0001", "SN.0001", "SN 0001", "SN/0001", "SN+0001", "SN%3A01",
                                    "SN-٠٠٠١", "ſN-0001", "SN-0001\n", "x" * 129, ""])
def test_a_serial_outside_the_alphabet_is_refused_whatever_the_pattern(serial):
    """Even if a pattern admitting more reached the functions' environment (or fleetctl's flag)."""
    assert not validate_serial(serial, r"^.*$")
    with pytest.raises(ValueError):
        fleetctl_serials.validate_serial(serial, r"^.*$")


def test_fleetctl_refuses_claim_client_names_like_the_hook():
    assert not validate_serial("claim-0001", PATTERN)
    with pytest.raises(ValueError, match="claim"):
        fleetctl_serials.validate_serial("claim-0001", PATTERN)


# --- the device policy ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def device_policy(dev):
    resources = dev.template_json(dev.stacks.identity)["Resources"]
    [document] = [r["Properties"]["PolicyDocument"] for key, r in resources.items()
                  if r["Type"] == "AWS::IoT::Policy" and key.startswith("RegistryDevicePolicy")]
    return [document]


def as_device(thing: str, documents: list[dict]) -> Connection:
    """The device's own connection; any iot:DomainName condition is met (the endpoint is not what
    this test is about)."""
    domains = {key: _first(values) for statement in resolve(documents[0])["Statement"]
               for tests in statement.get("Condition", {}).values() for key, values in tests.items()
               if key == "iot:DomainName"}
    return Connection(client_id=thing, attached_thing=thing, extra=domains)


def _first(values):
    return values[0] if isinstance(values, list) else values


def own_publish_topics(thing: str) -> list[str]:
    return [topics.telemetry_topic(TELEMETRY_RULE, thing), topics.alerts_topic(thing),
            topics.defender_metrics_topic(thing), f"{topics.jobs_prefix(thing)}/job-1/update",
            f"{topics.shadow_prefix(thing)}/update", topics.cert_rotation_request_topic(thing)]


def test_device_policy_lets_the_odd_device_in_on_its_own_topics_only(device_policy):
    odd, neighbour = as_device(ODD, device_policy), as_device(NEIGHBOUR, device_policy)
    assert is_allowed(device_policy, "iot:Connect", client(ODD), odd)
    assert not is_allowed(device_policy, "iot:Connect", client(NEIGHBOUR), odd)
    for own, other in zip(own_publish_topics(ODD), own_publish_topics(NEIGHBOUR)):
        assert is_allowed(device_policy, "iot:Publish", topic(own), odd), own
        assert not is_allowed(device_policy, "iot:Publish", topic(other), odd), other
        assert not is_allowed(device_policy, "iot:Publish", topic(own), neighbour), own
    replies = f"{topics.shadow_prefix(ODD)}/update/delta"
    assert is_allowed(device_policy, "iot:Subscribe", topicfilter(replies), odd)
    assert is_allowed(device_policy, "iot:Receive", topic(replies), odd)
    assert not is_allowed(device_policy, "iot:Subscribe", topicfilter(replies), neighbour)


# --- telemetry: rule -> Firehose -> transform -> S3 prefix ------------------------------------------

def firehose_event(thing: str) -> dict:
    """The telemetry rule's envelope for one Basic Ingest message, as Firehose hands it to the
    transform (record data = base64 of the rule's JSON output)."""
    mqtt_topic = topics.telemetry_topic(TELEMETRY_RULE, thing)
    payload = json.dumps({"ts": 1_709_622_489, "seq": 1, "metrics": {"temperature_c": 21.5}}).encode()
    envelope = {"payload": b64(payload), "thing": rule_topic_level(mqtt_topic, 2), "client_id": thing,
                "principal": PRINCIPAL, "received_at": RECEIVED_AT}
    return {
        "invocationId": "4f1e4bd8-5a7a-4a4b-9d0e-3c2b1a0f9e8d",
        "deliveryStreamArn":
            "arn:aws:firehose:eu-west-1:123456789012:deliverystream/fleetwarden-dev-telemetry",
        "region": "eu-west-1",
        "records": [{"recordId": "r-0", "approximateArrivalTimestamp": RECEIVED_AT + 40,
                     "data": b64(json.dumps(envelope).encode())}],
    }


def test_telemetry_of_the_odd_device_lands_under_its_own_shard(context, capsys):
    [output] = transform_handler.lambda_handler(firehose_event(ODD), context)["records"]
    assert output["result"] == "Ok"
    prefix = layout.s3_prefix(output["metadata"]["partitionKeys"])
    received = time.gmtime(RECEIVED_AT / 1000)
    assert prefix == (f"telemetry/day=2024-03-05/hour={received.tm_hour:02d}/"
                      f"shard={layout.shard_of(ODD):02d}/")
    line = json.loads(base64.b64decode(output["data"]))
    assert (line["thing"], line["client_id"]) == (ODD, ODD)
    capsys.readouterr()


# --- alerts: rule's S3 key -> S3 event notification (URL-encoded) -> processor ------------------------

@pytest.fixture(scope="module")
def alert_key_template(dev):
    rule = topic_rules(dev.template_json(dev.stacks.ingest))["fleetwarden_dev_alerts"]
    return rule["Actions"][0]["S3"]["Key"]


def alert_key(template: str, mqtt_topic: str) -> str:
    """The key the alert rule's S3 action writes for one message (its substitution templates)."""
    values = {"topic(2)": rule_topic_level(mqtt_topic, 2),
              "parse_time('yyyy/MM/dd', timestamp())": "2024/03/05",
              "timestamp()": str(RECEIVED_AT), "newuuid()": "6f1c3c2e-0d4b-4a57-9a1e-6f9b1f0f2a11"}
    key = re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], template)
    assert "${" not in key
    return key


def s3_notification(encoded_key: str, size: int) -> str:
    """An SQS body: the S3 event notification of one new object (notification-content-structure)."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
        "eventTime": "2024-03-05T07:08:09.200Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:iot-rule"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjsk"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "alerts-to-queue",
               "bucket": {"name": "fleetwarden-dev-alerts-123456789012-eu-west-1",
                          "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": "arn:aws:s3:::fleetwarden-dev-alerts-123456789012-eu-west-1"},
               "object": {"key": encoded_key, "size": size, "versionId": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
                          "eTag": "0123456789abcdef0123456789abcdef", "sequencer": "0065E6C4D92F5B1A37"}},
    }]})


class FakeAccount:
    """The bucket (one object) and the alerts table, as the processor uses them."""

    def __init__(self, key: str, body: bytes):
        self.key, self.body, self.items, self.forwarded = key, body, [], []

    def get_object(self, *, Bucket, Key, VersionId=None, **_):  # noqa: N803 - boto3's names
        assert Key == self.key, f"the processor asked for {Key!r}, the object is {self.key!r}"
        return {"Body": SimpleNamespace(read=lambda n=-1: self.body, close=lambda: None),
                "ContentLength": len(self.body)}

    def put_item(self, *, Item, **_):  # noqa: N803
        self.items.append(Item)

    def forward(self, *, thing, alert_id, header):
        self.forwarded.append(thing)
        return SimpleNamespace(rejected=False, status=200, attempts=1)


@pytest.mark.parametrize("encode", [
    lambda key: urllib.parse.quote_plus(key, safe="/"),  # what S3 is documented to do
    lambda key: "".join(c if c.isalnum() or c == "/" else f"%{ord(c):02X}" for c in key),  # worst case
], ids=["form-encoded", "every-symbol-escaped"])
def test_an_alert_of_the_odd_device_is_indexed_and_forwarded_under_its_name(alert_key_template, encode):
    key = alert_key(alert_key_template, topics.alerts_topic(ODD))
    assert key.startswith(f"alerts/{ODD}/2024/03/05/")
    body = json.dumps({"header": {"fw": "1.4.2", "code": 1042, "fields": {"3": 17.5}},
                       "trace": b64(b"frame0 frame1")}).encode()
    account = FakeAccount(key, body)
    processor = AlertProcessor(s3=account, table=account, forward=account.forward)
    [outcome] = processor.process_message(s3_notification(encode(key), len(body)))
    assert outcome.outcome == "forwarded"
    assert [item["thing"] for item in account.items] == [ODD] and account.forwarded == [ODD]


# --- detection: Kinesis records -> built-in detector -> violation contract ---------------------------

def kinesis_record(doc: dict, partition_key: str, seq: int) -> dict:
    """One record as Lambda delivers it from Kinesis (data = base64 of the rule's JSON output)."""
    sequence_number = f"49590338271490256608559692538361571095921575989136{seq:06d}"
    return {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": partition_key,
                    "sequenceNumber": sequence_number, "data": b64(json.dumps(doc).encode()),
                    "approximateArrivalTimestamp": 1_709_622_489.2},
        "eventSource": "aws:kinesis", "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{sequence_number}", "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/fleetwarden-dev-detector",
        "awsRegion": "eu-west-1",
        "eventSourceARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/fleetwarden-dev-observations",
    }


def test_a_flooding_odd_device_is_named_in_a_valid_violation():
    mqtt_topic = topics.telemetry_topic(TELEMETRY_RULE, ODD)
    payload = b64(b'{"ts":1709622489,"seq":1,"metrics":{}}')
    telemetry = {"payload": payload, "thing": rule_topic_level(mqtt_topic, 2), "client_id": ODD,
                 "principal": PRINCIPAL, "received_at": RECEIVED_AT}
    presence = {"kind": "presence", "event": "connected", "client_id": ODD, "timestamp": RECEIVED_AT}
    records = [kinesis_record(presence, ODD, i) for i in range(3)]
    records += [kinesis_record(telemetry, ODD, 3 + i) for i in range(11)]
    limits = Limits(max_messages=10, max_connects=2, window_seconds=300, profile="fleetwarden-dev-builtin")
    stats = windows.FoldStats()
    state, found = fold({}, records, limits, {"start": "2024-03-05T07:05:00Z", "end": "2024-03-05T07:10:00Z"},
                        now_ms=RECEIVED_AT, stats=stats)
    assert stats.malformed == {}
    assert sorted(v["behavior"]["name"] for v in found) == ["ConnectionAttempts", "MessagesSent"]
    for violation in found:
        assert parse_violation(violation_json(violation)).thingName == ODD  # what auto-response reads
    assert list(state["t"]) == [ODD]


# --- field provisioning: token API -> pre-provisioning hook -----------------------------------------

ADMIN = {"sub": "6f1c3c2e-0d4b-4a57-9a1e-6f9b1f0f2a11", "cognito:username": "alice",
         "cognito:groups": "admins", "email": "alice@example.com", "token_use": "id"}


def hook_event(serial: str, token: str) -> dict:
    """The pre-provisioning hook's input ("Pre-provisioning hooks", AWS IoT developer guide,
    https://docs.aws.amazon.com/iot/latest/developerguide/pre-provisioning-hook.html)."""
    return {
        "claimCertificateId": "c3" * 32,
        "certificateId": "a1" * 32,
        "certificatePem": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n",
        "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/fleetwarden-dev-fleet",
        "clientId": f"{CLAIM_CLIENT_PREFIX}station-7",
        "parameters": {"SerialNumber": serial, "ProvisioningToken": token},
    }


def test_a_token_for_the_odd_serial_provisions_it(aws, context, monkeypatch):
    monkeypatch.setenv("SERIAL_PATTERN", PATTERN)  # the stack sets it from the stage's serial_pattern
    hook_handler._dependencies.cache_clear()
    api_handler._dependencies.cache_clear()
    issued = issue_token(claims=ADMIN, body=json.dumps({"serial": ODD}), tokens_table=aws.tokens,
                         audit_table=aws.audit, pattern=serial_pattern(), ttl_seconds=900,
                         admin_group="admins", now=time.time)
    assert hook_handler.lambda_handler(hook_event(ODD, issued["token"]), context)["allowProvisioning"] is True


def test_a_pattern_that_slipped_through_still_cannot_provision_a_colon(aws, context, logs, monkeypatch):
    monkeypatch.setenv("SERIAL_PATTERN", r"^[A-Za-z0-9:_-]{4,64}$")  # never from synthesis: set by hand
    hook_handler._dependencies.cache_clear()
    with pytest.raises(ApiError, match="serial must match"):
        issue_token(claims=ADMIN, body=json.dumps({"serial": "SN:0001"}), tokens_table=aws.tokens,
                    audit_table=aws.audit, pattern=serial_pattern(), ttl_seconds=900,
                    admin_group="admins", now=time.time)
    # A token stored for it anyway (by hand, or by an older version) is not honoured by the hook.
    token = new_token()
    aws.tokens.put_item(Item={"token_hash": hash_token(token), "serial": "SN:0001", "issued_by": "alice",
                              "issued_at": int(time.time()), "expires_at": int(time.time()) + 900})
    assert hook_handler.lambda_handler(hook_event("SN:0001", token), context) == {"allowProvisioning": False}
    [denial] = [json.loads(line) for line in logs.getvalue().splitlines() if '"reason"' in line]
    assert denial["reason"] == "invalid-serial"
