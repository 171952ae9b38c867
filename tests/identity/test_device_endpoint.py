"""The device endpoint: MQTT over TLS with X.509 client certificates, TLS 1.3 by default."""

import pytest

from tests.infra.synth import synthesise


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
