"""Device policies, evaluated as IoT Core would: no device can act as, or read from, another,
and nothing gets in except through the Fleetwarden endpoint."""

import json

import pytest

from lambdas.shared import topics
from lambdas.shared.topics import rule_name
from tests.identity.iot_policy_eval import Connection, client, is_allowed, resolve, topic, topicfilter

RULE = rule_name("dev", "telemetry")  # the telemetry rule the stacks create
# Host names shaped as the docs show them ("HTTPS publish": a3qjEXAMPLEffp-ats.iot.us-west-2...;
# AWS CLI describe-domain-configuration: d01645582h24k4we2vblw-ats.iot.us-west-2...).
FLEETWARDEN = "d01645582h24k4we2vblw-ats.iot.eu-west-1.amazonaws.com"  # our domain configuration
DEFAULT_ENDPOINT = "a3qjexampleffp-ats.iot.eu-west-1.amazonaws.com"  # the account's iot:Data-ATS


def host_name_call(s) -> str:
    """The deploy-time DescribeDomainConfiguration of the stage's own domain configuration."""
    resources = s.template_json(s.stacks.identity)["Resources"]
    describe = {"action": "describeDomainConfiguration", "service": "Iot",
                "parameters": {"domainConfigurationName": f"fleetwarden-{s.stage}-devices"}}
    found = [k for k, r in resources.items() if r["Type"] == "Custom::AWS"
             and isinstance(r["Properties"]["Create"], str)  # calls naming other resources are joins
             and describe.items() <= json.loads(r["Properties"]["Create"]).items()]
    assert len(found) == 1
    return found[0]


def policy(s, logical_prefix: str) -> dict:
    """The deployed document, with our endpoint's host name where CloudFormation puts it."""
    resources = s.template_json(s.stacks.identity)["Resources"]
    found = [r["Properties"]["PolicyDocument"] for k, r in resources.items()
             if r["Type"] == "AWS::IoT::Policy" and k.startswith(logical_prefix)]
    assert len(found) == 1, logical_prefix
    return resolve(found[0], {(host_name_call(s), "domainName"): FLEETWARDEN})


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


A = Connection(client_id="dev-A", attached_thing="dev-A", domain_name=FLEETWARDEN)
B_NAME = "dev-B"


def own_and_other(thing):
    return {
        "telemetry": topics.telemetry_topic(RULE, thing),
        "alerts": topics.alerts_topic(thing),
        "metrics": topics.defender_metrics_topic(thing),
        "job update": f"{topics.jobs_prefix(thing)}/job-1/update",
        "shadow update": f"{topics.shadow_prefix(thing)}/update",
        "cert request": topics.cert_rotation_request_topic(thing),
        "cert confirm": topics.cert_rotation_confirm_topic(thing),
    }


def test_device_connects_only_as_itself_and_only_when_attached(device_policy):
    assert is_allowed(device_policy, "iot:Connect", client("dev-A"), A)
    assert not is_allowed(device_policy, "iot:Connect", client(B_NAME), A)
    # A's certificate presented under B's client id: the thing variables are not set.
    as_b = Connection(client_id=B_NAME, attached_thing="dev-A", domain_name=FLEETWARDEN)
    assert not is_allowed(device_policy, "iot:Connect", client(B_NAME), as_b)
    detached = Connection(client_id="dev-A", attached_thing=None, domain_name=FLEETWARDEN)
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
    lambda t: topics.cert_rotation_response_topic(t, topics.ROTATION_CONFIRMED),
    topics.tunnels_notify_topic,
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


def test_device_never_publishes_on_the_tunnel_notify_topic(device_policy):
    """Only AWS IoT secure tunneling writes the destination token there (configure-remote-device.html);
    a device publishing its own would be a forged tunnel."""
    assert not is_allowed(device_policy, "iot:Publish", topic(topics.tunnels_notify_topic("dev-A")), A)


def test_device_has_no_other_iot_actions(device_policy):
    for action in ("iot:UpdateThingShadow", "iot:DeleteThing", "iot:UpdateCertificate",
                   "iot:RetainPublish", "iot:GetRetainedMessage"):
        assert not is_allowed(device_policy, action, "arn:aws:iot:eu-west-1:123456789012:thing/dev-A", A)


def test_quarantine_cuts_data_but_keeps_jobs(quarantined):
    for name in ("telemetry", "alerts", "shadow update", "cert request", "cert confirm"):
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
    claim = Connection(client_id="claim-7f3a", domain_name=FLEETWARDEN)
    assert is_allowed(claim_policy, "iot:Connect", client("claim-7f3a"), claim)
    for prefix in topics.provisioning_prefixes(template_name):
        assert is_allowed(claim_policy, "iot:Publish", topic(f"{prefix}/json"), claim)
        assert is_allowed(claim_policy, "iot:Subscribe", topicfilter(f"{prefix}/json/accepted"), claim)
        assert is_allowed(claim_policy, "iot:Receive", topic(f"{prefix}/json/accepted"), claim)
    # It cannot impersonate a device, publish data, or run another template.
    as_device = Connection(client_id="dev-A", domain_name=FLEETWARDEN)
    assert not is_allowed(claim_policy, "iot:Connect", client("dev-A"), as_device)
    assert not is_allowed(claim_policy, "iot:Publish", topic(topics.alerts_topic("dev-A")), claim)
    other = "$aws/provisioning-templates/someone-else/provision/json"
    assert not is_allowed(claim_policy, "iot:Publish", topic(other), claim)


# --- the Fleetwarden endpoint is the only way in ---------------------------------------------------

@pytest.mark.parametrize("domain", [DEFAULT_ENDPOINT, "d9otherconfig-ats.iot.eu-west-1.amazonaws.com", None],
                         ids=["default endpoint", "another domain configuration", "no server name"])
def test_device_and_claim_certificates_connect_only_through_the_fleetwarden_domain(
        device_policy, claim_policy, domain):
    device = Connection(client_id="dev-A", attached_thing="dev-A", domain_name=domain)
    assert not is_allowed(device_policy, "iot:Connect", client("dev-A"), device)
    claim = Connection(client_id="claim-7f3a", domain_name=domain)
    assert not is_allowed(claim_policy, "iot:Connect", client("claim-7f3a"), claim)


def test_https_publish_through_the_default_endpoint_is_refused(device_policy, claim_policy, dev):
    """HTTPS on 8443 publishes with no Connect and no client id ("HTTPS publish",
    https://docs.aws.amazon.com/iot/latest/developerguide/http.html): only iot:Publish is checked."""
    device = Connection(client_id=None, attached_thing="dev-A", domain_name=DEFAULT_ENDPOINT)
    for name, own in own_and_other("dev-A").items():
        assert not is_allowed(device_policy, "iot:Publish", topic(own), device), name
    # The claim policy names no thing variable, so only the domain condition stops this one.
    claim = Connection(client_id=None, domain_name=DEFAULT_ENDPOINT)
    for prefix in topics.provisioning_prefixes(dev.stacks.identity.provisioning.template_name):
        assert not is_allowed(claim_policy, "iot:Publish", topic(f"{prefix}/json"), claim), prefix
        # the same request naming our endpoint would pass the policy: the condition is what refuses it
        https_to_us = Connection(client_id=None, domain_name=FLEETWARDEN)
        assert is_allowed(claim_policy, "iot:Publish", topic(f"{prefix}/json"), https_to_us)


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


def test_evaluator_refuses_a_domain_condition_the_request_does_not_meet_or_carry():
    only_ours = {"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": client("x"),
                                "Condition": {"StringEquals": {"iot:DomainName": FLEETWARDEN}}}]}
    assert is_allowed([only_ours], "iot:Connect", client("x"), Connection("x", domain_name=FLEETWARDEN))
    elsewhere = Connection("x", domain_name=DEFAULT_ENDPOINT)
    assert not is_allowed([only_ours], "iot:Connect", client("x"), elsewhere)
    assert not is_allowed([only_ours], "iot:Connect", client("x"), Connection("x"))
