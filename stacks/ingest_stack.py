"""IngestStack: telemetry and alert pipelines into encrypted S3, and the alerts API."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, CfnOutput, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.alerts.pipeline import AlertPipeline
from stacks.alerts.api import AlertsApi
from stacks.platform.bucket import SecureBucket
from stacks.telemetry.pipeline import TelemetryPipeline
from stacks.identity_stack import IdentityStack


class IngestStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack,
        identity: IdentityStack, **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(identity)

        self.data_key = kms.Key(
            self, "DataKey",
            alias=f"alias/{stage.prefix}-data",
            description=f"Fleetwarden {stage.name}: device data, alert queue, alert index, secrets",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # S3 sends alert notifications into the KMS-encrypted queue as itself.
        self.data_key.add_to_resource_policy(iam.PolicyStatement(
            sid="S3NotifiesEncryptedQueue",
            principals=[iam.ServicePrincipal("s3.amazonaws.com")],
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        ))

        self.telemetry_bucket = SecureBucket(
            self, "TelemetryData",
            encryption_key=self.data_key,
            access_log_bucket=audit.access_log_bucket,
            access_log_prefix="telemetry-bucket/",
            infrequent_access_after_days=stage.telemetry_infrequent_access_days,
            expire_after_days=stage.telemetry_retention_days,
        ).bucket
        # A deterministic name: the alert queue's policy and the defense stack refer to it by name.
        self.alerts_bucket_name = f"{stage.prefix}-alerts-{Aws.ACCOUNT_ID}-{Aws.REGION}"
        self.alerts_bucket = SecureBucket(
            self, "AlertData",
            bucket_name=self.alerts_bucket_name,
            encryption_key=self.data_key,
            access_log_bucket=audit.access_log_bucket,
            access_log_prefix="alerts-bucket/",
            infrequent_access_after_days=90,
            expire_after_days=stage.alert_retention_days,
        ).bucket

        self.telemetry = TelemetryPipeline(
            self, "Telemetry",
            stage=stage, rule_name=identity.telemetry_rule_name,
            bucket=self.telemetry_bucket, error_bucket=self.alerts_bucket,
            data_key=self.data_key, log_key=audit.key,
        )
        # The built-in detector watches a tap of the telemetry path: every record also goes to a
        # Kinesis stream keyed by thing, so one shard (and one detector window) sees a device.
        self.observations = None
        if stage.detect in ("builtin", "both"):
            self.observations = kinesis.Stream(
                self, "Observations",
                stream_name=f"{stage.prefix}-observations",
                stream_mode=kinesis.StreamMode.ON_DEMAND,
                encryption=kinesis.StreamEncryption.KMS,
                encryption_key=self.data_key,
                retention_period=Duration.hours(24),
            )
            Validations.of(self.observations).acknowledge(Acknowledgment(
                id="AwsSolutions-KDS3",
                reason="The stream uses the stage's customer-managed data key (rotated, with a key "
                       "policy and CloudTrail records under our control) rather than aws/kinesis, "
                       "like every other store of device data here.",
            ))
            self.telemetry.rule.add_action(actions.KinesisPutRecordAction(
                # Keyed by the connection, so even a spoofed topic counts against its sender.
                self.observations, partition_key="${clientid()}", role=self.telemetry.rule_role))
            CfnOutput(self, "ObservationStreamName", value=self.observations.stream_name)

        self.alerts = AlertPipeline(
            self, "Alerts",
            stage=stage, bucket=self.alerts_bucket, data_key=self.data_key, log_key=audit.key,
            ops_topic=audit.ops_topic,
        )
        self.alerts_api = AlertsApi(
            self, "AlertsApi",
            stage=stage, user_pool=identity.operators.user_pool,
            alerts_table=self.alerts.alerts_table, bucket=self.alerts_bucket, data_key=self.data_key,
            audit_table=identity.audit_table, audit_key=identity.data_key, log_key=audit.key,
        )
        CfnOutput(self, "TelemetryBucketName", value=self.telemetry_bucket.bucket_name)
        CfnOutput(self, "AlertBucketName", value=self.alerts_bucket.bucket_name)
        CfnOutput(self, "TelemetryRuleName", value=identity.telemetry_rule_name)
        CfnOutput(self, "AlertDeadLetterQueueUrl", value=self.alerts.dead_letters.queue_url)
