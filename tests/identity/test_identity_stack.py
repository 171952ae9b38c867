"""IdentityStack templates: registry, provisioning paths, token API, tables, least privilege."""

import json
import subprocess

import pytest
from aws_cdk.assertions import Match

from stacks.config import ConfigError
from tests.infra.synth import ROOT, resources, synthesise
from tests.infra.test_security_checks import CFN_LINT
from tools.fleetctl.cli import main as fleetctl
from tools.fleetctl.session import PASSWORD_POLICY


def identity(s):
    return s.template_json(s.stacks.identity)


# --- registry ------------------------------------------------------------------------------

def test_thing_type_with_searchable_serial_model_firmware(dev):
    dev.template(dev.stacks.identity).has_resource_properties("AWS::IoT::ThingType", {
        "ThingTypeName": "fleetwarden-dev-device",
        "ThingTypeProperties": {"SearchableAttributes": ["serial", "model", "firmware"],
                                "ThingTypeDescription": Match.any_value()},
    })


def test_fleet_and_quarantine_groups(dev):
    names = {g["Properties"]["ThingGroupName"]
             for g in resources(identity(dev), "AWS::IoT::ThingGroup").values()}
    assert names == {"fleetwarden-dev-fleet", "fleetwarden-dev-quarantine"}


def test_quarantine_policy_is_attached_to_the_quarantine_group(dev):
    calls = [r for r in resources(identity(dev), "Custom::AWS").values()]
    attach = [c for c in calls if "attachPolicy" in json.dumps(c["Properties"]["Create"])]
    assert len(attach) == 1
    create = json.dumps(attach[0]["Properties"]["Create"])
    assert '\\"policyName\\":\\"fleetwarden-dev-quarantine\\"' in create
    assert '"RegistryQuarantineGroup' in create  # target: the group's ARN
    assert "detachPolicy" in json.dumps(attach[0]["Properties"]["Delete"])


# --- fleet provisioning --------------------------------------------------------------------

def test_provisioning_template_uses_the_hook_and_creates_a_fleet_device(dev):
    templates = resources(identity(dev), "AWS::IoT::ProvisioningTemplate")
    assert len(templates) == 1
    props = next(iter(templates.values()))["Properties"]
    assert props["TemplateName"] == "fleetwarden-dev-field"
    assert props["Enabled"] is True and props["TemplateType"] == "FLEET_PROVISIONING"
    assert props["PreProvisioningHook"]["PayloadVersion"] == "2020-04-01"
    assert props["PreProvisioningHook"]["TargetArn"]["Fn::GetAtt"][0].startswith(
        "FleetProvisioningPreProvisioningHook")
    body = json.loads(props["TemplateBody"])
    assert set(body["Parameters"]) == {"SerialNumber", "ProvisioningToken", "AWS::IoT::Certificate::Id"}
    thing = body["Resources"]["thing"]["Properties"]
    assert thing["ThingName"] == {"Ref": "SerialNumber"}
    assert thing["ThingGroups"] == ["fleetwarden-dev-fleet"]
    assert thing["ThingTypeName"] == "fleetwarden-dev-device"
    assert body["Resources"]["certificate"]["Properties"]["Status"] == "ACTIVE"
    assert body["Resources"]["policy"]["Properties"]["PolicyName"] == "fleetwarden-dev-device"


def test_only_iot_may_invoke_the_hook_for_this_template(dev):
    permissions = resources(identity(dev), "AWS::Lambda::Permission")
    hook = [p["Properties"] for p in permissions.values()
            if p["Properties"]["FunctionName"]["Fn::GetAtt"][0].startswith("FleetProvisioningPreProvisioningHook")]
    assert len(hook) == 1
    assert hook[0]["Principal"] == "iot.amazonaws.com"
    assert "provisioningtemplate/fleetwarden-dev-field" in json.dumps(hook[0]["SourceArn"])


def test_hook_answers_within_the_five_second_limit(dev):
    functions = resources(identity(dev), "AWS::Lambda::Function")
    hook = next(f["Properties"] for k, f in functions.items() if k.startswith("FleetProvisioningPreProvisioningHook"))
    assert hook["Timeout"] < 5
    assert hook["Environment"]["Variables"]["SERIAL_PATTERN"] == r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$"


# --- factory CA and JITP -------------------------------------------------------------------

@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    """A CA and a verification certificate made by fleetctl, as a manufacturer would."""
    work = tmp_path_factory.mktemp("factory")
    assert fleetctl(["ca", "create", "--out-dir", str(work / "ca")]) == 0
    assert fleetctl(["ca", "verification-cert", "--ca-dir", str(work / "ca"),
                     "--registration-code", "0123456789abcdef", "--out", str(work / "verify.pem")]) == 0
    return work


def test_no_ca_configured_means_no_jitp(dev):
    assert not resources(identity(dev), "AWS::IoT::CACertificate")


def test_configured_ca_is_registered_with_jitp(factory, tmp_path):
    ca_pem = (factory / "ca" / "ca.cert.pem").read_text()
    s = synthesise("dev", tmp_path, {
        "ca_certificate_file": str(factory / "ca" / "ca.cert.pem"),
        "ca_verification_certificate_file": str(factory / "verify.pem"),
    })
    cas = resources(identity(s), "AWS::IoT::CACertificate")
    assert len(cas) == 1
    props = next(iter(cas.values()))["Properties"]
    assert props["CACertificatePem"] == ca_pem
    assert props["Status"] == "ACTIVE" and props["AutoRegistrationStatus"] == "ENABLE"
    assert props["CertificateMode"] == "DEFAULT"
    assert props["VerificationCertificatePem"] == (factory / "verify.pem").read_text()
    body = json.loads(props["RegistrationConfig"]["TemplateBody"])
    thing = body["Resources"]["thing"]["Properties"]
    assert thing["ThingName"] == {"Ref": "AWS::IoT::Certificate::CommonName"}
    assert thing["ThingGroups"] == ["fleetwarden-dev-fleet"]
    assert body["Resources"]["certificate"]["Properties"] == {
        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}
    assert body["Resources"]["policy"]["Properties"]["PolicyName"] == "fleetwarden-dev-device"
    assert props["RegistrationConfig"]["RoleArn"]["Fn::GetAtt"][0].startswith("ProvisioningRole")


def test_ca_without_verification_certificate_registers_sni_only(factory, tmp_path):
    s = synthesise("dev", tmp_path, {"ca_certificate_file": str(factory / "ca" / "ca.cert.pem")})
    props = next(iter(resources(identity(s), "AWS::IoT::CACertificate").values()))["Properties"]
    assert props["CertificateMode"] == "SNI_ONLY"
    assert "VerificationCertificatePem" not in props


def test_ca_file_holding_a_private_key_is_refused(factory):
    from tests.test_config import context_with
    from stacks.config import load_config
    with pytest.raises(ConfigError, match="private key"):
        load_config(context_with(ca_certificate_file=str(factory / "ca" / "ca.key.pem")))


# --- declared devices ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def csrs(tmp_path_factory):
    work = tmp_path_factory.mktemp("devices")
    for serial in ("SN-0001", "SN-0002"):
        assert fleetctl(["device", "csr", "--serial", serial, "--out-dir", str(work)]) == 0
    return work


def test_declared_devices_become_things_certificates_and_attachments(csrs, tmp_path):
    devices = [{"name": n, "csr_file": str(csrs / f"{n}.csr.pem")} for n in ("SN-0001", "SN-0002")]
    s = synthesise("dev", tmp_path, {"declared_devices": devices})
    assert s.stacks.devices is not None
    template_json = s.template_json(s.stacks.devices)
    certificates = resources(template_json, "AWS::IoT::Certificate")
    assert {c["Properties"]["CertificateSigningRequest"] for c in certificates.values()} == {
        (csrs / f"{n}.csr.pem").read_text() for n in ("SN-0001", "SN-0002")}
    assert all(c["Properties"]["Status"] == "ACTIVE" for c in certificates.values())
    assert {t["Properties"]["ThingName"] for t in resources(template_json, "AWS::IoT::Thing").values()} == {
        "SN-0001", "SN-0002"}
    assert len(resources(template_json, "AWS::IoT::ThingPrincipalAttachment")) == 2
    attachments = resources(template_json, "AWS::IoT::PolicyPrincipalAttachment")
    assert len(attachments) == 2
    assert {a["Properties"]["PolicyName"] for a in attachments.values()} == {"fleetwarden-dev-device"}
    assert s.stacks.identity in s.stacks.devices.dependencies  # the policy exists first
    lint = subprocess.run([CFN_LINT, "--config-file", str(ROOT / ".cfnlintrc.yaml"), "--",
                           str(s.outdir / f"{s.stacks.devices.artifact_id}.template.json")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    # The device keys exist only on the devices: nothing synthesised holds a private key.
    for path in s.outdir.rglob("*.json"):
        assert "PRIVATE KEY" not in path.read_text(), path


def _joined(value) -> str:
    """A template string value with Fn::Join flattened and each Ref written as ${Name}."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return "${" + value["Ref"] + "}"
    separator, parts = value["Fn::Join"]
    return separator.join(_joined(part) for part in parts)


def test_declared_devices_join_the_fleet_group_the_defender_profile_targets(csrs, tmp_path):
    """AddThingToThingGroup on create, RemoveThingFromThingGroup on delete (AWS IoT API
    reference; ResourceNotFoundException is a documented error of the latter), allowed on this
    thing and the fleet group only."""
    devices = [{"name": "SN-0001", "csr_file": str(csrs / "SN-0001.csr.pem")}]
    s = synthesise("dev", tmp_path, {"declared_devices": devices})
    template_json = s.template_json(s.stacks.devices)
    (call,) = resources(template_json, "Custom::AWS").values()
    thing_ref = "${" + next(iter(resources(template_json, "AWS::IoT::Thing"))) + "}"
    create, delete = (json.loads(_joined(call["Properties"][key])) for key in ("Create", "Delete"))
    membership = {"thingGroupName": "fleetwarden-dev-fleet", "thingName": thing_ref}
    assert (create["service"], create["action"]) == ("Iot", "addThingToThingGroup")
    assert create["parameters"] == membership
    assert (delete["action"], delete["parameters"]) == ("removeThingFromThingGroup", membership)
    assert delete["ignoreErrorCodesMatching"] == "ResourceNotFoundException"
    assert json.loads(_joined(call["Properties"]["Update"]))["action"] == "addThingToThingGroup"
    (policy,) = resources(template_json, "AWS::IAM::Policy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup"]
    prefix = "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}"
    assert [_joined(r) for r in statement["Resource"]] == [
        f"{prefix}:thing/SN-0001", f"{prefix}:thinggroup/fleetwarden-dev-fleet"]
    # The group the Defender profile targets is the one the device joins.
    profile = next(iter(resources(s.template_json(s.stacks.defense), "AWS::IoT::SecurityProfile").values()))
    assert "RegistryFleetGroup" in json.dumps(profile["Properties"]["TargetArns"])
    group = next(g["Properties"] for k, g in resources(identity(s), "AWS::IoT::ThingGroup").items()
                 if k.startswith("RegistryFleetGroup"))
    assert group["ThingGroupName"] == "fleetwarden-dev-fleet"


def test_no_devices_stack_without_declared_devices(dev):
    assert dev.stacks.devices is None


def test_declared_devices_over_the_cap_stop_synthesis_pointing_to_jitp(csrs):
    from tests.test_config import context_with
    from stacks.config import load_config
    devices = [{"name": "SN-0001", "csr_file": str(csrs / "SN-0001.csr.pem")}] * 3
    with pytest.raises(ConfigError, match="over the cap of 2.*JITP.*fleet provisioning"):
        load_config(context_with(declared_devices=devices, declared_devices_cap=2))


@pytest.mark.parametrize("entry,message", [
    ({"name": "SN-0002", "csr_file": "SN-0001.csr.pem"}, "common name"),
    ({"name": "bad name!", "csr_file": "SN-0001.csr.pem"}, "serial_pattern"),
    ({"name": "claim-0001", "csr_file": "SN-0001.csr.pem"}, "serial_pattern"),
    ({"name": "SN-0001", "csr_file": "missing.pem"}, "no such file"),
    ({"name": "SN-0001", "csr_file": "SN-0001.key.pem"}, "private key"),
    ({"name": "SN-0001"}, "exactly 'name' and 'csr_file'"),
])
def test_bad_declared_device_is_a_clear_config_error(csrs, entry, message):
    from tests.test_config import context_with
    from stacks.config import load_config
    if "csr_file" in entry:
        entry = {**entry, "csr_file": str(csrs / entry["csr_file"])}
    with pytest.raises(ConfigError, match=message):
        load_config(context_with(declared_devices=[entry]))


# --- token API and operators ---------------------------------------------------------------

def test_operator_pool_requires_mfa_and_has_an_admins_group(dev):
    t = dev.template(dev.stacks.identity)
    t.has_resource_properties("AWS::Cognito::UserPool", {
        "MfaConfiguration": "ON",
        "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
        "Policies": {"PasswordPolicy": Match.object_like({"MinimumLength": 14})},
    })
    t.has_resource_properties("AWS::Cognito::UserPoolGroup", {"GroupName": "admins"})


def test_fleetctl_checks_new_passwords_against_the_pool_policy_as_deployed(dev):
    # fleetctl login checks a first-login password before sending it; its copy of the policy must not drift.
    pools = resources(identity(dev), "AWS::Cognito::UserPool").values()
    (policy,) = [p["Properties"]["Policies"]["PasswordPolicy"] for p in pools]
    assert {k: policy[k] for k in PASSWORD_POLICY} == PASSWORD_POLICY


def test_token_api_is_cognito_authorised_validated_throttled_and_logged(dev):
    t = dev.template(dev.stacks.identity)
    t.has_resource_properties("AWS::ApiGateway::Authorizer", {
        "Type": "COGNITO_USER_POOLS", "IdentitySource": "method.request.header.Authorization"})
    methods = resources(identity(dev), "AWS::ApiGateway::Method")
    post = [m["Properties"] for m in methods.values() if m["Properties"]["HttpMethod"] == "POST"]
    assert len(post) == 1
    assert post[0]["AuthorizationType"] == "COGNITO_USER_POOLS"
    assert "RequestValidatorId" in post[0] and "application/json" in post[0]["RequestModels"]
    assert not [m for m in methods.values() if m["Properties"]["AuthorizationType"] == "NONE"]
    t.has_resource_properties("AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True})
    t.has_resource_properties("AWS::ApiGateway::Stage", {
        "StageName": "v1",
        "TracingEnabled": True,
        "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
        "MethodSettings": [Match.object_like({"ThrottlingRateLimit": 5, "ThrottlingBurstLimit": 10,
                                              "DataTraceEnabled": False, "LoggingLevel": "ERROR"})],
    })


def test_token_ttl_reaches_the_function(tmp_path):
    s = synthesise("dev", tmp_path, {"provisioning_token_ttl_minutes": 5})
    functions = resources(identity(s), "AWS::Lambda::Function")
    api = next(f["Properties"] for k, f in functions.items() if k.startswith("ProvisioningTokenApiIssueToken"))
    assert api["Environment"]["Variables"]["TOKEN_TTL_SECONDS"] == "300"
    assert api["Environment"]["Variables"]["ADMIN_GROUP"] == "admins"


def test_api_gateway_account_role_only_in_the_singleton_owner(dev, prod):
    assert not resources(identity(dev), "AWS::ApiGateway::Account")
    assert len(resources(identity(prod), "AWS::ApiGateway::Account")) == 1


# --- tables --------------------------------------------------------------------------------

def test_tables_are_kms_encrypted_with_pitr_and_token_ttl(dev):
    tables = {t["Properties"]["TableName"]: t["Properties"]
              for t in resources(identity(dev), "AWS::DynamoDB::Table").values()}
    assert set(tables) == {"fleetwarden-dev-audit", "fleetwarden-dev-provisioning-tokens"}
    for props in tables.values():
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert tables["fleetwarden-dev-provisioning-tokens"]["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at", "Enabled": True}
    audit = tables["fleetwarden-dev-audit"]
    assert audit["KeySchema"] == [{"AttributeName": "event_id", "KeyType": "HASH"}]
    assert audit["GlobalSecondaryIndexes"][0]["IndexName"] == "by_target"


# --- least privilege -----------------------------------------------------------------------

def _function_policies(template_json):
    for policy in resources(template_json, "AWS::IAM::Policy").values():
        roles = json.dumps(policy["Properties"].get("Roles", []))
        yield roles, policy["Properties"]["PolicyDocument"]["Statement"]


def test_function_roles_have_no_wildcard_actions_and_star_only_for_xray(dev):
    for roles, statements in _function_policies(identity(dev)):
        for statement in statements:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a == "*" or a.endswith(":*") for a in actions), (roles, actions)
            if statement["Resource"] == "*":
                assert all(a.startswith("xray:") for a in actions), (roles, actions)


def test_hook_may_only_consume_tokens_write_audit_and_read_things(dev):
    hook = [s for roles, st in _function_policies(identity(dev)) if "PreProvisioningHook" in roles for s in st]
    actions = {a for s in hook for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert actions == {
        "dynamodb:UpdateItem", "dynamodb:PutItem", "iot:ListThingPrincipals",
        "iot:DescribeCertificate",  # a retried RegisterThing: only by a certificate still ACTIVE
        "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey",
        "logs:CreateLogStream", "logs:PutLogEvents",
        "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    }


def test_functions_run_on_the_latest_python_with_tracing_and_bounded_concurrency(dev):
    for logical_id, function in resources(identity(dev), "AWS::Lambda::Function").items():
        props = function["Properties"]
        if logical_id.startswith("AWS679f53fac"):  # CDK's deploy-time SDK-call function
            continue
        assert props["Runtime"] == "python3.14"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["ReservedConcurrentExecutions"] > 0
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert any("AWSLambdaPowertoolsPythonV3-python314-x86_64" in json.dumps(layer)
                   for layer in props["Layers"])


# --- fleet indexing (account-wide: the owning stage) ----------------------------------------------

def _indexing_calls(s):
    return [c for c in resources(identity(s), "Custom::AWS").values()
            if "updateIndexingConfiguration" in json.dumps(c["Properties"]["Create"])]


def test_fleet_indexing_of_registry_and_connectivity_in_the_owning_stage(prod):
    [call] = _indexing_calls(prod)
    for event in ("Create", "Update"):
        sent = json.loads(call["Properties"][event])  # no tokens in it: a plain JSON string
        assert sent["action"] == "updateIndexingConfiguration"
        assert sent["parameters"]["thingIndexingConfiguration"] == {
            "thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}
    deleted = json.dumps(call["Properties"]["Delete"])
    assert '\\"thingIndexingMode\\":\\"OFF\\"' in deleted and '\\"thingConnectivityIndexingMode\\":\\"OFF\\"' in deleted
    policies = [p for p in resources(identity(prod), "AWS::IAM::Policy").values()
                if "iot:UpdateIndexingConfiguration" in json.dumps(p)]
    assert len(policies) == 1
    [statement] = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "iot:UpdateIndexingConfiguration" and statement["Resource"] == "*"


def test_no_fleet_indexing_outside_the_owning_stage(dev):
    assert _indexing_calls(dev) == []
