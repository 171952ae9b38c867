"""The pre-provisioning hook in the IdentityStack template: what IoT invokes, kept warm per
`hook_provisioned_concurrency` (0 in dev: the function itself; > 0: an alias with provisioned
concurrency), with IoT's invoke permission on exactly that target."""

from __future__ import annotations

import json

import pytest

from tests.infra.synth import resources, role_actions, synthesise

HOOK = "FleetProvisioningPreProvisioningHook"


def identity(s) -> dict:
    return s.template_json(s.stacks.identity)


def hook_function(template: dict) -> tuple[str, dict]:
    [(logical_id, function)] = [(k, f) for k, f in resources(template, "AWS::Lambda::Function").items()
                                if k.startswith(HOOK)]
    return logical_id, function["Properties"]


def hook_template(template: dict) -> dict:
    [(logical_id, provisioning)] = resources(template, "AWS::IoT::ProvisioningTemplate").items()
    return {"id": logical_id, **provisioning}


def iot_permissions(template: dict) -> list[dict]:
    return [p["Properties"] for p in resources(template, "AWS::Lambda::Permission").values()
            if p["Properties"]["Principal"] == "iot.amazonaws.com"]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    return synthesise("dev", tmp_path_factory.mktemp("cdk-hook-warm"), {"hook_provisioned_concurrency": 1})


def test_without_provisioned_concurrency_iot_invokes_the_function(dev):
    template = identity(dev)
    function_id, function = hook_function(template)
    assert not resources(template, "AWS::Lambda::Alias")
    assert not resources(template, "AWS::Lambda::Version")
    assert hook_template(template)["Properties"]["PreProvisioningHook"]["TargetArn"] == {
        "Fn::GetAtt": [function_id, "Arn"]}
    [permission] = iot_permissions(template)
    assert permission["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert function["ReservedConcurrentExecutions"] == 20


def test_with_provisioned_concurrency_iot_invokes_the_warm_alias(warm):
    template = identity(warm)
    function_id, _ = hook_function(template)
    [(version_id, version)] = resources(template, "AWS::Lambda::Version").items()
    [(alias_id, alias)] = resources(template, "AWS::Lambda::Alias").items()
    assert version["Properties"]["FunctionName"] == {"Ref": function_id}
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 1}

    provisioning = hook_template(template)
    assert provisioning["Properties"]["PreProvisioningHook"] == {
        "TargetArn": {"Ref": alias_id}, "PayloadVersion": "2020-04-01"}  # Ref of an alias: its ARN
    # IoT may invoke the alias only (a permission on an alias does not cover the function itself),
    # for this template and account only (confused deputy).
    [permission] = iot_permissions(template)
    assert permission["FunctionName"] == {"Ref": alias_id}
    assert permission["Action"] == "lambda:InvokeFunction"
    assert "provisioningtemplate/fleetwarden-dev-field" in json.dumps(permission["SourceArn"])
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}
    # The template is created once IoT may invoke its target.
    [permission_id] = [k for k, p in resources(template, "AWS::Lambda::Permission").items()
                       if p["Properties"] == permission]
    assert {alias_id, permission_id} <= set(provisioning["DependsOn"])


def test_reserved_concurrency_grows_with_what_is_provisioned(tmp_path):
    """Lambda cannot provision more than is reserved ("Managing Lambda provisioned concurrency")."""
    s = synthesise("dev", tmp_path, {"hook_provisioned_concurrency": 30})
    _, function = hook_function(identity(s))
    assert function["ReservedConcurrentExecutions"] == 30
    [alias] = resources(identity(s), "AWS::Lambda::Alias").values()
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 30}


def test_the_function_timeout_is_under_iots_five_seconds(dev):
    _, function = hook_function(identity(dev))
    assert function["Timeout"] < 5


def test_the_hook_reads_certificate_status_only(dev):
    """A retried registration checks the certificate is not contained; nothing writes certificates."""
    actions = role_actions(identity(dev), HOOK)
    assert {a for a in actions if a.startswith("iot:")} == {"iot:ListThingPrincipals", "iot:DescribeCertificate"}
    statements = [s for p in resources(identity(dev), "AWS::IAM::Policy").values()
                  if any(r["Ref"].startswith(HOOK) for r in p["Properties"]["Roles"])
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    [describe] = [s for s in statements if s["Action"] == "iot:DescribeCertificate"]
    assert json.dumps(describe["Resource"]).endswith(':cert/*"]]}')
