"""Alerts: rule -> one S3 object per alert -> S3 event -> SQS (KMS, DLQ) -> alert processor
(validate, index, forward only the header and an opaque device reference)."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas.shared import topics
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use
from stacks.platform.iot_rule import finish_rule_role, rule_role, topic_rule
from stacks.platform.messaging import alarm, dead_letter_queue, queue_depth
from stacks.platform.nag import logical_id
from stacks.platform.table import secure_table

ALERTS_PREFIX = "alerts/"
QUARANTINE_PREFIX = "quarantine/"
MAX_RECEIVES = 5
# Worst case per alert is two 3-second attempts plus backoff; ten alerts a batch.
PROCESSOR_TIMEOUT = Duration.seconds(90)


class AlertPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        rule_name: str,
        classifier_url: str,
        bucket: s3.Bucket,
        data_key: kms.IKey,
        defaults: PlatformDefaults,
        ops_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        # --- rule: each alert becomes one object, keyed by thing and day, unique suffix ------
        role = rule_role(self, "Alert rule: write alert objects and rule errors")
        self.rule = topic_rule(
            self, "Rule",
            name=rule_name,
            description="Device alerts -> one S3 object each (traces stay in this account)",
            sql=f"SELECT * FROM '{topics.alerts_topic('+')}'",
            action=actions.S3PutObjectAction(
                bucket, role=role,
                key=ALERTS_PREFIX + "${topic(2)}/${parse_time('yyyy/MM/dd', timestamp())}/"
                    "${timestamp()}-${newuuid()}.json",
            ),
            role=role, error_bucket=bucket,
        )
        finish_rule_role(role, key=data_key, purpose="the alert rule", error_bucket=bucket)

        # --- queue of new alert objects, with a dead-letter queue a human watches -------------
        self.dead_letters = dead_letter_queue(
            self, "DeadLetters",
            queue_name=f"{prefix}-alerts-dlq", key=data_key,
            reason="This is the dead-letter queue of the alert queue; a DLQ of a DLQ would only "
                   "move the same messages again. Its depth alarms the ops topic.",
        )
        self.queue = sqs.Queue(
            self, "Queue",
            queue_name=f"{prefix}-alerts",
            encryption=sqs.QueueEncryption.KMS, encryption_master_key=data_key,
            visibility_timeout=Duration.seconds(PROCESSOR_TIMEOUT.to_seconds() * 6),
            retention_period=Duration.days(4),  # TLS-only is part of the queue policy below
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=MAX_RECEIVES),
        )
        self._notify_queue_from_bucket(bucket)
        self.dlq_alarm = alarm(
            self, "DeadLettersAlarm",
            alarm_name=f"{prefix}-alerts-dead-letters",
            description="Alerts that could not be forwarded after retries: objects are intact "
                        "in S3; fix the cause, then redrive the DLQ.",
            metric=queue_depth(self.dead_letters), topic=ops_topic,
        )

        # --- tables, secrets --------------------------------------------------------------------
        self.alerts_table = secure_table(
            self, "AlertIndex",
            table_name=f"{prefix}-alerts",
            partition_key="thing",
            sort_key=dynamodb.Attribute(name="alert_id", type=dynamodb.AttributeType.STRING),
            key=data_key,
            backup_reason="The index is rebuilt from the alert objects in S3 (the record of truth); "
                          "point-in-time recovery covers accidental deletion.",
        )
        self.alerts_table.add_global_secondary_index(
            index_name="by_alert_id",
            partition_key=dynamodb.Attribute(name="alert_id", type=dynamodb.AttributeType.STRING),
        )
        self.idempotency_table = secure_table(
            self, "Idempotency",
            table_name=f"{prefix}-alert-idempotency",
            partition_key="id",
            key=data_key,
            time_to_live_attribute="expiration",
            removal_policy=RemovalPolicy.DESTROY,
            backup_reason="Idempotency records expire within hours and only prevent duplicate "
                          "forwarding; losing them cannot lose an alert.",
        )
        self.classifier_api_key = secretsmanager.Secret(
            self, "ClassifierApiKey",
            secret_name=f"{prefix}/classifier-api-key",
            description="API key of the external classification service (set the real value after deploy)",
            encryption_key=data_key,
        )
        self.device_ref_key = secretsmanager.Secret(
            self, "DeviceRefKey",
            secret_name=f"{prefix}/device-ref-hmac-key",
            description="HMAC key that turns a thing name into the opaque device reference sent out",
            encryption_key=data_key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True),
        )
        for secret, why in (
            (self.classifier_api_key, "The key is issued by the external vendor; rotating it is a "
             "vendor-side operation, after which the operator updates this secret."),
            (self.device_ref_key, "Rotating the HMAC key would change every device reference the "
             "vendor holds and break correlation; rotate deliberately, not on a schedule."),
        ):
            Validations.of(secret).acknowledge(*[Acknowledgment(id=rule, reason=why) for rule in (
                "AwsSolutions-SMG4", "HIPAA.Security-SecretsManagerRotationEnabled",
                "NIST.800.53.R5-SecretsManagerRotationEnabled")])

        # --- processor ----------------------------------------------------------------------
        self.processor = PythonFunction(
            self, "Processor",
            handler="alerts.processor.handler.lambda_handler",
            description="Validates alert objects, indexes them, forwards header + device reference",
            service="alert-processor",
            environment={
                "ALERTS_TABLE": self.alerts_table.table_name,
                "IDEMPOTENCY_TABLE": self.idempotency_table.table_name,
                "CLASSIFIER_URL": classifier_url,
                "CLASSIFIER_API_KEY_SECRET": self.classifier_api_key.secret_arn,
                "DEVICE_REF_KEY_SECRET": self.device_ref_key.secret_arn,
                "CLASSIFIER_TIMEOUT_SECONDS": "3",
                "ALERTS_BUCKET": bucket.bucket_name,
            },
            defaults=defaults,
            reserved_concurrency=10,
            timeout=PROCESSOR_TIMEOUT,
            synchronous_reason="It consumes an SQS queue whose own dead-letter queue keeps every "
                               "message that fails repeatedly; Lambda-level DLQs apply only to "
                               "asynchronous invocations.",
        ).function
        self.processor.add_event_source(event_sources.SqsEventSource(
            self.queue, batch_size=10, max_batching_window=Duration.seconds(5),
            report_batch_item_failures=True))
        self._grant_processor(bucket, data_key)

    def _grant_processor(self, bucket: s3.IBucket, data_key: kms.IKey) -> None:
        fn = self.processor
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ReadAndTagAlertObjects",
            actions=["s3:GetObject", "s3:GetObjectVersion", "s3:PutObjectTagging",
                     "s3:PutObjectVersionTagging"],
            resources=[bucket.arn_for_objects(f"{ALERTS_PREFIX}*")]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="CopyBadAlertsToQuarantine",
            actions=["s3:PutObject", "s3:PutObjectTagging"],
            resources=[bucket.arn_for_objects(f"{QUARANTINE_PREFIX}*")]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="IndexAlerts", actions=["dynamodb:PutItem"], resources=[self.alerts_table.table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="Idempotency",
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            resources=[self.idempotency_table.table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ReadForwardingSecrets", actions=["secretsmanager:GetSecretValue"],
            resources=[self.classifier_api_key.secret_arn, self.device_ref_key.secret_arn]))
        allow_key_use(fn, data_key)
        Validations.of(fn.role).acknowledge(*[Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/{prefix}*]",
            reason=why,
        ) for prefix, why in (
            (ALERTS_PREFIX, "Alert objects are named per message at run time (thing/day/uuid); the "
                            "processor reads and tags only this prefix."),
            (QUARANTINE_PREFIX, "Quarantined copies are named after the rejected object; the processor "
                                "writes only under this prefix."),
        )])

    def _notify_queue_from_bucket(self, bucket: s3.Bucket) -> None:
        """Native S3 -> SQS notification (no CDK notification-handler function). The queue policy
        names the bucket by its deterministic ARN, so the bucket can depend on the policy."""
        bucket_arn = f"arn:{Aws.PARTITION}:s3:::{bucket_name_of(bucket)}"
        policy = sqs.CfnQueuePolicy(
            self, "S3MayNotify",
            queues=[self.queue.queue_url],
            policy_document={
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "S3NotifiesNewAlerts",
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": self.queue.queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn},
                                      "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
                    },
                    {
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": {"AWS": "*"},
                        "Action": "sqs:*",
                        "Resource": self.queue.queue_arn,
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                ],
            },
        )
        cfn_bucket: s3.CfnBucket = bucket.node.default_child
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=[s3.CfnBucket.QueueConfigurationProperty(
                event="s3:ObjectCreated:*",
                queue=self.queue.queue_arn,
                filter=s3.CfnBucket.NotificationFilterProperty(
                    s3_key=s3.CfnBucket.S3KeyFilterProperty(rules=[
                        s3.CfnBucket.FilterRuleProperty(name="prefix", value=ALERTS_PREFIX)])),
            )])
        cfn_bucket.node.add_dependency(policy)


def bucket_name_of(bucket: s3.Bucket) -> str:
    cfn: s3.CfnBucket = bucket.node.default_child
    return cfn.bucket_name
