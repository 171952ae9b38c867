"""The platform defaults every stack's functions share."""

import json

import pytest

from tests.infra.synth import resources


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_function_runs_latest_python_traced_bounded_and_json_logged(synthesised, stage):
    s = synthesised[stage]
    for stack in s.stacks.all():
        for logical_id, function in resources(s.template_json(stack), "AWS::Lambda::Function").items():
            if logical_id.startswith("AWS679f53fac"):  # CDK's deploy-time SDK-call function
                continue
            props = function["Properties"]
            assert props["Runtime"] == "python3.14", logical_id
            assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
            assert props["ReservedConcurrentExecutions"] > 0, logical_id
            assert props["LoggingConfig"]["LogFormat"] == "JSON", logical_id
            # One namespace per stage: stages sharing an account never add up in each other's alarms.
            assert props["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == f"Fleetwarden/{stage}"
            # The environment is encrypted with the audit key, like the function's logs.
            assert "AuditKey" in json.dumps(props["KmsKeyArn"]), logical_id
            assert props["KmsKeyArn"] == s.template_json(stack)["Resources"][
                props["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]["KmsKeyId"], logical_id
