"""Device policies, evaluated as IoT Core would: no device can act as, or read from, another."""

import pytest

from lambdas.shared import topics
from lambdas.shared.topics import rule_name
from tests.identity.iot_policy_eval import Connection, client, is_allowed, topic, topicfilter

RULE = rule_name("dev", "telemetry")  # the telemetry rule the stacks create


def policy(s, logical_prefix: str) -> dict:
    resources = s.template_json(s.stacks.identity)["Resources"]
    found = [r["Properties"]["PolicyDocument"] for k, r in resources.items()
             if r["Type"] == "AWS::IoT::Policy" and k.startswith(logical_prefix)]
    assert len(found) == 1, logical_prefix
    return found[0]


@pytest.fixture(scope="module")
def device_policy(dev):
    return [policy(dev, "RegistryDevicePolicy")]


@pytest.fixture(scope="module")
def quarantined(dev):
    # A quarantined thing has both: its own device policy and the group's deny policy.
    return [policy(dev, "RegistryDevicePolicy"), policy(dev, "RegistryQuarantinePolicy")]


@pytest.fixture(scope="module")
def claim_policy(dev):
    return [policy(dev, "FleetProvisioningClaimPolicy")]


A = Connection(client_id="dev-A", attached_thing="dev-A")
B_NAME = "dev-B"


def own_and_other(thing):
    return {
        "telemetry": topics.telemetry_topic(RULE, thing),
        "alerts": topics.alerts_topic(thing),
        "metrics": topics.defender_metrics_topic(thing),
        "job update": f"{topics.jobs_prefix(thing)}/job-1/update",
        "shadow update": f"{topics.shadow_prefix(thing)}/update",
        "cert request": topics.cert_rotation_request_topic(thing),
    }


def test_device_connects_only_as_itself_and_only_when_attached(device_policy):
    assert is_allowed(device_policy, "iot:Connect", client("dev-A"), A)
    assert not is_allowed(device_policy, "iot:Connect", client(B_NAME), A)
    # A's certificate presented under B's client id: the thing variables are not set.
    as_b = Connection(client_id=B_NAME, attached_thing="dev-A")
    assert not is_allowed(device_policy, "iot:Connect", client(B_NAME), as_b)
    detached = Connection(client_id="dev-A", attached_thing=None)
    assert not is_allowed(device_policy, "iot:Connect", client("dev-A"), detached)


@pytest.mark.parametrize("name", list(own_and_other("x")))
def test_device_publishes_to_its_own_topics_only(device_policy, name):
    assert is_allowed(device_policy, "iot:Publish", topic(own_and_other("dev-A")[name]), A)
    assert not is_allowed(device_policy, "iot:Publish", topic(own_and_other(B_NAME)[name]), A)


def test_device_cannot_publish_telemetry_around_basic_ingest_or_to_other_rules(device_policy):
    assert not is_allowed(device_policy, "iot:Publish", topic(topics.telemetry_rule_topic("dev-A")), A)
    other_rule = topics.telemetry_topic("fleetwarden_prod_telemetry", "dev-A")
    assert not is_allowed(device_policy, "iot:Publish", topic(other_rule), A)


@pytest.mark.parametrize("prefix", [
    lambda t: topics.jobs_prefix(t) + "/notify-next",
    lambda t: topics.jobs_prefix(t) + "/job-1/get/accepted",
    lambda t: topics.shadow_prefix(t) + "/update/delta",
    lambda t: topics.cert_rotation_response_prefix(t) + "/accepted",
])
def test_device_subscribes_and_receives_its_own_replies_only(device_policy, prefix):
    own, other = prefix("dev-A"), prefix(B_NAME)
    assert is_allowed(device_policy, "iot:Subscribe", topicfilter(own), A)
    assert is_allowed(device_policy, "iot:Receive", topic(own), A)
    assert not is_allowed(device_policy, "iot:Subscribe", topicfilter(other), A)
    assert not is_allowed(device_policy, "iot:Receive", topic(other), A)


def test_device_cannot_subscribe_with_wildcards_across_the_fleet(device_policy):
    for wildcard in ("#", "$aws/things/+/jobs/#", "dt/+/alerts", "$aws/things/#"):
        assert not is_allowed(device_policy, "iot:Subscribe", topicfilter(wildcard), A)


def test_device_has_no_other_iot_actions(device_policy):
    for action in ("iot:UpdateThingShadow", "iot:DeleteThing", "iot:UpdateCertificate",
                   "iot:RetainPublish", "iot:GetRetainedMessage"):
        assert not is_allowed(device_policy, action, "arn:aws:iot:eu-west-1:123456789012:thing/dev-A", A)


def test_quarantine_cuts_data_but_keeps_jobs(quarantined):
    for name in ("telemetry", "alerts", "shadow update", "cert request"):
        assert not is_allowed(quarantined, "iot:Publish", topic(own_and_other("dev-A")[name]), A), name
    # the shutdown command still reaches it, and it can report on the job
    jobs = topics.jobs_prefix("dev-A")
    assert is_allowed(quarantined, "iot:Connect", client("dev-A"), A)
    assert is_allowed(quarantined, "iot:Subscribe", topicfilter(f"{jobs}/notify-next"), A)
    assert is_allowed(quarantined, "iot:Receive", topic(f"{jobs}/notify-next"), A)
    assert is_allowed(quarantined, "iot:Publish", topic(f"{jobs}/job-1/update"), A)


def test_quarantine_deny_names_exact_topics_without_mqtt_wildcards(quarantined):
    deny = quarantined[1]
    for statement in deny["Statement"]:
        assert statement["Effect"] == "Deny"
        for resource in statement["Resource"]:
            text = str(resource)
            assert "#" not in text and "+" not in text and "*" not in text, text


def test_policies_use_no_iot_star_and_no_bare_star_resource(quarantined, claim_policy):
    for document in quarantined + claim_policy:
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert "iot:*" not in actions and "*" not in actions
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert "*" not in resources


def test_claim_certificate_may_only_run_fleet_provisioning(claim_policy, dev):
    template_name = dev.stacks.identity.provisioning.template_name
    claim = Connection(client_id="claim-7f3a")
    assert is_allowed(claim_policy, "iot:Connect", client("claim-7f3a"), claim)
    for prefix in topics.provisioning_prefixes(template_name):
        assert is_allowed(claim_policy, "iot:Publish", topic(f"{prefix}/json"), claim)
        assert is_allowed(claim_policy, "iot:Subscribe", topicfilter(f"{prefix}/json/accepted"), claim)
        assert is_allowed(claim_policy, "iot:Receive", topic(f"{prefix}/json/accepted"), claim)
    # It cannot impersonate a device, publish data, or run another template.
    assert not is_allowed(claim_policy, "iot:Connect", client("dev-A"), Connection(client_id="dev-A"))
    assert not is_allowed(claim_policy, "iot:Publish", topic(topics.alerts_topic("dev-A")), claim)
    other = "$aws/provisioning-templates/someone-else/provision/json"
    assert not is_allowed(claim_policy, "iot:Publish", topic(other), claim)


def test_evaluator_honours_explicit_deny_and_wildcards():
    # Guard the guard: the evaluator itself must implement the semantics the tests rely on.
    allow_all_topics = {"Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": topic("*")}]}
    deny_one = {"Statement": [{"Effect": "Deny", "Action": "iot:Publish", "Resource": topic("a/b")}]}
    someone = Connection(client_id="x")
    assert is_allowed([allow_all_topics], "iot:Publish", topic("a/c"), someone)
    assert not is_allowed([allow_all_topics, deny_one], "iot:Publish", topic("a/b"), someone)
    assert not is_allowed([deny_one], "iot:Publish", topic("a/c"), someone)
    literal_plus = {"Statement": [{"Effect": "Allow", "Action": "iot:Subscribe", "Resource": topicfilter("a/+")}]}
    assert not is_allowed([literal_plus], "iot:Subscribe", topicfilter("a/b"), someone)
    assert is_allowed([literal_plus], "iot:Subscribe", topicfilter("a/+"), someone)
