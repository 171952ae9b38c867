"""Alert templates (ingest stack): the alert rule, the S3-notified queue with its watched
dead-letter queue, the processor, and the alerts API."""

import json

from aws_cdk.assertions import Match

from tests.infra.synth import resources, role_actions, topic_rules


def ingest(s):
    return s.template_json(s.stacks.ingest)


# --- rule ----------------------------------------------------------------------------------

def test_alert_rule_writes_one_object_per_alert_under_thing_and_date(dev):
    payload = topic_rules(ingest(dev))["fleetwarden_dev_alerts"]
    assert payload["Sql"] == "SELECT * FROM 'dt/+/alerts'"
    s3_action = payload["Actions"][0]["S3"]
    assert s3_action["Key"] == ("alerts/${topic(2)}/${parse_time('yyyy/MM/dd', timestamp())}/"
                                "${timestamp()}-${newuuid()}.json")
    assert s3_action["BucketName"]["Ref"].startswith("AlertData")


def test_alert_rule_role_only_delivers(dev):
    assert role_actions(ingest(dev), "AlertsRuleRole") == {"s3:PutObject", "kms:GenerateDataKey", "kms:Encrypt"}


# --- alert queue and processor ---------------------------------------------------------------

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
