"""DefenseStack templates: detection sources, containment wiring, audits, dashboard, roles."""

import json

import pytest
from aws_cdk import cx_api

from lambdas.shared import topics
from stacks.defense.builtin_detector import PRESENCE_FIELDS
from stacks.defense_stack import DEFENDER_ALONE_WARNING
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


def profile_of(s):
    return next(iter(resources(defense(s), "AWS::IoT::SecurityProfile").values()))["Properties"]


def topic_filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching: '+' is one level, a final '#' any remaining levels."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    for i, level in enumerate(wanted):
        if level == "#":
            return True
        if i >= len(levels) or level not in ("+", levels[i]):
            return False
    return len(levels) == len(wanted)


def size_behaviours_judging(s, topic: str) -> dict[str, int]:
    """The aws:message-byte-size behaviours whose TOPIC_FILTER dimension (IN) takes `topic`,
    with their limits ("Scoping metrics in security profiles using dimensions")."""
    filters = {d["Properties"]["Name"]: d["Properties"]["StringValues"]
               for d in resources(defense(s), "AWS::IoT::Dimension").values()
               if d["Properties"]["Type"] == "TOPIC_FILTER"}
    judged = {}
    for b in profile_of(s)["Behaviors"]:
        if b["Metric"] == "aws:message-byte-size":
            assert b["MetricDimension"]["Operator"] == "IN"  # never every topic
            if any(topic_filter_matches(f, topic) for f in filters[b["MetricDimension"]["DimensionName"]]):
                judged[b["Name"]] = int(b["Criteria"]["Value"]["Count"])
    return judged


def test_message_size_is_judged_per_topic_so_a_large_alert_contains_nothing(dev):
    """A 100 KiB alert is only judged by the alert limit (default: the 128 KB MQTT maximum);
    telemetry keeps its own 8 KiB limit on both forms of the Basic Ingest topic."""
    alert = size_behaviours_judging(dev, topics.alerts_topic("SN-0001"))
    assert alert == {"AlertMessageByteSize": 131_072}
    assert all(100 * 1024 <= limit for limit in alert.values())
    basic_ingest = topics.telemetry_topic("fleetwarden_dev_telemetry", "SN-0001")
    for topic in (basic_ingest, topics.telemetry_rule_topic("SN-0001")):
        assert size_behaviours_judging(dev, topic) == {"TelemetryMessageByteSize": 8192}, topic
    assert size_behaviours_judging(dev, topics.shadow_prefix("SN-0001") + "/update") == {}
    profile = resources(defense(dev), "AWS::IoT::SecurityProfile")
    dimensions = resources(defense(dev), "AWS::IoT::Dimension")
    assert set(next(iter(profile.values()))["DependsOn"]) == set(dimensions)  # they exist first


def test_alert_size_limit_comes_from_config(tmp_path):
    s = synthesise("dev", tmp_path, {"max_alert_bytes": 65_536, "max_telemetry_bytes": 4096})
    assert size_behaviours_judging(s, "dt/SN-0001/alerts") == {"AlertMessageByteSize": 65_536}
    assert size_behaviours_judging(s, "dt/SN-0001/telemetry") == {"TelemetryMessageByteSize": 4096}


def test_only_counts_over_time_carry_a_duration(dev):
    """BehaviorCriteria.durationSeconds is for criteria with a time dimension (AWS IoT API
    reference, BehaviorCriteria): counts per window carry the window; a message size and what a
    device report states (ports, established connections) carry none."""
    durations = {b["Name"]: b["Criteria"].get("DurationSeconds") for b in profile_of(dev)["Behaviors"]}
    assert durations == {
        "MessagesSent": 300, "AuthorizationFailures": 300, "ConnectionAttempts": 300, "Disconnects": 300,
        "TelemetryMessageByteSize": None, "AlertMessageByteSize": None,
        "ListeningTcpPorts": None, "ListeningUdpPorts": None, "EstablishedTcpConnections": None}


def warnings_of(s, stack) -> list[str]:
    """Warnings in the synthesised cloud assembly (what `cdk synth` prints)."""
    artifact = cx_api.CloudAssembly(str(s.outdir)).get_stack_artifact(stack.artifact_id)
    return [str(m.entry.data) for m in artifact.messages if m.level == cx_api.SynthesisMessageLevel.WARNING]


def test_defender_alone_warns_that_a_telemetry_flood_may_go_unseen(tmp_path):
    """Basic Ingest page ("Reducing messaging costs with Basic Ingest"): num-messages-received is
    not emitted for it, and nothing documents that aws:num-messages-sent counts it."""
    s = synthesise("dev", tmp_path, {"detect": "defender", "detection_window_seconds": 3600})
    assert warnings_of(s, s.stacks.defense) == [DEFENDER_ALONE_WARNING]
    assert "telemetry flood may go unseen by Defender alone" in DEFENDER_ALONE_WARNING
    sent = next(b for b in profile_of(s)["Behaviors"] if b["Metric"] == "aws:num-messages-sent")
    assert sent["Criteria"]["DurationSeconds"] == 3600


def test_no_warning_when_the_builtin_detector_counts_telemetry(dev):
    assert not any("Basic Ingest" in w for w in warnings_of(dev, dev.stacks.defense))


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
    # The telemetry transform feeds the built-in detector only when there is one.
    transform = next(f["Properties"] for k, f in resources(s.template_json(s.stacks.ingest),
                                                           "AWS::Lambda::Function").items()
                     if k.startswith("TelemetryTransform"))
    assert ("OBSERVATION_STREAM" in transform["Environment"]["Variables"]) is detector


def test_builtin_detector_folds_device_keyed_records_in_tumbling_windows(dev):
    mapping = next(iter(resources(defense(dev), "AWS::Lambda::EventSourceMapping").values()))["Properties"]
    assert mapping["TumblingWindowInSeconds"] == 300
    assert mapping["StartingPosition"] == "LATEST"
    assert mapping["BisectBatchOnFunctionError"] is False
    assert "DestinationConfig" in mapping  # failed batches kept
    rules = {r["Properties"]["RuleName"]: r["Properties"]["TopicRulePayload"]
             for r in resources(defense(dev), "AWS::IoT::TopicRule").values()}
    presence = rules["fleetwarden_dev_presence"]
    assert "FROM '$aws/events/presence/+/+' WHERE eventType = 'connected' OR eventType = 'disconnected'" \
        in presence["Sql"]
    assert presence["Actions"][0]["Kinesis"]["PartitionKey"] == "${clientId}"
    # Refused connections ("Connect attempt failure event", life-cycle-events.html): keyed by the
    # certificate they are counted against, whatever client id they claimed.
    failed = rules["fleetwarden_dev_connect_failed"]
    assert "FROM '$aws/events/presence/connect_failed/+'" in failed["Sql"]
    assert failed["Actions"][0]["Kinesis"]["PartitionKey"] == "${principalIdentifier}"
    for sql in (presence["Sql"], failed["Sql"]):  # the documented fields, as the detector names them
        for field, name in PRESENCE_FIELDS.items():
            assert f"{field} AS {name}" in sql
    metrics = rules["fleetwarden_dev_device_metrics"]
    # Devices report on the detector rule's Basic Ingest topic: Defender's own topic is publish-only.
    assert "FROM 'dt/+/metrics'" in metrics["Sql"]
    assert "clientid() AS client_id" in metrics["Sql"]
    assert metrics["Actions"][0]["Kinesis"]["PartitionKey"] == "${clientid()}"
    # Every other message counts toward the device's message limit (alerts, shadow requests);
    # alerts with their size (the length of their base64), never their content.
    assert rules["fleetwarden_dev_alert_count"]["Sql"] == (
        "SELECT 'alert' AS kind, clientid() AS client_id, length(encode(*, 'base64')) AS b64_length "
        "FROM 'dt/+/alerts'")
    assert rules["fleetwarden_dev_shadow_count"]["Sql"] == (
        "SELECT 'message' AS kind, clientid() AS client_id FROM '$aws/things/+/shadow/name/+/+'")
    for rule in ("alert_count", "shadow_count"):
        assert rules[f"fleetwarden_dev_{rule}"]["Actions"][0]["Kinesis"]["PartitionKey"] == "${clientid()}"
    assert topic_filter_matches("$aws/things/+/shadow/name/+/+", topics.shadow_prefix("SN-1") + "/update")
    assert not topic_filter_matches("$aws/things/+/shadow/name/+/+", topics.shadow_prefix("SN-1") + "/update/accepted")
    detector = next(f["Properties"] for k, f in resources(defense(dev), "AWS::Lambda::Function").items()
                    if k.startswith("DetectorFunction"))
    assert detector["Environment"]["Variables"]["MAX_AUTH_FAILURES"] == "10"
    # One message's size per kind of topic, the same limits the Defender profile scopes by topic
    # (the stage defaults of stacks/config.py).
    assert detector["Environment"]["Variables"]["MAX_TELEMETRY_BYTES"] == "8192"
    assert detector["Environment"]["Variables"]["MAX_ALERT_BYTES"] == "131072"
    for payload in rules.values():
        assert payload["AwsIotSqlVersion"] == "2016-03-23"
        assert payload["ErrorAction"]["S3"]["Key"].startswith("rule-errors/")


def test_detector_writes_nothing_but_violations(dev):
    actions = role_actions(defense(dev), "DetectorRole")
    assert not {a for a in actions if a.startswith("dynamodb:")}
    assert "sns:Publish" in actions
    iot = {a for a in actions if a.startswith("iot:")}
    assert iot == {"iot:ListThingPrincipals"}  # proving a certificate's thing: read-only


def test_authorisation_failures_watched_only_where_iot_logging_lives(dev, prod):
    assert not resources(defense(dev), "AWS::Logs::SubscriptionFilter")
    subscription = next(iter(resources(defense(prod), "AWS::Logs::SubscriptionFilter").values()))["Properties"]
    assert subscription["LogGroupName"] == "AWSIotLogsV2"
    assert subscription["FilterPattern"] == '{ $.reason = "AUTHORIZATION_FAILURE" }'
    actions = role_actions(defense(prod), "DetectorAuthFailureDetectorRole")
    assert {a for a in actions if a.startswith("iot:")} == {"iot:ListThingPrincipals"}


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
        "iot:DescribeCertificate",  # a certificate violation: is it ours, and is it active?
        "iot:ListAttachedPolicies",  # ... and is it the claim certificate (never deactivated)?
        "iot:DeleteConnection",  # ends the live session once the certificate is inactive
        "kms:Sign", "iot:CreateJob",  # the signed shutdown command (key id from the stack: no GetPublicKey)
        "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "sns:Publish",
        "dynamodb:Query",  # the open incident of a thing or certificate (repeat violations)
        "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey",
        "kms:GenerateDataKey*", "kms:ReEncrypt*",  # sending failed events to the encrypted DLQ
        "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    }
    assert not role_actions(defense(dev), "ResponseRespondRole") & {"iot:DeleteThing", "iot:DeleteCertificate"}
    respond = next(f["Properties"] for k, f in resources(defense(dev), "AWS::Lambda::Function").items()
                   if k.startswith("ResponseRespond"))
    assert respond["Environment"]["Variables"]["PROTECTED_POLICIES"] == "fleetwarden-dev-claim"


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
    # The functions' metrics are read from the stage's own namespace, never another stage's.
    assert '\\"Fleetwarden/dev\\",\\"DevicesContained\\"' in body
    assert '\\"Fleetwarden\\",' not in body
    alarms = {a["Properties"]["AlarmName"] for a in resources(defense(dev), "AWS::CloudWatch::Alarm").values()}
    assert {"fleetwarden-dev-ResponseErrors", "fleetwarden-dev-DefenseDeadLetters",
            "fleetwarden-dev-TelemetryRuleFailures", "fleetwarden-dev-AlertRuleFailures"} <= alarms
