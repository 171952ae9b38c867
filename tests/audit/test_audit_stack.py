"""AuditStack: key, buckets, trail, security alarms, ops topic and IoT logging, by property."""

import json

import pytest
from aws_cdk.assertions import Match

from stacks.audit.security_alarms import (
    CLOUDTRAIL_CHANGES,
    IOT_CERTIFICATE_CHANGES,
    IOT_POLICY_CHANGES,
)
from tests.infra.synth import resources, synthesise


def only(template_json: dict, cfn_type: str) -> dict:
    found = resources(template_json, cfn_type)
    assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
    return next(iter(found.values()))


def principals(statement: dict) -> str:
    return json.dumps(statement["Principal"], sort_keys=True)


# --- KMS key -------------------------------------------------------------------------------

def test_audit_key_rotates_and_is_retained(dev):
    key = only(dev.template_json(dev.stacks.audit), "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


def test_audit_key_policy_admits_only_cloudtrail_logs_and_sns_publishers(dev):
    key = only(dev.template_json(dev.stacks.audit), "AWS::KMS::Key")
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    services = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        principal = statement["Principal"]
        if "AWS" in principal:  # account administration, delegated to IAM
            assert ":root" in json.dumps(principal)
            continue
        service = principal["Service"]
        services.add(json.dumps(service))
        # every service grant is conditioned on this trail / account / log group
        assert statement.get("Condition"), f"unconditioned grant to {service}"
        assert not any(a in ("kms:*", "*") for a in _list(statement["Action"]))
    assert services == {
        '"cloudtrail.amazonaws.com"',
        json.dumps({"Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}),
        '"cloudwatch.amazonaws.com"',
    }


def test_cloudtrail_may_encrypt_only_for_its_own_trail(dev):
    key = only(dev.template_json(dev.stacks.audit), "AWS::KMS::Key")
    trail_grants = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                    if s["Principal"].get("Service") == "cloudtrail.amazonaws.com"]
    assert trail_grants
    for statement in trail_grants:
        source = json.dumps(statement["Condition"]["StringEquals"]["aws:SourceArn"])
        assert "trail/fleetwarden-dev-trail" in source


def _list(value):
    return value if isinstance(value, list) else [value]


# --- buckets -------------------------------------------------------------------------------

def _bucket_policy_for(template_json: dict, bucket_id: str) -> dict:
    for policy in resources(template_json, "AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] == {"Ref": bucket_id}:
            return policy["Properties"]["PolicyDocument"]
    raise AssertionError(f"no bucket policy for {bucket_id}")


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_bucket_is_private_versioned_tls_only_and_aged_out(synthesised, stage):
    s = synthesised[stage]
    for stack in s.stacks.all():
        template_json = s.template_json(stack)
        for bucket_id, bucket in resources(template_json, "AWS::S3::Bucket").items():
            props = bucket["Properties"]
            assert props["VersioningConfiguration"] == {"Status": "Enabled"}, bucket_id
            assert props["PublicAccessBlockConfiguration"] == {
                "BlockPublicAcls": True, "BlockPublicPolicy": True,
                "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
            }, bucket_id
            rules = props["LifecycleConfiguration"]["Rules"]
            assert all(r["Status"] == "Enabled" and r["ExpirationInDays"] > 0 for r in rules), bucket_id
            assert all(r["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0 for r in rules), bucket_id
            encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("aws:kms", "AES256")
            denies = [st for st in _bucket_policy_for(template_json, bucket_id)["Statement"]
                      if st["Effect"] == "Deny"]
            assert any(st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
                       for st in denies), f"{bucket_id} accepts plain HTTP"
            assert any(st.get("Condition", {}).get("NumericLessThan", {}).get("s3:TlsVersion") == 1.2
                       for st in denies), f"{bucket_id} accepts TLS < 1.2"


def test_trail_bucket_uses_the_audit_key_and_logs_access(dev):
    template_json = dev.template_json(dev.stacks.audit)
    buckets = resources(template_json, "AWS::S3::Bucket")
    trail_bucket = next(v for k, v in buckets.items() if k.startswith("TrailBucket"))
    encryption = trail_bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert encryption["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"][0].startswith("AuditKey")
    assert encryption["BucketKeyEnabled"] is True
    logging = trail_bucket["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"]["Ref"].startswith("AccessLogsBucket")
    assert trail_bucket["DeletionPolicy"] == "Retain"
    transitions = trail_bucket["Properties"]["LifecycleConfiguration"]["Rules"][0]["Transitions"]
    assert {"StorageClass": "GLACIER", "TransitionInDays": 90} in transitions


def test_only_the_access_log_bucket_uses_s3_managed_encryption(synthesised):
    for s in synthesised.values():
        for stack in s.stacks.all():
            for bucket_id, bucket in resources(s.template_json(stack), "AWS::S3::Bucket").items():
                rule = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
                if rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256":
                    assert bucket_id.startswith("AccessLogsBucket"), bucket_id


def test_bucket_retention_follows_config(dev, prod):
    for s, days in ((dev, 365), (prod, 2557)):
        buckets = resources(s.template_json(s.stacks.audit), "AWS::S3::Bucket")
        trail_bucket = next(v for k, v in buckets.items() if k.startswith("TrailBucket"))
        assert trail_bucket["Properties"]["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == days


# --- CloudTrail ----------------------------------------------------------------------------

def test_trail_is_multi_region_validated_encrypted_and_sent_to_logs(dev):
    template = dev.template(dev.stacks.audit)
    template.has_resource_properties("AWS::CloudTrail::Trail", {
        "TrailName": "fleetwarden-dev-trail",
        "IsMultiRegionTrail": True,
        "IncludeGlobalServiceEvents": True,
        "EnableLogFileValidation": True,
        "IsLogging": True,
        "KMSKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^AuditKey"), "Arn"]},
        "S3BucketName": {"Ref": Match.string_like_regexp("^TrailBucket")},
        "CloudWatchLogsLogGroupArn": {"Fn::GetAtt": [Match.string_like_regexp("^TrailLogGroup"), "Arn"]},
        "EventSelectors": [Match.object_like({"ReadWriteType": "All", "IncludeManagementEvents": True})],
    })


@pytest.mark.parametrize("stage,days", [("dev", 30), ("prod", 365)])
def test_trail_log_group_retention_from_config_and_encrypted(synthesised, stage, days):
    s = synthesised[stage]
    s.template(s.stacks.audit).has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": f"/fleetwarden-{stage}/cloudtrail",
        "RetentionInDays": days,
        "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^AuditKey"), "Arn"]},
    })


def test_existing_organisation_trail_is_referenced_not_duplicated(tmp_path):
    s = synthesise("dev", tmp_path, {"existing_trail_log_group": "aws-controltower/CloudTrailLogs"})
    template_json = s.template_json(s.stacks.audit)
    assert not resources(template_json, "AWS::CloudTrail::Trail")
    filters = resources(template_json, "AWS::Logs::MetricFilter")
    assert len(filters) == 5
    assert {f["Properties"]["LogGroupName"] for f in filters.values()} == {"aws-controltower/CloudTrailLogs"}


# --- metric filters and alarms -------------------------------------------------------------

def _filters(s) -> dict[str, str]:
    return {f["Properties"]["MetricTransformations"][0]["MetricName"]: f["Properties"]["FilterPattern"]
            for f in resources(s.template_json(s.stacks.audit), "AWS::Logs::MetricFilter").values()}


def test_metric_filters_cover_every_required_signal(dev):
    patterns = _filters(dev)
    assert set(patterns) == {"UnauthorizedApiCalls", "IotPolicyChanges", "IotCertificateChanges",
                             "CloudTrailChanges", "RootAccountUse"}
    assert '$.errorCode = "*UnauthorizedOperation"' in patterns["UnauthorizedApiCalls"]
    assert '$.errorCode = "AccessDenied*"' in patterns["UnauthorizedApiCalls"]
    for name in ("CreatePolicy", "CreatePolicyVersion", "AttachPolicy", "DetachPolicy",
                 "SetDefaultPolicyVersion"):
        assert name in IOT_POLICY_CHANGES
        assert f'$.eventName = "{name}"' in patterns["IotPolicyChanges"]
    assert '$.eventSource = "iot.amazonaws.com"' in patterns["IotPolicyChanges"]
    for name in ("UpdateCertificate", "RegisterCertificate*", "DeleteCertificate"):
        assert name in IOT_CERTIFICATE_CHANGES
        assert f'$.eventName = "{name}"' in patterns["IotCertificateChanges"]
    for name in ("CreateTrail", "UpdateTrail", "DeleteTrail", "StopLogging"):
        assert name in CLOUDTRAIL_CHANGES
        assert f'$.eventName = "{name}"' in patterns["CloudTrailChanges"]
    assert '$.userIdentity.type = "Root"' in patterns["RootAccountUse"]
    assert "$.userIdentity.invokedBy NOT EXISTS" in patterns["RootAccountUse"]


def test_filters_count_into_a_stage_namespace_with_zero_default(dev):
    for f in resources(dev.template_json(dev.stacks.audit), "AWS::Logs::MetricFilter").values():
        transformation = f["Properties"]["MetricTransformations"][0]
        assert transformation["MetricNamespace"] == "Fleetwarden/dev/Security"
        assert transformation["MetricValue"] == "1"
        assert transformation["DefaultValue"] == 0
        assert f["Properties"]["LogGroupName"]["Ref"].startswith("TrailLogGroup")


def test_each_signal_has_an_alarm_that_notifies_the_ops_topic(dev):
    alarms = resources(dev.template_json(dev.stacks.audit), "AWS::CloudWatch::Alarm")
    by_metric = {a["Properties"]["MetricName"]: a["Properties"] for a in alarms.values()}
    assert set(by_metric) == set(_filters(dev))
    for props in by_metric.values():
        assert props["Namespace"] == "Fleetwarden/dev/Security"
        assert props["Threshold"] == 1
        assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert props["Statistic"] == "Sum"
        assert props["TreatMissingData"] == "notBreaching"
        assert len(props["AlarmActions"]) == 1
        assert props["AlarmActions"][0]["Ref"].startswith("OpsTopic")


# --- ops topic -----------------------------------------------------------------------------

def test_ops_topic_is_kms_encrypted_and_tls_only(dev):
    template_json = dev.template_json(dev.stacks.audit)
    topic = only(template_json, "AWS::SNS::Topic")
    assert topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0].startswith("AuditKey")
    policy = only(template_json, "AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]
    assert any(st["Effect"] == "Deny" and st["Condition"]["Bool"]["aws:SecureTransport"] == "false"
               for st in policy["Statement"])


def test_no_email_subscription_unless_configured(dev):
    assert not resources(dev.template_json(dev.stacks.audit), "AWS::SNS::Subscription")


def test_configured_email_subscribes_to_ops_topic(tmp_path):
    s = synthesise("dev", tmp_path, {"ops_email": "oncall@example.com"})
    s.template(s.stacks.audit).has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email",
        "Endpoint": "oncall@example.com",
        "TopicArn": {"Ref": Match.string_like_regexp("^OpsTopic")},
    })


# --- IoT Core logging (an account singleton) -----------------------------------------------

def test_iot_logging_only_in_the_stage_that_owns_account_singletons(dev, prod):
    assert not resources(dev.template_json(dev.stacks.audit), "AWS::IoT::Logging")
    prod_template = prod.template(prod.stacks.audit)
    prod_template.has_resource_properties("AWS::IoT::Logging", {
        "DefaultLogLevel": "ERROR",
        "AccountId": {"Ref": "AWS::AccountId"},
        "RoleArn": {"Fn::GetAtt": [Match.string_like_regexp("^IotCoreLoggingRole"), "Arn"]},
    })
    prod_template.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "AWSIotLogsV2", "RetentionInDays": 365,
        "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^AuditKey"), "Arn"]},
    })


def test_iot_log_level_is_configurable(tmp_path):
    s = synthesise("prod", tmp_path, {"iot_log_level": "warn"})
    s.template(s.stacks.audit).has_resource_properties("AWS::IoT::Logging", {"DefaultLogLevel": "WARN"})


# --- tags ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_taggable_resource_carries_project_and_stage(synthesised, stage):
    s = synthesised[stage]
    tagged_types = set()
    for stack in s.stacks.all():
        for logical_id, resource in s.template_json(stack)["Resources"].items():
            tags = resource.get("Properties", {}).get("Tags")
            if tags is None:
                continue
            tagged_types.add(resource["Type"])
            pairs = {t["Key"]: t["Value"] for t in tags} if isinstance(tags, list) else tags
            assert pairs.get("project") == "fleetwarden", logical_id
            assert pairs.get("stage") == stage, logical_id
    assert {"AWS::KMS::Key", "AWS::S3::Bucket", "AWS::SNS::Topic", "AWS::Logs::LogGroup",
            "AWS::CloudTrail::Trail", "AWS::IoT::DomainConfiguration"} <= tagged_types
