"""IngestStack templates: buckets, both pipelines, error actions, least-privilege roles, DLQ alarm."""

import json

import pytest
from aws_cdk.assertions import Match


def resources(template_json, cfn_type):
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == cfn_type}


def ingest(s):
    return s.template_json(s.stacks.ingest)


def actions_of(statement):
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def role_actions(template_json, role_prefix):
    """Every action granted to the roles whose logical id starts with role_prefix."""
    found = set()
    for policy in resources(template_json, "AWS::IAM::Policy").values():
        if any(r["Ref"].startswith(role_prefix) for r in policy["Properties"]["Roles"]):
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                found |= set(actions_of(statement))
    return found


# --- buckets -------------------------------------------------------------------------------

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

def rules(s):
    return {r["Properties"]["RuleName"]: r["Properties"]["TopicRulePayload"]
            for r in resources(ingest(s), "AWS::IoT::TopicRule").values()}


def test_every_rule_uses_sql_2016_and_has_an_error_action(dev):
    found = rules(dev)
    assert set(found) == {"fleetwarden_dev_telemetry", "fleetwarden_dev_alerts"}
    for name, payload in found.items():
        assert payload["AwsIotSqlVersion"] == "2016-03-23", name
        error = payload["ErrorAction"]["S3"]
        assert error["Key"].startswith(f"rule-errors/{name}/"), name
        assert error["BucketName"]["Ref"].startswith("AlertData")


def test_telemetry_rule_is_basic_ingest_into_firehose_with_identity_fields(dev):
    payload = rules(dev)["fleetwarden_dev_telemetry"]
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


def test_alert_rule_writes_one_object_per_alert_under_thing_and_date(dev):
    payload = rules(dev)["fleetwarden_dev_alerts"]
    assert payload["Sql"] == "SELECT * FROM 'dt/+/alerts'"
    s3_action = payload["Actions"][0]["S3"]
    assert s3_action["Key"] == ("alerts/${topic(2)}/${parse_time('yyyy/MM/dd', timestamp())}/"
                                "${timestamp()}-${newuuid()}.json")
    assert s3_action["BucketName"]["Ref"].startswith("AlertData")


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


# --- alert queue ---------------------------------------------------------------------------

def test_alert_objects_notify_an_encrypted_queue_with_a_watched_dlq(dev):
    template_json = ingest(dev)
    queues = {q["Properties"]["QueueName"]: q["Properties"] for q in resources(template_json, "AWS::SQS::Queue").values()}
    main, dlq = queues["fleetwarden-dev-alerts"], queues["fleetwarden-dev-alerts-dlq"]
    assert main["KmsMasterKeyId"]["Fn::GetAtt"][0].startswith("DataKey")
    assert dlq["KmsMasterKeyId"]["Fn::GetAtt"][0].startswith("DataKey")
    assert main["RedrivePolicy"]["maxReceiveCount"] == 5
    bucket = next(b for k, b in resources(template_json, "AWS::S3::Bucket").items() if k.startswith("AlertData"))
    notification = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"][0]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "alerts/"}]
    policies = {json.dumps(p["Properties"]["Queues"]): p["Properties"]["PolicyDocument"]
                for p in resources(template_json, "AWS::SQS::QueuePolicy").values()}
    policy = next(doc for queues, doc in policies.items() if '"AlertsQueue' in queues)
    allow = next(s for s in policy["Statement"] if s["Effect"] == "Allow")
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert "fleetwarden-dev-alerts-" in json.dumps(allow["Condition"]["ArnEquals"]["aws:SourceArn"])
    assert any(s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
               for s in policy["Statement"])


def test_dead_letter_alarm_notifies_ops(dev):
    dev.template(dev.stacks.ingest).has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "fleetwarden-dev-alerts-dead-letters",
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Threshold": 1,
        "AlarmActions": [Match.any_value()],
    })


def test_processor_reports_partial_batch_failures(dev):
    dev.template(dev.stacks.ingest).has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "BatchSize": 10,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    })


def test_processor_role_is_limited_to_its_resources(dev):
    assert role_actions(ingest(dev), "AlertsProcessorRole") == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:PutObjectTagging", "s3:PutObjectVersionTagging",
        "s3:PutObject", "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem",
        "dynamodb:DeleteItem", "secretsmanager:GetSecretValue",
        "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey",
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
        # consuming the queue (granted by the event source)
        "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    }


def test_rule_roles_only_deliver(dev):
    assert role_actions(ingest(dev), "TelemetryRuleRole") <= {
        "firehose:PutRecord", "firehose:PutRecordBatch", "kinesis:PutRecord", "s3:PutObject",
        "kms:GenerateDataKey", "kms:Encrypt"}
    assert role_actions(ingest(dev), "AlertsRuleRole") == {"s3:PutObject", "kms:GenerateDataKey", "kms:Encrypt"}


# --- alerts API ----------------------------------------------------------------------------

def test_alerts_api_routes_are_cognito_authorised(dev):
    template_json = ingest(dev)
    methods = [m["Properties"] for m in resources(template_json, "AWS::ApiGateway::Method").values()]
    gets = [m for m in methods if m["HttpMethod"] == "GET"]
    assert len(gets) == 2
    assert all(m["AuthorizationType"] == "COGNITO_USER_POOLS" for m in gets)
    assert not [m for m in methods if m["AuthorizationType"] == "NONE"]
    paths = {r["Properties"]["PathPart"] for r in resources(template_json, "AWS::ApiGateway::Resource").values()}
    assert {"alerts", "{id}", "trace"} <= paths
    assert not resources(template_json, "AWS::ApiGateway::Account")  # the token API's stage owns it


def test_trace_urls_live_at_most_five_minutes_and_fetches_are_audited(dev):
    functions = resources(ingest(dev), "AWS::Lambda::Function")
    api = next(f["Properties"] for k, f in functions.items() if k.startswith("AlertsApiHandler"))
    env = api["Environment"]["Variables"]
    assert 0 < int(env["TRACE_URL_SECONDS"]) <= 300
    assert env["ALERTS_READER_GROUP"] == "analysts"
    assert "AUDIT_TABLE" in env
    assert role_actions(ingest(dev), "AlertsApiHandlerRole") >= {"dynamodb:Query", "s3:GetObject", "dynamodb:PutItem"}
    assert not role_actions(ingest(dev), "AlertsApiHandlerRole") & {"s3:PutObject", "s3:DeleteObject"}


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
            assert props["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "Fleetwarden"
