"""Device metric reports reach the built-in detector on a topic its rule really receives.

`$aws/things/<thing>/defender/metrics/json` is publish-only ("AWS IoT Device Defender topics only
support MQTT publish", "Reserved topics", https://docs.aws.amazon.com/iot/latest/developerguide/
reserved-topics.html): a rule selecting it receives nothing. Devices therefore publish their
report (Device Defender's format) by Basic Ingest to the detector's metrics rule,
`$aws/rules/<rule>/dt/<thing>/metrics` ("Reducing messaging costs with Basic Ingest",
https://docs.aws.amazon.com/iot/latest/developerguide/iot-basic-ingest.html: the rule is named
by the topic's first three levels, and "The initial prefix of a Basic Ingest topic
($aws/rules/rule_name) isn't available to the topic(Decimal) function"). Reports are shaped as
the "Device metrics document specification" shows them ("Device-side metrics",
https://docs.aws.amazon.com/iot/latest/developerguide/detect-device-side-metrics.html: "A report
can have both or at least one metrics or custom_metrics block").
"""

from __future__ import annotations

import re

import pytest
from defense.detector.windows import FoldStats

from lambdas.shared import topics
from lambdas.shared.topics import rule_name
from stacks.identity.iot_policies import device_policy_document
from tests.defense.test_detector import behaviors, kinesis_record, report, run, shorten
from tests.identity.iot_policy_eval import ARN_PREFIX, Connection, is_allowed, topic
from tests.infra.synth import resources

TELEMETRY_RULE = rule_name("dev", "telemetry")
METRICS_RULE = topics.metrics_rule_of(TELEMETRY_RULE)
A, B = "SN-000A", "SN-000B"
DEVICE_A = Connection(client_id=A, attached_thing=A)


@pytest.fixture(scope="module")
def metrics_rule(dev):
    """The synthesised metrics rule's payload."""
    rules = {r["Properties"]["RuleName"]: r["Properties"]["TopicRulePayload"]
             for r in resources(dev.template_json(dev.stacks.defense), "AWS::IoT::TopicRule").values()}
    return rules[METRICS_RULE]


def deliver(rule: dict, published_on: str, client_id: str, payload: dict) -> dict:
    """What the metrics rule puts on the stream for a message published on `published_on` by the
    connection `client_id`: the Basic Ingest prefix names the rule and is not part of topic();
    the SELECT's fields are read from the deployed SQL; keys the payload lacks are left out."""
    prefix = f"$aws/rules/{METRICS_RULE}/"
    assert published_on.startswith(prefix), "Basic Ingest to another rule: this rule never sees it"
    levels = published_on[len(prefix):].split("/")
    sql = rule["Sql"]
    source = re.search(r"FROM '([^']+)'", sql).group(1).split("/")
    assert len(source) == len(levels) and all(s in ("+", t) for s, t in zip(source, levels))
    assert re.search(r"topic\(2\) AS thing, clientid\(\) AS client_id", sql)
    fields = re.findall(r"'(\w+)': (\w+)", sql)
    doc = {"kind": "metrics", "thing": levels[1], "client_id": client_id,
           "report": {name: payload[source_key] for name, source_key in fields if source_key in payload}}
    return kinesis_record(doc, client_id)  # partition key ${clientid()}


def test_the_rule_selects_the_report_topic_keyed_by_the_connection(metrics_rule):
    assert METRICS_RULE == "fleetwarden_dev_device_metrics"
    assert f"FROM '{topics.metrics_report_rule_topic('+')}'" in metrics_rule["Sql"]
    assert "defender/metrics" not in metrics_rule["Sql"]  # the publish-only topic reaches no rule
    assert metrics_rule["Actions"][0]["Kinesis"]["PartitionKey"] == "${clientid()}"
    for key in ("header", "metrics", "custom_metrics", "hed", "met", "cmet"):
        assert f"'{key}': {key}" in metrics_rule["Sql"]
    assert topics.metrics_report_topic(METRICS_RULE, A) == f"$aws/rules/{METRICS_RULE}/dt/{A}/metrics"


def test_the_deployed_device_policy_allows_the_report_topic_for_the_device_itself(dev):
    policies = resources(dev.template_json(dev.stacks.identity), "AWS::IoT::Policy")
    device = [p for k, p in policies.items() if k.startswith("RegistryDevicePolicy")]
    assert len(device) == 1
    expected = topics.metrics_report_topic(METRICS_RULE, topics.THING_VARIABLE)
    assert expected in str(device[0]["Properties"]["PolicyDocument"])


def test_a_device_may_publish_its_own_report_only():
    policy = [device_policy_document(ARN_PREFIX, TELEMETRY_RULE)]
    allowed = is_allowed(policy, "iot:Publish", topic(topics.metrics_report_topic(METRICS_RULE, A)), DEVICE_A)
    assert allowed
    # Another device's name, the rule's topic without Basic Ingest, another stage's rule: refused.
    for other in (topics.metrics_report_topic(METRICS_RULE, B), topics.metrics_report_rule_topic(A),
                  topics.metrics_report_topic(topics.metrics_rule_name("prod"), A)):
        assert not is_allowed(policy, "iot:Publish", topic(other), DEVICE_A), other
    # Accounts with Device Defender Detect keep its own topic.
    assert is_allowed(policy, "iot:Publish", topic(topics.defender_metrics_topic(A)), DEVICE_A)


def test_a_listening_port_report_on_the_report_topic_contains_its_device(metrics_rule):
    record = deliver(metrics_rule, topics.metrics_report_topic(METRICS_RULE, A), A, report(tcp_ports=(22,)))
    state, violations = run([[record]])
    assert behaviors(violations) == [(A, "ListeningTcpPorts")]
    assert violations[0]["thingName"] == A and violations[0]["metricValue"] == {"count": 1}


def test_a_report_naming_another_device_is_never_counted_against_it(metrics_rule):
    # The policy refuses it (above); were it delivered anyway, clientid() is the sender's.
    stats = FoldStats()
    record = deliver(metrics_rule, topics.metrics_report_topic(METRICS_RULE, B), A, report(tcp_ports=(22,)))
    state, violations = run([[record]], stats=stats)
    assert all(v.get("thingName") != B for v in violations)
    assert B not in state["t"] and stats.spoofed == 1
    # A record without the connection's client id names nobody: skipped, not counted against B.
    forged = kinesis_record({"kind": "metrics", "thing": B, "report": report(tcp_ports=(22,))}, B)
    state, violations = run([[forged]])
    assert violations == [] and B not in state["t"]


@pytest.mark.parametrize("short", [False, True])
def test_a_custom_metrics_only_report_is_accepted(metrics_rule, short):
    # The custom-metrics example shape: a number custom metric is an array with a single value.
    doc = {"header": {"report_id": 1_709_622_301, "version": "1.0"},
           "custom_metrics": {"cpu_usage": [{"number": 42}]}}
    payload = shorten(doc) if short else doc
    record = deliver(metrics_rule, topics.metrics_report_topic(METRICS_RULE, A), A, payload)
    stats = FoldStats()
    state, violations = run([[record]], stats=stats)
    assert violations == [] and stats.reports == 1 and stats.reports_invalid == 0
    assert state["t"][A][0] == 1  # one message of the device
