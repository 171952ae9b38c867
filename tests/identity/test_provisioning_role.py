"""The provisioning role is AWS's AWSIoTThingsRegistration policy minus documented removals,
with each action on the resource types it takes, and the templates still justify each removal."""

import json

import pytest

from tests.infra.synth import actions_of, resources, synthesise
from tools.fleetctl.cli import main as fleetctl

# AWSIoTThingsRegistration, policy version v3 (default), Resource "*": the page
# "AWSIoTThingsRegistration - AWS Managed Policy",
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSIoTThingsRegistration.html
# The JITP and fleet-provisioning pages ("Just-in-time provisioning", "Provisioning devices that
# don't have device certificates using fleet provisioning") say to give the provisioning role it.
MANAGED_POLICY_ACTIONS = [
    "iot:AddThingToThingGroup", "iot:AttachPolicy", "iot:AttachPrincipalPolicy",
    "iot:AttachThingPrincipal", "iot:CreateCertificateFromCsr", "iot:CreatePolicy",
    "iot:CreateThing", "iot:DescribeCertificate", "iot:DescribeThing", "iot:DescribeThingGroup",
    "iot:DescribeThingType", "iot:DetachPolicy", "iot:DetachThingPrincipal", "iot:GetPolicy",
    "iot:ListAttachedPolicies", "iot:ListPolicyPrincipals", "iot:ListPrincipalPolicies",
    "iot:ListPrincipalThings", "iot:ListTargetsForPolicy", "iot:ListThingGroupsForThing",
    "iot:ListThingPrincipals", "iot:RegisterCertificate", "iot:RegisterThing",
    "iot:RemoveThingFromThingGroup", "iot:UpdateCertificate", "iot:UpdateThing",
    "iot:UpdateThingGroupsForThing", "iot:AddThingToBillingGroup", "iot:DescribeBillingGroup",
    "iot:RemoveThingFromBillingGroup",
]

# What the "Provisioning templates" page (iot/latest/developerguide/provision-template.html)
# shows our templates never need. test_templates_still_justify_each_removal checks each premise.
REMOVED = {
    "iot:CreateCertificateFromCsr": "certificate resource is an existing CertificateId, not a CSR "
                                    "(the device's MQTT create-from-csr is authorised by its claim policy)",
    "iot:CreatePolicy": "policy resource names an existing policy (PolicyName, no PolicyDocument)",
    "iot:RemoveThingFromThingGroup": "ThingGroups override is DO_NOTHING; a new thing is in no group",
    "iot:AddThingToBillingGroup": "thing resource declares no BillingGroup",
    "iot:DescribeBillingGroup": "thing resource declares no BillingGroup",
    "iot:RemoveThingFromBillingGroup": "thing resource declares no BillingGroup",
}

# Resource types per action: "Actions, resources, and condition keys for AWS IoT",
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsiot.html
# thing / cert: ARN patterns (created at run time); the rest: this stack's resources by ARN;
# "*": actions with no resource type.
THING, CERT, STAR = "thing/*", "cert/*", "*"
GROUP, TYPE, POLICY = "fleet group", "thing type", "device policy"
SCOPE = {
    "iot:CreateThing": {THING}, "iot:DescribeThing": {THING}, "iot:UpdateThing": {THING},
    "iot:ListThingGroupsForThing": {THING}, "iot:ListThingPrincipals": {THING},
    "iot:AddThingToThingGroup": {THING, GROUP}, "iot:UpdateThingGroupsForThing": {THING, GROUP},
    "iot:DescribeCertificate": {CERT}, "iot:UpdateCertificate": {CERT},
    "iot:AttachThingPrincipal": {CERT}, "iot:AttachPolicy": {CERT},
    "iot:AttachPrincipalPolicy": {CERT}, "iot:DetachPolicy": {CERT},
    "iot:DetachThingPrincipal": {CERT}, "iot:ListPrincipalThings": {CERT},
    "iot:GetPolicy": {POLICY}, "iot:ListTargetsForPolicy": {POLICY},
    "iot:DescribeThingGroup": {GROUP}, "iot:DescribeThingType": {TYPE},
    "iot:RegisterThing": {STAR}, "iot:RegisterCertificate": {STAR},
    "iot:ListAttachedPolicies": {STAR}, "iot:ListPrincipalPolicies": {STAR},
    "iot:ListPolicyPrincipals": {STAR},
}


def _label(resource) -> str:
    """A synthesised Resource entry as one of the scope labels above."""
    if resource == "*":
        return STAR
    if "Fn::Join" in resource:
        tail = resource["Fn::Join"][1][-1]
        assert tail in (":thing/*", ":cert/*"), resource
        return tail[1:]
    logical_id = resource["Fn::GetAtt"][0]
    for prefix, label in (("RegistryFleetGroup", GROUP), ("RegistryDeviceType", TYPE),
                          ("RegistryDevicePolicy", POLICY)):
        if logical_id.startswith(prefix):
            return label
    raise AssertionError(f"unexpected resource {resource}")


def _role_policy(template_json) -> list[dict]:
    roles = [r for k, r in resources(template_json, "AWS::IAM::Role").items()
             if k.startswith("ProvisioningRole")]
    assert len(roles) == 1
    role = roles[0]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}}]
    assert "Policies" not in role
    (policy_ref,) = role["ManagedPolicyArns"]
    policy = template_json["Resources"][policy_ref["Ref"]]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _granted(template_json) -> dict[str, set[str]]:
    """Each granted action and the scope labels of the resources it is granted on."""
    granted: dict[str, set[str]] = {}
    for statement in _role_policy(template_json):
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        found = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions_of(statement):
            granted.setdefault(action, set()).update(_label(r) for r in found)
    return granted


def identity(s):
    return s.template_json(s.stacks.identity)


def test_managed_policy_list_is_the_documented_one():
    assert len(MANAGED_POLICY_ACTIONS) == len(set(MANAGED_POLICY_ACTIONS)) == 30
    assert set(REMOVED) <= set(MANAGED_POLICY_ACTIONS)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_role_grants_the_managed_policy_minus_the_documented_removals(synthesised, stage):
    granted = _granted(identity(synthesised[stage]))
    assert set(granted) == set(MANAGED_POLICY_ACTIONS) - set(REMOVED)


def test_each_action_is_on_the_resource_types_it_takes(dev):
    assert _granted(identity(dev)) == SCOPE
    assert set(SCOPE) == set(MANAGED_POLICY_ACTIONS) - set(REMOVED)


def _template_bodies(s) -> dict[str, dict]:
    template = identity(s)
    bodies = {"fleet": json.loads(next(iter(
        resources(template, "AWS::IoT::ProvisioningTemplate").values()))["Properties"]["TemplateBody"])}
    for ca in resources(template, "AWS::IoT::CACertificate").values():
        bodies["jitp"] = json.loads(ca["Properties"]["RegistrationConfig"]["TemplateBody"])
    return bodies


@pytest.fixture(scope="module")
def with_factory_ca(tmp_path_factory):
    """dev with a factory CA (made by fleetctl, as a manufacturer would): JITP and fleet."""
    ca = tmp_path_factory.mktemp("factory-ca")
    assert fleetctl(["ca", "create", "--out-dir", str(ca)]) == 0
    return synthesise("dev", tmp_path_factory.mktemp("cdk-jitp"), {"ca_certificate_file": str(ca / "ca.cert.pem")})


def test_both_paths_use_this_role(with_factory_ca):
    template = identity(with_factory_ca)
    (ca,) = resources(template, "AWS::IoT::CACertificate").values()
    (fleet,) = resources(template, "AWS::IoT::ProvisioningTemplate").values()
    for role_arn in (ca["Properties"]["RegistrationConfig"]["RoleArn"],
                     fleet["Properties"]["ProvisioningRoleArn"]):
        assert role_arn["Fn::GetAtt"][0].startswith("ProvisioningRole")


def test_templates_still_justify_each_removal(with_factory_ca):
    """If a template starts to use one of these features, the removal above is wrong."""
    bodies = _template_bodies(with_factory_ca)
    assert set(bodies) == {"jitp", "fleet"}
    for name, body in bodies.items():
        kinds = {r["Type"] for r in body["Resources"].values()}
        assert kinds == {"AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy"}, name
        for resource in body["Resources"].values():
            props = resource["Properties"]
            if resource["Type"] == "AWS::IoT::Certificate":  # CreateCertificateFromCsr
                assert set(props) == {"CertificateId", "Status"}, name
                assert props["CertificateId"] == {"Ref": "AWS::IoT::Certificate::Id"}, name
            if resource["Type"] == "AWS::IoT::Policy":  # CreatePolicy
                assert set(props) == {"PolicyName"}, name
            if resource["Type"] == "AWS::IoT::Thing":
                assert "BillingGroup" not in props, name  # the three billing-group actions
                assert resource["OverrideSettings"]["ThingGroups"] == "DO_NOTHING", name
