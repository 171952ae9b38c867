"""The device endpoint: MQTT over TLS with X.509 client certificates, TLS 1.3 by default."""

import json
import re

import pytest

from stacks.config import ConfigError, load_config
from tests.infra.synth import cdk_context, synthesise


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_domain_configuration_is_mqtt_x509_tls13(synthesised, stage):
    s = synthesised[stage]
    s.template(s.stacks.identity).has_resource_properties("AWS::IoT::DomainConfiguration", {
        "DomainConfigurationName": f"fleetwarden-{stage}-devices",
        "DomainConfigurationStatus": "ENABLED",
        "ServiceType": "DATA",
        "ApplicationProtocol": "SECURE_MQTT",
        "AuthenticationType": "AWS_X509",
        "TlsConfig": {"SecurityPolicy": "IoTSecurityPolicy_TLS13_1_3_2022_10"},
    })


def test_no_custom_authoriser_or_other_protocol_on_the_endpoint(dev):
    resources = dev.template_json(dev.stacks.identity)["Resources"]
    configs = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::IoT::DomainConfiguration"]
    assert len(configs) == 1
    assert "AuthorizerConfig" not in configs[0]
    assert "DomainName" not in configs[0]  # AWS-managed iot:Data-ATS domain


def test_tls12_policy_is_selectable(tmp_path):
    s = synthesise("dev", tmp_path, {"tls_security_policy": "IoTSecurityPolicy_TLS13_1_2_2022_10"})
    s.template(s.stacks.identity).has_resource_properties(
        "AWS::IoT::DomainConfiguration",
        {"TlsConfig": {"SecurityPolicy": "IoTSecurityPolicy_TLS13_1_2_2022_10"}},
    )


def test_endpoint_is_exported_for_the_device_team(dev):
    outputs = dev.template_json(dev.stacks.identity)["Outputs"]
    name = next(o for k, o in outputs.items() if "DomainConfigurationName" in k)
    assert name["Value"] == "fleetwarden-dev-devices"
    assert "describe-domain-configuration" in name["Description"]
    assert any("DomainConfigurationArn" in k for k in outputs)
    assert any(o["Value"] == "IoTSecurityPolicy_TLS13_1_3_2022_10" for o in outputs.values())


# --- the endpoint is the only way in: its host name is what the policies admit -----------------

def _identity(s):
    return s.template_json(s.stacks.identity)


def _policy(template, logical_prefix):
    [document] = [r["Properties"]["PolicyDocument"] for k, r in template["Resources"].items()
                  if r["Type"] == "AWS::IoT::Policy" and k.startswith(logical_prefix)]
    return document


def _actions(statement):
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def _confined_statements(document):
    """The Allow statements of Connect or Publish: each must carry the domain condition."""
    return [s for s in document["Statement"]
            if s["Effect"] == "Allow" and {"iot:Connect", "iot:Publish"} & set(_actions(s))]


def _host_name_reads(template):
    return {k: r for k, r in template["Resources"].items() if r["Type"] == "Custom::AWS"
            and "describeDomainConfiguration" in json.dumps(r["Properties"]["Create"])}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_aws_managed_host_name_is_read_back_and_is_the_only_domain_the_policies_admit(synthesised, stage):
    template = _identity(synthesised[stage])
    [(call_id, call)] = _host_name_reads(template).items()
    create = json.loads(call["Properties"]["Create"])
    assert create["parameters"] == {"domainConfigurationName": f"fleetwarden-{stage}-devices"}
    assert create["outputPaths"] == ["domainName"]
    host = {"Fn::GetAtt": [call_id, "domainName"]}
    for logical_prefix in ("RegistryDevicePolicy", "FleetProvisioningClaimPolicy"):
        statements = _confined_statements(_policy(template, logical_prefix))
        assert {a for s in statements for a in _actions(s)} == {"iot:Connect", "iot:Publish"}
        for statement in statements:
            assert statement["Condition"]["StringEquals"]["iot:DomainName"] == host, statement["Sid"]
    assert template["Outputs"]["DeviceEndpointHost"]["Value"] == host


def test_host_name_read_may_only_describe_this_domain_configuration(dev):
    template = _identity(dev)
    [call_id] = _host_name_reads(template)
    policies = [r["Properties"]["PolicyDocument"]["Statement"] for r in template["Resources"].values()
                if r["Type"] == "AWS::IAM::Policy"
                and "iot:DescribeDomainConfiguration" in json.dumps(r["Properties"]["PolicyDocument"])]
    assert policies == [[{
        "Action": "iot:DescribeDomainConfiguration",
        "Effect": "Allow",
        "Resource": {"Fn::GetAtt": [next(k for k, r in template["Resources"].items()
                                         if r["Type"] == "AWS::IoT::DomainConfiguration"), "Arn"]},
    }]]
    assert template["Resources"][call_id]["DependsOn"]


CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
VALIDATION = "arn:aws:acm:eu-west-1:123456789012:certificate/11111111-2222-4333-8444-555555555555"


def test_customer_owned_domain_is_the_only_domain_the_policies_admit(tmp_path):
    s = synthesise("dev", tmp_path, {"device_domain_name": "devices.example.com",
                                     "device_domain_certificate_arn": CERT,
                                     "device_domain_validation_certificate_arn": VALIDATION})
    template = _identity(s)
    s.template(s.stacks.identity).has_resource_properties("AWS::IoT::DomainConfiguration", {
        "DomainName": "devices.example.com",
        "ServerCertificateArns": [CERT],
        "ValidationCertificateArn": VALIDATION,
        "ApplicationProtocol": "SECURE_MQTT",
        "AuthenticationType": "AWS_X509",
    })
    assert _host_name_reads(template) == {}  # the name is known: nothing to read back
    for logical_prefix in ("RegistryDevicePolicy", "FleetProvisioningClaimPolicy"):
        for statement in _confined_statements(_policy(template, logical_prefix)):
            assert statement["Condition"]["StringEquals"]["iot:DomainName"] == "devices.example.com"
    assert template["Outputs"]["DeviceEndpointHost"]["Value"] == "devices.example.com"


@pytest.mark.parametrize("settings, message", [
    ({"device_domain_name": "devices.example.com"},
     "stages.dev.device_domain_name and stages.dev.device_domain_certificate_arn go together"),
    ({"device_domain_certificate_arn": CERT}, "go together: set both for your own device domain, or neither"),
    ({"device_domain_validation_certificate_arn": VALIDATION},
     "stages.dev.device_domain_validation_certificate_arn needs device_domain_name"),
    ({"device_domain_name": "Devices.Example.com", "device_domain_certificate_arn": CERT},
     "stages.dev.device_domain_name = 'Devices.Example.com' is not a lowercase fully qualified domain name"),
    ({"device_domain_name": "*.example.com", "device_domain_certificate_arn": CERT},
     "is not a lowercase fully qualified domain name"),
    ({"device_domain_name": "devices.example.com", "device_domain_certificate_arn": "arn:aws:iam::1:x"},
     "stages.dev.device_domain_certificate_arn = 'arn:aws:iam::1:x' is not an ACM certificate ARN"),
])
def test_device_domain_settings_are_checked_with_one_line_messages(settings, message):
    context = cdk_context()
    context["fleetwarden"]["stages"]["dev"].update(settings)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(context)
