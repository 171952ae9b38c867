"""IngestStack: telemetry and alert pipelines into encrypted S3, and the alerts API."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.constructs.alert_pipeline import AlertPipeline
from stacks.constructs.alerts_api import AlertsApi
from stacks.constructs.secure_bucket import SecureBucket
from stacks.constructs.telemetry_pipeline import TelemetryPipeline
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
        self.alerts_bucket = SecureBucket(
            self, "AlertData",
            bucket_name=f"{stage.prefix}-alerts-{Aws.ACCOUNT_ID}-{Aws.REGION}",
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
