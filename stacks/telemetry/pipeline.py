"""Telemetry: Basic Ingest rule -> Firehose (validating transform, dynamic partitioning,
GZIP, KMS) -> S3. Bad records are routed to an error prefix with their reason, never dropped."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_iot_alpha as iot
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from lambdas.shared import topics
from lambdas.telemetry.transform.transform import S3_PREFIX_TEMPLATE
from stacks.config import StageConfig
from stacks.platform.nag import acknowledge_role_policy
from stacks.platform.function import PythonFunction
from stacks.platform.retention import log_retention

# The rule hands the raw payload (base64) to the transform, so the transform sees exactly what
# the device sent, including payloads that are not JSON at all.
TELEMETRY_SQL = (
    "SELECT encode(*, 'base64') AS payload, topic(2) AS thing, clientid() AS client_id, "
    "principal() AS principal, timestamp() AS received_at FROM '{topic}'"
)
FIREHOSE_FAILED_PREFIX = "firehose-failed/"


def rule_error_action(bucket: s3.IBucket, rule_name: str, role: iam.IRole) -> actions.S3PutObjectAction:
    """Where a rule puts a message its action could not deliver: one object per failure."""
    return actions.S3PutObjectAction(
        bucket, role=role,
        key=f"rule-errors/{rule_name}/${{parse_time('yyyy/MM/dd', timestamp())}}/${{timestamp()}}-${{newuuid()}}.json",
    )


def acknowledge_rule_writes(role: iam.IRole, bucket: s3.IBucket, bucket_arn_label: str | None = None) -> None:
    """The alpha S3 action grants s3:PutObject on the bucket's objects; its object names are
    made per message (substitution templates), so no narrower resource exists at deploy time.
    `bucket_arn_label`: how cdk-nag prints the bucket ARN when it is not a bucket of this stack."""
    label = bucket_arn_label or f"<{Stack.of(bucket).get_logical_id(bucket.node.default_child)}.Arn>"
    Validations.of(role).acknowledge(Acknowledgment(
        id=f"AwsSolutions-IAM5[Resource::{label}/*]",
        reason="IoT rule S3 actions write one object per message, named at run time from the "
               "topic, time and a UUID; the role can only put objects into this one bucket.",
    ))


class TelemetryPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        rule_name: str,
        bucket: s3.IBucket,
        error_bucket: s3.IBucket,
        data_key: kms.IKey,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.transform = PythonFunction(
            self, "Transform",
            handler="telemetry.transform.handler.lambda_handler",
            description="Validates every telemetry record and routes failures to an error prefix",
            service="telemetry-transform",
            environment={"MAX_PAYLOAD_BYTES": str(stage.max_telemetry_bytes)},
            log_key=log_key,
            stage=stage,
            reserved_concurrency=50,
            timeout=Duration.minutes(1),
            synchronous_reason="Firehose invokes the transform synchronously and retries it; "
                               "records it still cannot process go to the firehose-failed/ prefix.",
        ).function

        delivery_logs = logs.LogGroup(
            self, "DeliveryLogs",
            retention=log_retention(stage.log_retention_days),
            encryption_key=log_key, removal_policy=RemovalPolicy.RETAIN,
        )
        delivery_stream_log = logs.LogStream(self, "DeliveryLogStream", log_group=delivery_logs)
        role = iam.Role(self, "DeliveryRole", assumed_by=iam.ServicePrincipal(
            "firehose.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:ListBucket",
                     "s3:ListBucketMultipartUploads", "s3:PutObject"],
            resources=[bucket.bucket_arn, bucket.arn_for_objects("telemetry/*"),
                       bucket.arn_for_objects("telemetry-errors/*"),
                       bucket.arn_for_objects(f"{FIREHOSE_FAILED_PREFIX}*")],
        ))
        role.add_to_policy(iam.PolicyStatement(
            actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[data_key.key_arn]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"],
            resources=[self.transform.function_arn]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["logs:PutLogEvents"], resources=[delivery_logs.log_group_arn]))
        acknowledge_role_policy(role, "Firehose delivering telemetry")
        Validations.of(role).acknowledge(*[Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}*]",
            reason="Firehose writes one object per partition and buffer; object names are made at "
                   "run time under this one prefix.",
        ) for bucket_id, prefix in self._bucket_prefixes(bucket)] + [Acknowledgment(
            id="AwsSolutions-IAM5[Resource::<" + self._logical(delivery_logs) + ".Arn>]",
            reason="Its own log group only (log streams are created inside it).",
        )])

        self.stream = firehose.CfnDeliveryStream(
            self, "Stream",
            delivery_stream_name=f"{stage.prefix}-telemetry",
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream.
            DeliveryStreamEncryptionConfigurationInputProperty(
                key_type="CUSTOMER_MANAGED_CMK", key_arn=data_key.key_arn),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.
            ExtendedS3DestinationConfigurationProperty(
                bucket_arn=bucket.bucket_arn,
                role_arn=role.role_arn,
                # The transform names each record's partition: telemetry/thing=../date=../ for
                # good records, telemetry-errors/reason=../date=../ for the rest.
                prefix=S3_PREFIX_TEMPLATE,
                error_output_prefix=FIREHOSE_FAILED_PREFIX
                + "!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/",
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=stage.telemetry_buffer_seconds, size_in_m_bs=64),
                compression_format="GZIP",
                encryption_configuration=firehose.CfnDeliveryStream.EncryptionConfigurationProperty(
                    kms_encryption_config=firehose.CfnDeliveryStream.KMSEncryptionConfigProperty(
                        awskms_key_arn=data_key.key_arn)),
                dynamic_partitioning_configuration=firehose.CfnDeliveryStream.
                DynamicPartitioningConfigurationProperty(
                    enabled=True,
                    retry_options=firehose.CfnDeliveryStream.RetryOptionsProperty(duration_in_seconds=300)),
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True,
                    processors=[firehose.CfnDeliveryStream.ProcessorProperty(
                        type="Lambda",
                        parameters=[
                            firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                parameter_name="LambdaArn", parameter_value=self.transform.function_arn),
                            firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                parameter_name="BufferSizeInMBs", parameter_value="1"),
                            firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                parameter_name="BufferIntervalInSeconds", parameter_value="60"),
                            firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                parameter_name="NumberOfRetries", parameter_value="3"),
                        ],
                    )],
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True, log_group_name=delivery_logs.log_group_name,
                    log_stream_name=delivery_stream_log.log_stream_name),
            ),
        )
        self.stream.node.add_dependency(role)

        rule_role = iam.Role(self, "RuleRole", assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
                             description="Telemetry rule: put records into its delivery stream")
        stream_ref = firehose.DeliveryStream.from_delivery_stream_attributes(
            self, "StreamRef", delivery_stream_arn=self.stream.attr_arn, role=rule_role)
        # Importing a stream adds CDK's Firehose CIDR-range mapping, used only by Redshift and
        # Splunk destinations; nothing here references it, so it would be dead template weight.
        Stack.of(self).node.try_remove_child("@aws-cdk--aws-kinesisfirehose.CidrBlocks")
        self.rule = iot.TopicRule(
            self, "Rule",
            topic_rule_name=rule_name,
            description="Basic Ingest telemetry -> validating Firehose -> S3",
            sql=iot.IotSql.from_string_as_ver20160323(
                TELEMETRY_SQL.format(topic=topics.telemetry_rule_topic("+"))),
            actions=[actions.FirehosePutRecordAction(stream_ref, role=rule_role)],
            error_action=rule_error_action(error_bucket, rule_name, rule_role),
        )
        rule_role.add_to_policy(iam.PolicyStatement(
            actions=["kms:GenerateDataKey", "kms:Encrypt"], resources=[data_key.key_arn]))
        acknowledge_role_policy(rule_role, "the telemetry rule")
        acknowledge_rule_writes(rule_role, error_bucket)
        self.rule_role = rule_role

    @staticmethod
    def _logical(construct) -> str:
        return Stack.of(construct).get_logical_id(construct.node.default_child)

    def _bucket_prefixes(self, bucket):
        logical = self._logical(bucket)
        return [(logical, p) for p in ("telemetry/", "telemetry-errors/", FIREHOSE_FAILED_PREFIX)]
