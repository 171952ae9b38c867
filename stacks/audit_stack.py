"""AuditStack: the audit key, log buckets, CloudTrail, security alarms, ops topic, IoT logging."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.audit.audit_key import audit_key
from stacks.audit.iot_logging import iot_logging
from stacks.audit.security_alarms import SecurityAlarms
from stacks.audit.trail import access_log_bucket, trail
from stacks.config import StageConfig
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.messaging import encrypted_topic


class AuditStack(Stack):
    """Everything that records what happened: the other stacks log and alarm into it."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        trail_name = f"{stage.prefix}-trail"

        self.key = audit_key(
            self, "AuditKey",
            alias=f"alias/{stage.prefix}-audit",
            description=f"Fleetwarden {stage.name}: CloudTrail, CloudWatch Logs and SNS encryption",
            trail_name=trail_name,
        )
        # Every stack's log groups and functions follow these.
        self.defaults = PlatformDefaults(
            key=self.key,
            log_retention_days=stage.log_retention_days,
            powertools_layer_version=stage.powertools_layer_version,
            metrics_namespace=f"Fleetwarden/{stage.name}",
        )
        CfnOutput(self, "MetricsNamespace", value=self.defaults.metrics_namespace,
                  description="CloudWatch namespace of the stage's functions (fleetctl fleet status reads it)")
        self.access_log_bucket = access_log_bucket(
            self, "AccessLogs", expire_after_days=stage.access_log_retention_days)

        self.ops_topic = encrypted_topic(
            self, "OpsTopic",
            topic_name=f"{stage.prefix}-ops",
            display_name=f"Fleetwarden {stage.name} operations",
            key=self.key,
        )
        if stage.ops_email:
            self.ops_topic.add_subscription(subscriptions.EmailSubscription(stage.ops_email))

        if stage.existing_trail_log_group:
            # An organisation trail already delivers this account's events there.
            self.trail_log_group = logs.LogGroup.from_log_group_name(
                self, "ExistingTrailLogGroup", stage.existing_trail_log_group)
        else:
            self.trail_log_group = trail(
                self,
                name=trail_name, key=self.key, defaults=self.defaults,
                access_logs=self.access_log_bucket, expire_after_days=stage.trail_retention_days,
                log_group_name=f"/{stage.prefix}/cloudtrail",
            )
        SecurityAlarms(
            self, "SecurityAlarms",
            trail_log_group=self.trail_log_group,
            topic=self.ops_topic,
            namespace=f"Fleetwarden/{stage.name}/Security",
            alarm_name_prefix=stage.prefix,
        )
        if stage.owns_account_singletons:
            iot_logging(self, level=stage.iot_log_level, defaults=self.defaults)

        CfnOutput(self, "OpsTopicArn", value=self.ops_topic.topic_arn,
                  description="SNS topic for operational and security alarms")
        CfnOutput(self, "AuditKeyArn", value=self.key.key_arn,
                  description="KMS key for CloudTrail, CloudWatch Logs and SNS")
        CfnOutput(self, "TrailLogGroupName", value=self.trail_log_group.log_group_name,
                  description="CloudWatch Logs group that receives CloudTrail events")
