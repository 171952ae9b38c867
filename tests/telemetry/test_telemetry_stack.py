"""Telemetry templates (ingest stack): the data buckets, the Basic Ingest rule, the validating
Firehose delivery, and least-privilege roles."""

import json

from tests.infra.synth import actions_of, resources, role_actions, topic_rules


def ingest(s):
    return s.template_json(s.stacks.ingest)


# --- buckets (telemetry and alerts, both under the ingest stack's data key) -----------------

def test_data_buckets_use_the_data_key_and_log_access(dev):
    buckets = resources(ingest(dev), "AWS::S3::Bucket")
    assert len(buckets) == 2
    for bucket in buckets.values():
        rule = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"][0].startswith("DataKey")
        assert "LoggingConfiguration" in bucket["Properties"]


def test_telemetry_ages_to_infrequent_access_and_alerts_are_kept_longer(dev):
    buckets = resources(ingest(dev), "AWS::S3::Bucket")
    telemetry = next(b for k, b in buckets.items() if k.startswith("TelemetryData"))
    alerts = next(b for k, b in buckets.items() if k.startswith("AlertData"))
    t_rule = telemetry["Properties"]["LifecycleConfiguration"]["Rules"][0]
    a_rule = alerts["Properties"]["LifecycleConfiguration"]["Rules"][0]
    assert {"StorageClass": "STANDARD_IA", "TransitionInDays": 30} in t_rule["Transitions"]
    assert t_rule["ExpirationInDays"] == 365
    assert a_rule["ExpirationInDays"] == 2557 > t_rule["ExpirationInDays"]


# --- rules ---------------------------------------------------------------------------------

def test_every_rule_uses_sql_2016_and_has_an_error_action(dev):
    found = topic_rules(ingest(dev))
    assert set(found) == {"fleetwarden_dev_telemetry", "fleetwarden_dev_alerts"}
    for name, payload in found.items():
        assert payload["AwsIotSqlVersion"] == "2016-03-23", name
        error = payload["ErrorAction"]["S3"]
        assert error["Key"].startswith(f"rule-errors/{name}/"), name
        assert error["BucketName"]["Ref"].startswith("AlertData")


def test_telemetry_rule_is_basic_ingest_into_firehose_with_identity_fields(dev):
    payload = topic_rules(ingest(dev))["fleetwarden_dev_telemetry"]
    sql = payload["Sql"]
    for part in ("encode(*, 'base64') AS payload", "topic(2) AS thing", "clientid() AS client_id",
                 "principal() AS principal", "timestamp() AS received_at", "FROM 'dt/+/telemetry'"):
        assert part in sql
    targets = {next(iter(action)) for action in payload["Actions"]}
    # Firehose stores it; with the built-in detector on (default "both") Kinesis taps it too.
    assert targets == {"Firehose", "Kinesis"}
    kinesis = next(a["Kinesis"] for a in payload["Actions"] if "Kinesis" in a)
    assert kinesis["PartitionKey"] == "${clientid()}"  # one connection -> one shard -> one window state
    # The device policy publishes to exactly this rule's Basic Ingest topic.
    policy = next(r for k, r in dev.template_json(dev.stacks.identity)["Resources"].items()
                  if k.startswith("RegistryDevicePolicy"))
    assert "$aws/rules/fleetwarden_dev_telemetry/dt/${iot:Connection.Thing.ThingName}/telemetry" in \
        json.dumps(policy["Properties"]["PolicyDocument"])


def test_telemetry_rule_role_only_delivers(dev):
    assert role_actions(ingest(dev), "TelemetryRuleRole") <= {
        "firehose:PutRecord", "firehose:PutRecordBatch", "kinesis:PutRecord", "s3:PutObject",
        "kms:GenerateDataKey", "kms:Encrypt"}


# --- Firehose ------------------------------------------------------------------------------

def test_firehose_compresses_encrypts_partitions_and_validates(dev):
    stream = next(iter(resources(ingest(dev), "AWS::KinesisFirehose::DeliveryStream").values()))["Properties"]
    assert stream["DeliveryStreamEncryptionConfigurationInput"]["KeyType"] == "CUSTOMER_MANAGED_CMK"
    s3_config = stream["ExtendedS3DestinationConfiguration"]
    assert s3_config["CompressionFormat"] == "GZIP"
    assert s3_config["EncryptionConfiguration"]["KMSEncryptionConfig"]["AWSKMSKeyARN"]["Fn::GetAtt"][0].startswith("DataKey")
    assert s3_config["DynamicPartitioningConfiguration"]["Enabled"] is True
    assert s3_config["Prefix"] == ("!{partitionKeyFromLambda:stream}/!{partitionKeyFromLambda:partition}/"
                                   "date=!{partitionKeyFromLambda:date}/")
    assert s3_config["ErrorOutputPrefix"].startswith("firehose-failed/!{firehose:error-output-type}/")
    assert s3_config["BufferingHints"]["IntervalInSeconds"] == 300
    processor = s3_config["ProcessingConfiguration"]["Processors"][0]
    assert processor["Type"] == "Lambda"
    lambda_arn = next(p["ParameterValue"] for p in processor["Parameters"] if p["ParameterName"] == "LambdaArn")
    assert lambda_arn["Fn::GetAtt"][0].startswith("TelemetryTransform")
    assert s3_config["CloudWatchLoggingOptions"]["Enabled"] is True


def test_firehose_role_writes_only_its_prefixes_and_invokes_only_the_transform(dev):
    policies = [p for p in resources(ingest(dev), "AWS::IAM::Policy").values()
                if any(r["Ref"].startswith("TelemetryDeliveryRole") for r in p["Properties"]["Roles"])]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    puts = next(s for s in statements if "s3:PutObject" in actions_of(s))
    text = json.dumps(puts["Resource"])
    for prefix in ("/telemetry/*", "/telemetry-errors/*", "/firehose-failed/*"):
        assert prefix in text
    assert '"/*"' not in text
    invoke = next(s for s in statements if "lambda:InvokeFunction" in actions_of(s))
    assert "TelemetryTransform" in json.dumps(invoke["Resource"])
