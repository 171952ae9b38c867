"""fleetctl configure: a stage's stack outputs read once with DescribeStacks and stored 0600 under a 0700 dir."""

import json
import os
import stat
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from tools.fleetctl import settings
from tools.fleetctl.errors import InputError, RemoteError

REGION = "eu-west-1"


def _template(outputs: dict[str, str]) -> str:
    # A stack whose only resource is a queue: enough for moto to hold outputs.
    return json.dumps({
        "Resources": {"Handle": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    })


@pytest.fixture
def config_home():
    # conftest's aws_env points FLEETCTL_CONFIG_DIR at an empty directory of the test's own.
    return Path(os.environ[settings.CONFIG_DIR_ENV])


@pytest.fixture
def cloudformation():
    with mock_aws():
        client = boto3.client("cloudformation", region_name=REGION)
        client.create_stack(StackName="Fleetwarden-dev-Identity", TemplateBody=_template({
            "UserPoolId": "eu-west-1_abc", "FleetctlClientId": "client123",
            "ProvisioningTokenApiUrl": "https://tokens.example/prod/"}))
        client.create_stack(StackName="Fleetwarden-dev-Defense", TemplateBody=_template({
            "IncidentsTableName": "fleetwarden-dev-incidents"}))
        yield client


def test_configure_stores_the_outputs_of_the_stage_stacks_and_names_those_missing(config_home, cloudformation):
    stored, missing = settings.configure(cloudformation, "dev", REGION)

    assert stored.get("UserPoolId") == "eu-west-1_abc"
    assert stored.get("IncidentsTableName") == "fleetwarden-dev-incidents"
    assert missing == ["Fleetwarden-dev-Audit", "Fleetwarden-dev-Ingest", "Fleetwarden-dev-Commands"]
    # Read back from disk, as every later command does, and the stage is now the default.
    loaded = settings.load()
    assert loaded == stored
    assert loaded.region == REGION


def test_settings_are_private_to_the_operator(config_home, cloudformation):
    settings.configure(cloudformation, "dev", REGION)
    assert stat.S_IMODE(config_home.stat().st_mode) == 0o700
    assert stat.S_IMODE((config_home / "dev").stat().st_mode) == 0o700
    assert stat.S_IMODE((config_home / "dev" / "settings.json").stat().st_mode) == 0o600
    assert not [p for p in (config_home / "dev").iterdir() if p.name.endswith(".tmp")]


def test_a_stage_without_its_identity_stack_is_refused_and_nothing_is_stored(config_home, cloudformation):
    with pytest.raises(InputError, match="Fleetwarden-prod-Identity not found"):
        settings.configure(cloudformation, "prod", REGION)
    with pytest.raises(InputError, match="run fleetctl configure --stage prod"):
        settings.load("prod")


def test_a_stack_that_rolled_back_its_creation_is_refused(config_home):
    class RolledBack:
        def describe_stacks(self, StackName):
            return {"Stacks": [{"StackName": StackName, "StackStatus": "ROLLBACK_COMPLETE", "Outputs": []}]}

    with pytest.raises(RemoteError, match="ROLLBACK_COMPLETE"):
        settings.configure(RolledBack(), "dev", REGION)


def test_load_says_how_to_configure_when_nothing_is_configured(config_home):
    with pytest.raises(InputError, match="not configured: run fleetctl configure --stage STAGE"):
        settings.load()


def test_the_stage_comes_from_the_environment_before_the_last_configured(config_home, cloudformation, monkeypatch):
    settings.configure(cloudformation, "dev", REGION)
    monkeypatch.setenv(settings.STAGE_ENV, "prod")
    with pytest.raises(InputError, match="stage prod is not configured"):
        settings.load()


def test_a_missing_output_names_the_key_and_the_fix(config_home, cloudformation):
    stored, _ = settings.configure(cloudformation, "dev", REGION)
    with pytest.raises(InputError, match="no stack output CommandApiUrl.*configure --stage dev"):
        stored.get("CommandApiUrl")


@pytest.mark.parametrize("stage", ["", "../etc", "dev/x", "1dev", "a" * 33])
def test_a_stage_name_cannot_escape_the_config_directory(config_home, stage):
    with pytest.raises(InputError, match="invalid stage"):
        settings.stage_dir(stage)


# The outputs fleetctl reads, by the stack configure reads them from: stable keys (CfnOutput key=), so a
# construct moving inside its stack cannot rename them.
OUTPUTS_READ = {
    "Audit": ["MetricsNamespace"],
    "Identity": ["UserPoolId", "FleetctlClientId", "ProvisioningTokenApiUrl", "AuditTableName",
                 "FleetGroupName", "QuarantineGroupName"],
    "Ingest": ["AlertsApiUrl", "TelemetryDatabase", "TelemetryWorkGroup"],
    "Commands": ["CommandApiUrl"],
    "Defense": ["IncidentsTableName", "DeviceAdminFunctionName"],
}


@pytest.mark.parametrize("part", sorted(OUTPUTS_READ))
def test_the_synthesised_stacks_export_what_fleetctl_reads_under_stable_keys(dev, part):
    assert part in settings.REQUIRED_STACKS + settings.OPTIONAL_STACKS
    templates = dev.templates()
    outputs = templates[f"{settings.STACK_PREFIX}-dev-{part}"].get("Outputs", {})
    missing = [key for key in OUTPUTS_READ[part] if key not in outputs]
    assert not missing, (part, missing, sorted(outputs))


# --- through the CLI ----------------------------------------------------------------------------------------

INCIDENTS = "fleetwarden-dev-incidents"


def _incidents_table():
    boto3.client("dynamodb", region_name=REGION).create_table(
        TableName=INCIDENTS, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "violation_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "violation_id", "KeyType": "HASH"}])


def test_configure_then_commands_find_their_resources_without_flags(run, cloudformation):
    _incidents_table()
    result = run("configure", "--stage", "dev", "--region", REGION)
    assert result.code == 0, result.err
    assert "stage dev (eu-west-1): 4 stack outputs stored" in result.out
    assert "Fleetwarden-dev-Commands is not deployed" in result.out

    listed = run("incidents", "list", "--json")  # table and region come from the stage
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == []


def test_a_command_needing_an_undeployed_stack_says_which_output_is_missing(run, cloudformation):
    assert run("configure", "--stage", "dev", "--region", REGION).code == 0
    run("command", "list").assert_one_error_line(2, "no stack output CommandApiUrl")


def test_commands_before_configure_say_how_to_configure(run):
    run("incidents", "list").assert_one_error_line(2, "run fleetctl configure --stage STAGE")


def test_configure_without_credentials_is_one_clear_line(run, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    run("configure", "--stage", "dev", "--region", REGION).assert_one_error_line(1, "no usable AWS credentials")


def test_shell_completion_comes_from_click(run, monkeypatch):
    monkeypatch.setenv("_FLEETCTL_COMPLETE", "bash_source")
    result = run()
    assert result.code == 0
    assert "_FLEETCTL_COMPLETE=bash_complete" in result.out and "complete " in result.out
