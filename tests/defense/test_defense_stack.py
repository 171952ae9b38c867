"""DefenseStack templates: detection sources, containment wiring, audits, dashboard, roles."""

import json

import pytest

from tests.infra.synth import resources, role_actions, synthesise


def defense(s):
    return s.template_json(s.stacks.defense)


def test_one_kms_violation_topic(dev):
    topics = resources(defense(dev), "AWS::SNS::Topic")
    assert len(topics) == 1
    props = next(iter(topics.values()))["Properties"]
    assert props["TopicName"] == "fleetwarden-dev-violations"
    assert props["KmsMasterKeyId"]["Fn::GetAtt"][0].startswith("DefenseKey")


def test_security_profile_behaviours_target_the_fleet_and_alert_the_topic(dev):
    profile = next(iter(resources(defense(dev), "AWS::IoT::SecurityProfile").values()))["Properties"]
    metrics = {b["Metric"]: b["Criteria"] for b in profile["Behaviors"]}
    assert set(metrics) == {
        "aws:num-messages-sent", "aws:message-byte-size", "aws:num-authorization-failures",
        "aws:num-connection-attempts", "aws:num-disconnects", "aws:num-listening-tcp-ports",
        "aws:num-listening-udp-ports", "aws:num-established-tcp-connections"}
    assert metrics["aws:num-messages-sent"]["Value"]["Count"] == "600"
    assert metrics["aws:num-messages-sent"]["DurationSeconds"] == 300
    for ports in ("aws:num-listening-tcp-ports", "aws:num-listening-udp-ports"):
        assert metrics[ports]["ComparisonOperator"] == "greater-than" and metrics[ports]["Value"]["Count"] == "0"
    target = profile["AlertTargets"]["SNS"]
    assert target["AlertTargetArn"]["Ref"].startswith("Violations")
    assert target["RoleArn"]["Fn::GetAtt"][0].startswith("DefenderAlertRole")
    assert "RegistryFleetGroup" in json.dumps(profile["TargetArns"])


def test_thresholds_come_from_config(tmp_path):
    s = synthesise("dev", tmp_path, {"max_messages_per_window": 42, "detection_window_seconds": 600})
    profile = next(iter(resources(defense(s), "AWS::IoT::SecurityProfile").values()))["Properties"]
    sent = next(b["Criteria"] for b in profile["Behaviors"] if b["Metric"] == "aws:num-messages-sent")
    assert sent["Value"]["Count"] == "42" and sent["DurationSeconds"] == 600
    detector = next(f["Properties"] for k, f in resources(defense(s), "AWS::Lambda::Function").items()
                    if k.startswith("DetectorFunction"))
    assert detector["Environment"]["Variables"]["MAX_MESSAGES"] == "42"
    mapping = next(iter(resources(defense(s), "AWS::Lambda::EventSourceMapping").values()))["Properties"]
    assert mapping["TumblingWindowInSeconds"] == 600


@pytest.mark.parametrize("detect,profile,detector", [("defender", True, False), ("builtin", False, True)])
def test_detection_source_is_selectable(tmp_path, detect, profile, detector):
    s = synthesise("dev", tmp_path, {"detect": detect})
    assert bool(resources(defense(s), "AWS::IoT::SecurityProfile")) is profile
    assert bool(resources(defense(s), "AWS::Lambda::EventSourceMapping")) is detector
    assert bool(resources(s.template_json(s.stacks.ingest), "AWS::Kinesis::Stream")) is detector


def test_builtin_detector_folds_device_keyed_records_in_tumbling_windows(dev):
    mapping = next(iter(resources(defense(dev), "AWS::Lambda::EventSourceMapping").values()))["Properties"]
    assert mapping["TumblingWindowInSeconds"] == 300
    assert mapping["StartingPosition"] == "LATEST"
    assert mapping["BisectBatchOnFunctionError"] is False
    assert "DestinationConfig" in mapping  # failed batches kept
    rules = {r["Properties"]["RuleName"]: r["Properties"]["TopicRulePayload"]
             for r in resources(defense(dev), "AWS::IoT::TopicRule").values()}
    presence = rules["fleetwarden_dev_presence"]
    assert "FROM '$aws/events/presence/+/+'" in presence["Sql"]
    assert presence["Actions"][0]["Kinesis"]["PartitionKey"] == "${clientId}"
    metrics = rules["fleetwarden_dev_device_metrics"]
    assert "FROM '$aws/things/+/defender/metrics/json'" in metrics["Sql"]
    assert metrics["Actions"][0]["Kinesis"]["PartitionKey"] == "${topic(3)}"
    for payload in rules.values():
        assert payload["AwsIotSqlVersion"] == "2016-03-23"
        assert payload["ErrorAction"]["S3"]["Key"].startswith("rule-errors/")


def test_detector_writes_nothing_but_violations(dev):
    actions = role_actions(defense(dev), "DetectorRole")
    assert not {a for a in actions if a.startswith("dynamodb:")}
    assert "sns:Publish" in actions


def test_authorisation_failures_watched_only_where_iot_logging_lives(dev, prod):
    assert not resources(defense(dev), "AWS::Logs::SubscriptionFilter")
    subscription = next(iter(resources(defense(prod), "AWS::Logs::SubscriptionFilter").values()))["Properties"]
    assert subscription["LogGroupName"] == "AWSIotLogsV2"
    assert subscription["FilterPattern"] == '{ $.reason = "AUTHORIZATION_FAILURE" }'


def test_auto_response_runs_on_every_violation_with_retries_and_a_dlq(dev):
    template_json = defense(dev)
    subscription = next(iter(resources(template_json, "AWS::SNS::Subscription").values()))["Properties"]
    assert subscription["Protocol"] == "lambda"
    assert subscription["TopicArn"]["Ref"].startswith("Violations")
    assert subscription["Endpoint"]["Fn::GetAtt"][0].startswith("ResponseRespond")
    config = next(iter(resources(template_json, "AWS::Lambda::EventInvokeConfig").values()))["Properties"]
    assert config["MaximumRetryAttempts"] == 2
    assert "DeadLetters" in json.dumps(config["DestinationConfig"]["OnFailure"])
    env = next(f["Properties"] for k, f in resources(template_json, "AWS::Lambda::Function").items()
               if k.startswith("ResponseRespond"))["Environment"]["Variables"]
    assert env["REVOCATION"] == "deactivate" and env["DRY_RUN"] == "false"
    assert env["QUARANTINE_GROUP"] == "fleetwarden-dev-quarantine"


def test_containment_settings_reach_the_function(tmp_path):
    s = synthesise("dev", tmp_path, {"revocation": "revoke", "dry_run": True, "exempt_group": "lab-benches"})
    env = next(f["Properties"] for k, f in resources(defense(s), "AWS::Lambda::Function").items()
               if k.startswith("ResponseRespond"))["Environment"]["Variables"]
    assert (env["REVOCATION"], env["DRY_RUN"], env["EXEMPT_GROUP"]) == ("revoke", "true", "lab-benches")


def test_auto_response_role_is_exactly_containment(dev):
    assert role_actions(defense(dev), "ResponseRespondRole") == {
        "iot:ListThingGroupsForThing", "iot:ListThingPrincipals",
        "iot:AddThingToThingGroup", "iot:UpdateCertificate",
        "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "sns:Publish",
        "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey",
        "kms:GenerateDataKey*", "kms:ReEncrypt*",  # sending failed events to the encrypted DLQ
        "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    }
    assert not role_actions(defense(dev), "ResponseRespondRole") & {"iot:DeleteThing", "iot:DeleteCertificate"}


def test_device_admin_can_reinstate_but_not_delete(dev):
    actions = role_actions(defense(dev), "ResponseDeviceAdminRole")
    assert {"iot:RemoveThingFromThingGroup", "iot:UpdateCertificate", "dynamodb:PutItem"} <= actions
    assert not actions & {"iot:DeleteThing", "iot:DeleteCertificate", "iot:DeletePolicy"}


def test_mitigation_actions_for_audit_findings(dev):
    actions = {a["Properties"]["ActionName"]: a["Properties"]["ActionParams"]
               for a in resources(defense(dev), "AWS::IoT::MitigationAction").values()}
    assert actions["fleetwarden-dev-quarantine"]["AddThingsToThingGroupParams"]["ThingGroupNames"] == [
        "fleetwarden-dev-quarantine"]
    assert actions["fleetwarden-dev-deactivate-certificate"]["UpdateDeviceCertificateParams"] == {
        "Action": "DEACTIVATE"}
    assert "PublishFindingToSnsParams" in actions["fleetwarden-dev-notify-ops"]


def test_fleet_audit_all_checks_daily_only_in_the_owner(dev, prod):
    assert not resources(defense(dev), "AWS::IoT::AccountAuditConfiguration")
    config = next(iter(resources(defense(prod), "AWS::IoT::AccountAuditConfiguration").values()))["Properties"]
    checks = config["AuditCheckConfigurations"]
    assert checks and all(c["Enabled"] is True for c in checks.values())
    assert config["AuditNotificationTargetConfigurations"]["Sns"]["Enabled"] is True
    audit = next(iter(resources(defense(prod), "AWS::IoT::ScheduledAudit").values()))["Properties"]
    assert audit["Frequency"] == "DAILY"
    assert len(audit["TargetCheckNames"]) == len(checks)


def test_dashboard_and_alarms_that_need_a_human(dev):
    dashboard = next(iter(resources(defense(dev), "AWS::CloudWatch::Dashboard").values()))["Properties"]
    body = json.dumps(dashboard["DashboardBody"])
    for needle in ("DevicesContained", "NumberOfMessagesPublished", "TelemetryRecordsRejected",
                   "AlertsQuarantined", "AWS/IoT", "Errors", "Throttles", "ApproximateNumberOfMessagesVisible"):
        assert needle in body, needle
    alarms = {a["Properties"]["AlarmName"] for a in resources(defense(dev), "AWS::CloudWatch::Alarm").values()}
    assert {"fleetwarden-dev-ResponseErrors", "fleetwarden-dev-DefenseDeadLetters",
            "fleetwarden-dev-TelemetryRuleFailures", "fleetwarden-dev-AlertRuleFailures"} <= alarms
