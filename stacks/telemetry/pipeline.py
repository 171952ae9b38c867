"""Telemetry: Basic Ingest rule -> Firehose (validating transform, dynamic partitioning,
GZIP, KMS) -> S3. Bad records are routed to an error prefix with their reason, never dropped."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from lambdas.shared import topics
from lambdas.telemetry.layout import S3_PREFIX_TEMPLATE
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction
from stacks.platform.iot_rule import finish_rule_role, rule_role, topic_rule
from stacks.platform.nag import acknowledge_role_policy, logical_id

# The rule hands the raw payload (base64) to the transform, so the transform sees exactly what
# the device sent, including payloads that are not JSON at all.
TELEMETRY_SQL = (
    "SELECT encode(*, 'base64') AS payload, topic(2) AS thing, clientid() AS client_id, "
    "principal() AS principal, timestamp() AS received_at FROM '{topic}'"
)
# The transform puts good records under the first prefix and rejected ones under the second.
DATA_PREFIXES = ("telemetry/", "telemetry-errors/")
FIREHOSE_FAILED_PREFIX = "firehose-failed/"


class TelemetryPipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        rule_name: str,
        max_record_bytes: int,
        buffer_seconds: int,
        bucket: s3.IBucket,
        error_bucket: s3.IBucket,
        data_key: kms.IKey,
        defaults: PlatformDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        self.transform = PythonFunction(
            self, "Transform",
            handler="telemetry.transform.handler.lambda_handler",
            description="Validates every telemetry record and routes failures to an error prefix",
            service="telemetry-transform",
            environment={"MAX_PAYLOAD_BYTES": str(max_record_bytes)},
            defaults=defaults,
            reserved_concurrency=50,
            timeout=Duration.minutes(1),
            synchronous_reason="Firehose invokes the transform synchronously and retries it; "
                               "records it still cannot process go to the firehose-failed/ prefix.",
        ).function

        delivery_logs = defaults.log_group(self, "DeliveryLogs")
        delivery_stream_log = logs.LogStream(self, "DeliveryLogStream", log_group=delivery_logs)
        role = iam.Role(self, "DeliveryRole", assumed_by=iam.ServicePrincipal(
            "firehose.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:ListBucket",
                     "s3:ListBucketMultipartUploads", "s3:PutObject"],
            resources=[bucket.bucket_arn, *[bucket.arn_for_objects(f"{prefix}*") for prefix in (
                *DATA_PREFIXES, FIREHOSE_FAILED_PREFIX)]],
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
            id=f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/{prefix}*]",
            reason="Firehose writes one object per partition and buffer; object names are made at "
                   "run time under this one prefix.",
        ) for prefix in (*DATA_PREFIXES, FIREHOSE_FAILED_PREFIX)] + [Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::<{logical_id(delivery_logs)}.Arn>]",
            reason="Its own log group only (log streams are created inside it).",
        )])

        self.stream = firehose.CfnDeliveryStream(
            self, "Stream",
            delivery_stream_name=f"{prefix}-telemetry",
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
                    interval_in_seconds=buffer_seconds, size_in_m_bs=64),
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

        self.rule_role = rule_role(self, "Telemetry rule: put records into its delivery stream")
        stream_ref = firehose.DeliveryStream.from_delivery_stream_attributes(
            self, "StreamRef", delivery_stream_arn=self.stream.attr_arn, role=self.rule_role)
        # Importing a stream adds CDK's Firehose CIDR-range mapping, used only by Redshift and
        # Splunk destinations; nothing here references it, so it would be dead template weight.
        Stack.of(self).node.try_remove_child("@aws-cdk--aws-kinesisfirehose.CidrBlocks")
        self.rule = topic_rule(
            self, "Rule",
            name=rule_name,
            description="Basic Ingest telemetry -> validating Firehose -> S3",
            sql=TELEMETRY_SQL.format(topic=topics.telemetry_rule_topic("+")),
            action=actions.FirehosePutRecordAction(stream_ref, role=self.rule_role),
            role=self.rule_role, error_bucket=error_bucket,
        )
        finish_rule_role(self.rule_role, key=data_key, purpose="the telemetry rule", error_bucket=error_bucket)

    def tap(self, stream: kinesis.IStream, *, partition_key: str) -> None:
        """Send every telemetry record to `stream` as well (the rule's second action)."""
        self.rule.add_action(actions.KinesisPutRecordAction(stream, partition_key=partition_key, role=self.rule_role))
