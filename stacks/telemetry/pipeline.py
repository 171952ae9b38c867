"""Telemetry: Basic Ingest rule -> Firehose (validating transform, dynamic partitioning by day, hour
and shard, KMS) -> S3 as GZIP JSON lines (telemetry_format json, the default: the cost goal), or with
record format conversion to Parquet/Snappy against the Glue table (telemetry_format parquet, for
fleets that query a lot). Bad records land as JSON under telemetry-errors/, never dropped.

The three Firehose features combine on one stream, each documented with the others: a Lambda
transform may turn any input into the JSON that format conversion reads ("Convert input data
format in Amazon Data Firehose", record-format-conversion.html: "use AWS Lambda to transform it to
JSON first"); dynamic partitioning takes its keys from that Lambda ("Understand partitioning keys",
dynamic-partitioning-partitioning-keys.html: partitionKeys in the record's metadata; "Data
transformation -> partition keys" is the order in dynamic-partitioning-multirecord-deaggergation.html).
What does not combine is an "Ok" error line: with conversion on, every Ok record must be a row of
the table, so the transform answers rejections ProcessingFailed and Firehose writes them (and any
record that fails conversion) as JSON documents under the error prefix
("Handle failure in data transformation"; "Handling errors for data format conversion",
record-format-conversion-error-handling.html). Conversion turns S3 compression off and compresses
the Parquet itself (Snappy) ("Enable record format conversion").
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from lambdas.shared import topics
from lambdas.telemetry.layout import DATA_PREFIX, ERROR_PREFIX, ERROR_PREFIX_TEMPLATE, S3_PREFIX_TEMPLATE
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use
from stacks.platform.table import secure_table
from stacks.platform.iot_rule import finish_rule_role, rule_role, topic_rule
from stacks.platform.nag import acknowledge_role_policy, logical_id

# The rule hands the raw payload (base64) to the transform, so the transform sees exactly what
# the device sent, including payloads that are not JSON at all.
TELEMETRY_SQL = (
    "SELECT encode(*, 'base64') AS payload, topic(2) AS thing, clientid() AS client_id, "
    "principal() AS principal, timestamp() AS received_at FROM '{topic}'"
)
# Firehose writes rows (JSON lines or Parquet) under the first prefix, JSON error documents under the second.
DATA_PREFIXES = (DATA_PREFIX, ERROR_PREFIX)


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
        processing_seconds: int,
        shards: int,
        table_arns: list[str],
        database_name: str,
        table_name: str,
        parquet: bool,
        bucket: s3.IBucket,
        error_bucket: s3.IBucket,
        data_key: kms.IKey,
        defaults: PlatformDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix, self.data_key = prefix, data_key
        self.transform = PythonFunction(
            self, "Transform",
            handler="telemetry.transform.handler.lambda_handler",
            description="Validates every telemetry record and routes failures to an error prefix",
            service="telemetry-transform",
            environment={"MAX_PAYLOAD_BYTES": str(max_record_bytes), "TELEMETRY_SHARDS": str(shards)},
            defaults=defaults,
            reserved_concurrency=50,
            timeout=Duration.minutes(1),
            synchronous_reason="Firehose invokes the transform synchronously and retries it; "
                               "records it still cannot process go to the telemetry-errors/ prefix.",
        ).function

        delivery_logs = defaults.log_group(self, "DeliveryLogs")
        delivery_stream_log = logs.LogStream(self, "DeliveryLogStream", log_group=delivery_logs)
        role = iam.Role(self, "DeliveryRole", assumed_by=iam.ServicePrincipal(
            "firehose.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}))
        role.add_to_policy(iam.PolicyStatement(
            actions=["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:ListBucket",
                     "s3:ListBucketMultipartUploads", "s3:PutObject"],
            resources=[bucket.bucket_arn, *[bucket.arn_for_objects(f"{prefix}*") for prefix in DATA_PREFIXES]],
        ))
        if parquet:
            # Record format conversion reads the table's schema ("Firehose access to AWS Glue for
            # data format conversion", controlling-access.html: GetTable, GetTableVersion(s)).
            role.add_to_policy(iam.PolicyStatement(
                actions=["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"], resources=table_arns))
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
        ) for prefix in DATA_PREFIXES] + [Acknowledgment(
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
                # The transform names each record's partition: telemetry/day=../hour=../shard=../
                # (24 x N partitions a day, however large the fleet). Everything Firehose could
                # not deliver as a row: telemetry-errors/<processing-failed|format-conversion-failed|
                # ...>/day=../, as JSON.
                prefix=S3_PREFIX_TEMPLATE,
                error_output_prefix=ERROR_PREFIX_TEMPLATE,
                # 64 MiB is the least dynamic partitioning takes ("Enable dynamic partitioning").
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=buffer_seconds, size_in_m_bs=64),
                # Conversion compresses the Parquet (Snappy) itself; JSON lines are GZIP-compressed.
                compression_format="UNCOMPRESSED" if parquet else "GZIP",
                data_format_conversion_configuration=None if not parquet else firehose.CfnDeliveryStream.
                DataFormatConversionConfigurationProperty(
                    enabled=True,
                    # OpenX, case-sensitive: metric names keep their case, columns match the
                    # transform's keys exactly ("OpenXJsonSerDe", Firehose API reference).
                    input_format_configuration=firehose.CfnDeliveryStream.InputFormatConfigurationProperty(
                        deserializer=firehose.CfnDeliveryStream.DeserializerProperty(
                            open_x_json_ser_de=firehose.CfnDeliveryStream.OpenXJsonSerDeProperty(
                                case_insensitive=False, convert_dots_in_json_keys_to_underscores=False))),
                    output_format_configuration=firehose.CfnDeliveryStream.OutputFormatConfigurationProperty(
                        serializer=firehose.CfnDeliveryStream.SerializerProperty(
                            parquet_ser_de=firehose.CfnDeliveryStream.ParquetSerDeProperty(compression="SNAPPY"))),
                    schema_configuration=firehose.CfnDeliveryStream.SchemaConfigurationProperty(
                        catalog_id=Aws.ACCOUNT_ID, database_name=database_name, table_name=table_name,
                        region=Aws.REGION, role_arn=role.role_arn, version_id="LATEST"),
                ),
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
                                parameter_name="BufferIntervalInSeconds",
                                parameter_value=str(processing_seconds)),
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

    def feed_detector(self, stream: kinesis.IStream) -> None:
        """The transform sends each batch's per-connection aggregates to `stream` (the built-in
        detector's): no second rule action, one Kinesis record per connection per batch, once per
        batch (Powertools idempotency records in their own table, expiring after an hour)."""
        self.batches = secure_table(
            self, "SentBatches",
            table_name=f"{self.prefix}-telemetry-sent-batches",
            partition_key="id",  # Powertools idempotency's key attribute
            key=self.data_key,
            time_to_live_attribute="expiration",
            removal_policy=RemovalPolicy.DESTROY,
            backup_reason="Each record only stops a Firehose retry from sending a batch's aggregates "
                          "twice and expires within an hour; losing them costs at most a double count "
                          "of one batch.",
        )
        self.transform.add_environment("BATCH_TABLE", self.batches.table_name)
        self.transform.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            resources=[self.batches.table_arn]))
        allow_key_use(self.transform, self.data_key)
        self.transform.add_environment("OBSERVATION_STREAM", stream.stream_name)
        # PutRecords, ListShards (to pack each shard's aggregates in one record), and the stream
        # key for server-side encryption of what it puts
        # ("Permissions to use user-generated KMS master keys", Kinesis developer guide:
        # producers need kms:GenerateDataKey).
        self.transform.add_to_role_policy(iam.PolicyStatement(
            actions=["kinesis:PutRecords", "kinesis:ListShards"], resources=[stream.stream_arn]))
        if stream.encryption_key is not None:
            self.transform.add_to_role_policy(iam.PolicyStatement(
                actions=["kms:GenerateDataKey"], resources=[stream.encryption_key.key_arn]))
