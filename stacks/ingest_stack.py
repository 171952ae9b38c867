"""IngestStack: telemetry and alert pipelines into encrypted S3, and the alerts API."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Stack
from constructs import Construct

from lambdas.shared.topics import rule_name
from stacks.alerts.api import AlertsApi
from stacks.alerts.pipeline import AlertPipeline
from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.identity_stack import IdentityStack
from stacks.platform.bucket import SecureBucket
from stacks.platform.key import allow_service, customer_key
from stacks.telemetry.catalog import RESULTS_DAYS, RESULTS_PREFIX, TelemetryCatalog
from stacks.telemetry.observations import observation_stream
from stacks.telemetry.pipeline import TelemetryPipeline


class IngestStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack,
        identity: IdentityStack, **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(identity)

        self.data_key = customer_key(
            self, "DataKey",
            alias=f"alias/{stage.prefix}-data",
            description=f"Fleetwarden {stage.name}: device data, alert queue, alert index, secrets",
        )
        # S3 sends alert notifications into the KMS-encrypted queue as itself.
        allow_service(
            self.data_key, sid="S3NotifiesEncryptedQueue", service="s3.amazonaws.com",
            actions=["kms:GenerateDataKey", "kms:Decrypt"],
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        )

        self.telemetry_bucket = SecureBucket(
            self, "TelemetryData",
            encryption_key=self.data_key,
            access_log_bucket=audit.access_log_bucket,
            access_log_prefix="telemetry-bucket/",
            infrequent_access_after_days=stage.telemetry_infrequent_access_days,
            glacier_instant_after_days=stage.telemetry_glacier_ir_days,
            expire_after_days=stage.telemetry_retention_days,
            expire_prefixes={RESULTS_PREFIX: RESULTS_DAYS},  # Athena query results
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

        # The Glue table Firehose converts to and Athena reads, and the workgroup to query it.
        self.catalog = TelemetryCatalog(
            self, "TelemetryCatalog", prefix=stage.prefix, bucket=self.telemetry_bucket, data_key=self.data_key,
            shards=stage.telemetry_shards, bytes_scanned_limit_mb=stage.athena_bytes_scanned_limit_mb,
            file_format=stage.telemetry_format)
        self.telemetry = TelemetryPipeline(
            self, "Telemetry",
            prefix=stage.prefix, rule_name=identity.telemetry_rule_name,
            max_record_bytes=stage.max_telemetry_bytes, buffer_seconds=stage.telemetry_buffer_seconds,
            processing_seconds=stage.telemetry_processing_seconds, shards=stage.telemetry_shards,
            table_arns=self.catalog.table_arns, database_name=self.catalog.database_name,
            table_name=self.catalog.table_name, parquet=stage.telemetry_format == "parquet",
            bucket=self.telemetry_bucket, error_bucket=self.alerts_bucket,
            data_key=self.data_key, defaults=audit.defaults,
        )
        self.telemetry.stream.node.add_dependency(self.catalog.table)  # conversion reads its schema
        # The built-in detector counts telemetry from the transform's per-batch aggregates.
        self.observations = None
        if stage.detect in ("builtin", "both"):
            self.observations = observation_stream(
                self, "Observations", name=f"{stage.prefix}-observations", key=self.data_key)
            # Keyed by the connection, so even a spoofed topic counts against its sender.
            self.telemetry.feed_detector(self.observations)
            CfnOutput(self, "ObservationStreamName", value=self.observations.stream_name)

        self.alerts = AlertPipeline(
            self, "Alerts",
            prefix=stage.prefix, rule_name=rule_name(stage.name, "alerts"),
            classifier_url=stage.classifier_url,
            bucket=self.alerts_bucket, data_key=self.data_key, defaults=audit.defaults,
            ops_topic=audit.ops_topic,
        )
        self.alerts_api = AlertsApi(
            self, "AlertsApi",
            prefix=stage.prefix, user_pool=identity.user_pool,
            alerts_table=self.alerts.alerts_table, bucket=self.alerts_bucket, data_key=self.data_key,
            audit_table=identity.audit_table, audit_key=identity.data_key, defaults=audit.defaults,
        )

        # What the defense stack's dashboard watches.
        self.functions = [self.telemetry.transform, self.alerts.processor, self.alerts_api.function]
        self.telemetry_rule_name = self.telemetry.rule.topic_rule_name
        self.alert_rule_name = self.alerts.rule.topic_rule_name
        self.alert_dead_letters = self.alerts.dead_letters

        CfnOutput(self, "TelemetryBucketName", value=self.telemetry_bucket.bucket_name)
        CfnOutput(self, "AlertBucketName", value=self.alerts_bucket.bucket_name)
        CfnOutput(self, "TelemetryRuleName", value=identity.telemetry_rule_name)
        CfnOutput(self, "TelemetryDatabase", value=self.catalog.database_name)
        CfnOutput(self, "TelemetryWorkGroup", value=self.catalog.workgroup_name)
        CfnOutput(self, "AlertDeadLetterQueueUrl", value=self.alert_dead_letters.queue_url)
