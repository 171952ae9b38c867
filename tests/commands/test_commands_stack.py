"""Fleetwarden-<stage>-Commands templates: who may sign, what the issuer and the rotation function may do,
job templates, the rotation rule, and the Defense stack's signed shutdown wiring."""

from __future__ import annotations

import json

from lambdas.shared import topics
from stacks.commands.rotation import ROTATION_SQL
from tests.infra.synth import resources, role_actions


def commands(s):
    return s.template_json(s.stacks.commands)


def test_the_signing_key_is_p256_and_only_the_command_roles_may_sign(dev):
    [key] = [k["Properties"] for k in resources(commands(dev), "AWS::KMS::Key").values() if k["Properties"].get("KeySpec")]
    assert (key["KeySpec"], key["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    statements = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    assert set(statements) == {"AccountAdministersTheKeyButCannotSign", "OnlyCommandFunctionsSign"}
    admin = statements["AccountAdministersTheKeyButCannotSign"]["Action"]
    assert "kms:Sign" not in admin and "kms:*" not in admin and not any(a.startswith("kms:Sign") for a in admin)
    sign = statements["OnlyCommandFunctionsSign"]
    assert sign["Action"] == "kms:Sign"
    signers = json.dumps(sign["Condition"]["ArnEquals"]["aws:PrincipalArn"])
    assert "IssuerHandlerRole" in signers and "RotationStarterStartRole" in signers
    assert ":role/fleetwarden-dev-auto-response" in signers and signers.count("Arn") + signers.count(":role/") == 3


def test_the_auto_response_role_has_the_name_the_key_policy_names_and_may_queue_the_shutdown(dev):
    defense = dev.template_json(dev.stacks.defense)
    roles = [r["Properties"] for r in resources(defense, "AWS::IAM::Role").values()
             if r["Properties"].get("RoleName") == "fleetwarden-dev-auto-response"]
    assert len(roles) == 1
    assert {"kms:Sign", "iot:CreateJob"} <= role_actions(defense, "ResponseRespondRole")
    assert dev.stacks.commands in dev.stacks.defense.dependencies


def test_the_issuer_signs_queues_and_opens_only_ssh_tunnels(dev):
    template = commands(dev)
    actions = role_actions(template, "IssuerHandlerRole")
    assert {"kms:Sign", "iot:CreateJob", "iot:CancelJob", "iam:PassRole", "iot:OpenTunnel",
            "iot:DescribeThing", "dynamodb:PutItem"} <= actions
    assert not any(a.endswith("*") and a.startswith("iot:") for a in actions)
    tunnels = [s for p in resources(template, "AWS::IAM::Policy").values()
               for s in p["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "OpenSshTunnels"]
    assert tunnels[0]["Condition"] == {"ForAllValues:StringEquals": {"iot:TunnelDestinationService": ["SSH"]}}


def test_the_presign_role_reads_only_artifacts_and_only_iot_jobs_of_this_account_assume_it(dev):
    template = commands(dev)
    [role] = [r["Properties"] for k, r in resources(template, "AWS::IAM::Role").items() if k.startswith("PresignRole")]
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "iot.amazonaws.com"}
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"] and "aws:SourceArn" in trust["Condition"]["ArnLike"]
    assert role_actions(template, "PresignRole") == {"s3:GetObject", "kms:Decrypt"}
    assert "/artifacts/*" in json.dumps(resources(template, "AWS::IAM::Policy"))


def test_job_templates_carry_the_timeout_retry_and_abort_settings(dev):
    templates = {t["Properties"]["JobTemplateId"]: t["Properties"]
                 for t in resources(commands(dev), "AWS::IoT::JobTemplate").values()}
    assert set(templates) == {f"fleetwarden-dev-{c}" for c in ("config", "reboot", "shutdown", "rotate-certificate")}
    for template in templates.values():
        assert template["TimeoutConfig"] == {"InProgressTimeoutInMinutes": 60}
        assert template["AbortConfig"]["CriteriaList"][0]["Action"] == "CANCEL"
        assert "signature" not in json.loads(template["Document"])["command"]  # devices refuse it unsigned


def test_the_rotation_rule_feeds_the_function_with_the_authenticated_principal(dev):
    [rule] = [r["Properties"]["TopicRulePayload"] for r in resources(commands(dev), "AWS::IoT::TopicRule").values()]
    assert rule["Sql"] == ROTATION_SQL and "principal() AS principal" in rule["Sql"]
    assert f"FROM '{topics.cert_rotation_rule_topic()}'" in rule["Sql"]
    assert rule["AwsIotSqlVersion"] == "2016-03-23" and "ErrorAction" in rule
    fn = [f["Properties"] for f in resources(commands(dev), "AWS::Lambda::Function").values()
          if f["Properties"].get("Handler") == "commands.rotation.handler.lambda_handler"][0]
    assert len(fn["Layers"]) == 2  # Powertools and the cryptography layer
    actions = role_actions(commands(dev), "RotationRotateRole")
    assert {"iot:CreateCertificateFromCsr", "iot:AttachPolicy", "iot:AttachThingPrincipal", "iot:UpdateCertificate",
            "iot:Publish", "iot:ListThingPrincipals", "iot:ListCertificates", "iot:DescribeCertificate"} <= actions


def test_the_issuer_api_is_cognito_only(dev):
    methods = [m["Properties"] for m in resources(commands(dev), "AWS::ApiGateway::Method").values()
               if m["Properties"]["HttpMethod"] != "OPTIONS"]
    assert len(methods) == 7
    assert all(m["AuthorizationType"] == "COGNITO_USER_POOLS" for m in methods)


def test_the_rotation_starter_runs_daily_and_signs_only_rotation_jobs(dev):
    template = commands(dev)
    [rule] = [r["Properties"] for r in resources(template, "AWS::Events::Rule").values()]
    assert rule["ScheduleExpression"] == "cron(30 6 * * ? *)"
    assert role_actions(template, "RotationStarterStartRole") >= {
        "iot:ListAuditFindings", "iot:DescribeCertificate", "iot:ListAttachedPolicies", "iot:ListPrincipalThings",
        "iot:CreateJob", "kms:Sign", "dynamodb:PutItem"}
    assert "iot:UpdateCertificate" not in role_actions(template, "RotationStarterStartRole")


def test_the_commands_dead_letter_queue_alarms_the_ops_topic(dev):
    """Rotation steps and the starter park failed events there: someone must hear of it."""
    template = commands(dev)
    [queue_id] = [k for k, q in resources(template, "AWS::SQS::Queue").items()
                  if q["Properties"].get("QueueName") == "fleetwarden-dev-commands-dlq"]
    [alarm] = [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("AlarmName") == "fleetwarden-dev-commands-dead-letters"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue_id, "QueueName"]}
    assert alarm["Threshold"] == 1 and alarm["TreatMissingData"] == "notBreaching"
    assert "OpsTopic" in json.dumps(alarm["AlarmActions"])
