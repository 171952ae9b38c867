"""AuditStack: the audit key, log buckets, CloudTrail, security alarms, ops topic, IoT logging."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, RemovalPolicy, Stack, Validations
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_alpha as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.config import StageConfig
from stacks.platform.retention import log_retention
from stacks.platform.bucket import SecureBucket
from stacks.platform.nag import acknowledge_role_policy
from stacks.audit.security_alarms import SecurityAlarms

# IoT Core writes its logs to this fixed log group name; creating it first gives it
# retention and encryption instead of the never-expiring default.
IOT_LOG_GROUP_NAME = "AWSIotLogsV2"


class AuditStack(Stack):
    """Everything that records what happened: the other stacks log and alarm into it."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.stage_config = stage
        trail_name = f"{stage.prefix}-trail"

        self.key = kms.Key(
            self,
            "AuditKey",
            alias=f"alias/{stage.prefix}-audit",
            description=f"Fleetwarden {stage.name}: CloudTrail, CloudWatch Logs and SNS encryption",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self._allow_services_on_key(trail_name)

        self.access_log_bucket = SecureBucket(
            self,
            "AccessLogs",
            expire_after_days=stage.access_log_retention_days,
            infrequent_access_after_days=30,
        ).bucket
        Validations.of(self.access_log_bucket).acknowledge(
            *[
                Acknowledgment(id=rule, reason="This is the server access-log target bucket; "
                               "logging it into itself would loop.")
                for rule in ("AwsSolutions-S1", "HIPAA.Security-S3BucketLoggingEnabled",
                             "NIST.800.53.R5-S3BucketLoggingEnabled")
            ],
            *[
                Acknowledgment(id=rule, reason="S3 server access logging delivers only to buckets "
                               "with SSE-S3 default encryption, not SSE-KMS.")
                for rule in ("HIPAA.Security-S3DefaultEncryptionKMS",
                             "NIST.800.53.R5-S3DefaultEncryptionKMS")
            ],
        )

        self.ops_topic = sns.Topic(
            self,
            "OpsTopic",
            topic_name=f"{stage.prefix}-ops",
            display_name=f"Fleetwarden {stage.name} operations",
            master_key=self.key,
            enforce_ssl=True,
        )
        if stage.ops_email:
            self.ops_topic.add_subscription(subscriptions.EmailSubscription(stage.ops_email))

        self.trail_log_group, self.trail = self._trail(stage, trail_name)
        self.security_alarms = SecurityAlarms(
            self,
            "SecurityAlarms",
            trail_log_group=self.trail_log_group,
            topic=self.ops_topic,
            namespace=f"Fleetwarden/{stage.name}/Security",
            alarm_name_prefix=stage.prefix,
        )

        self.iot_logging = self._iot_logging(stage) if stage.owns_account_singletons else None

        CfnOutput(self, "OpsTopicArn", value=self.ops_topic.topic_arn,
                  description="SNS topic for operational and security alarms")
        CfnOutput(self, "AuditKeyArn", value=self.key.key_arn,
                  description="KMS key for CloudTrail, CloudWatch Logs and SNS")
        CfnOutput(self, "TrailLogGroupName", value=self.trail_log_group.log_group_name,
                  description="CloudWatch Logs group that receives CloudTrail events")

    def _allow_services_on_key(self, trail_name: str) -> None:
        """Key policy: account administration (CDK default) plus exactly three services."""
        trail_arn = self.format_arn(service="cloudtrail", resource="trail", resource_name=trail_name)
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudTrailEncryptLogs",
            principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
            actions=["kms:GenerateDataKey*"],
            resources=["*"],
            conditions={
                "StringEquals": {"aws:SourceArn": trail_arn},
                "StringLike": {
                    "kms:EncryptionContext:aws:cloudtrail:arn":
                        f"arn:{self.partition}:cloudtrail:*:{self.account}:trail/*"
                },
            },
        ))
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudTrailDescribeKey",
            principals=[iam.ServicePrincipal("cloudtrail.amazonaws.com")],
            actions=["kms:DescribeKey"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
        ))
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchLogsEncryptLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                     "kms:Describe*"],
            resources=["*"],
            conditions={"ArnLike": {
                "kms:EncryptionContext:aws:logs:arn":
                    f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:*"
            }},
        ))
        # Alarms publish to the encrypted SNS topic as the CloudWatch service principal.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublishToEncryptedTopics",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": self.account}},
        ))

    def _trail(self, stage: StageConfig, trail_name: str) -> tuple[logs.ILogGroup, cloudtrail.Trail | None]:
        if stage.existing_trail_log_group:
            # An organisation trail already delivers this account's events here.
            return logs.LogGroup.from_log_group_name(
                self, "ExistingTrailLogGroup", stage.existing_trail_log_group
            ), None
        trail_bucket = SecureBucket(
            self,
            "TrailBucket",
            encryption_key=self.key,
            access_log_bucket=self.access_log_bucket,
            access_log_prefix="cloudtrail-bucket/",
            glacier_after_days=90,
            expire_after_days=stage.trail_retention_days,
        ).bucket
        log_group = logs.LogGroup(
            self,
            "TrailLogGroup",
            log_group_name=f"/{stage.prefix}/cloudtrail",
            retention=log_retention(stage.log_retention_days),
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        trail = cloudtrail.Trail(
            self,
            "Trail",
            trail_name=trail_name,
            bucket=trail_bucket,
            encryption_key=self.key,
            send_to_cloud_watch_logs=True,
            cloud_watch_log_group=log_group,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_file_validation=True,
            management_events=cloudtrail.ReadWriteType.ALL,
        )
        acknowledge_role_policy(trail.node.find_child("LogsRole"), "CloudTrail's delivery into its one log group")
        CfnOutput(self, "TrailArn", value=trail.trail_arn, description="The Fleetwarden CloudTrail trail")
        return log_group, trail

    def _iot_logging(self, stage: StageConfig) -> iot.Logging:
        logs.LogGroup(
            self,
            "IotCoreLogGroup",
            log_group_name=IOT_LOG_GROUP_NAME,
            retention=log_retention(stage.log_retention_days),
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        logging = iot.Logging(self, "IotCoreLogging", log_level=iot.LogLevel[stage.iot_log_level])
        role = logging.node.find_child("Role")
        acknowledge_role_policy(role, "IoT Core writing its logs")
        Validations.of(role).acknowledge(Acknowledgment(
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>"
               f":log-group:{IOT_LOG_GROUP_NAME}:*]",
            reason="IoT Core creates one log stream per client inside the single AWSIotLogsV2 "
                   "group; stream names cannot be known in advance.",
        ))
        return logging
