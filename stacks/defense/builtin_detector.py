"""The built-in detector, for accounts where Device Defender Detect is not offered.

Telemetry (tapped from the telemetry rule), presence events and device metric reports go into
one Kinesis stream keyed by device; the detector folds each shard's records into per-device
counts held in Lambda tumbling-window state, so a healthy device costs no database write and a
flood spread over many batches still adds up. Authorisation failures come from IoT Core's logs
through a subscription filter that passes only failures, so that path costs only on anomalies.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as log_destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas.shared import topics
from stacks.audit.iot_logging import IOT_LOG_GROUP_NAME
from stacks.config import DetectionLimits
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use, allow_publish
from lambdas.shared.topics import rule_name
from stacks.platform.iot_rule import finish_rule_role, rule_role, topic_rule
from stacks.platform.nag import acknowledge_dead_letter_grant
from stacks.platform.table import secure_table

PRESENCE_SQL = ("SELECT 'presence' AS kind, eventType AS event, clientId AS client_id, timestamp, "
                "disconnectReason AS disconnect_reason FROM '{topic}'")
# Device Defender reports come with long (header/metrics) or short (hed/met) key names; the
# absent pair is simply left out of the object.
METRICS_SQL = ("SELECT 'metrics' AS kind, topic(3) AS thing, {{'header': header, 'metrics': metrics, "
               "'hed': hed, 'met': met}} AS report FROM '{topic}'")
AUTH_FAILURE_PATTERN = '{ $.reason = "AUTHORIZATION_FAILURE" }'


class BuiltinDetector(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        stage_name: str,
        limits: DetectionLimits,
        window_seconds: int,
        watch_auth_failures: bool,
        profile_name: str,
        observations: kinesis.IStream,
        violation_topic: sns.ITopic,
        key: kms.IKey,
        defaults: PlatformDefaults,
        error_bucket_name: str,
        dead_letters: sqs.IQueue,
    ) -> None:
        """`watch_auth_failures`: also count authorisation failures from IoT Core's logs (the
        stage that owns IoT logging)."""
        super().__init__(scope, construct_id)
        # The alert bucket has a deterministic name; referencing it by name keeps this stack
        # from exporting anything back to the ingest stack.
        error_bucket = s3.Bucket.from_bucket_name(self, "ErrorBucket", error_bucket_name)
        # --- presence and device reports join the telemetry tap on the stream -------------------
        role = rule_role(self, "Detector rules: put presence events and device reports")
        self.rules = [
            topic_rule(
                self, rule_id,
                name=name,
                description="Feeds the built-in detector",
                sql=sql,
                action=actions.KinesisPutRecordAction(observations, partition_key=partition, role=role),
                role=role, error_bucket=error_bucket,
            )
            for rule_id, name, sql, partition in (
                ("PresenceRule", rule_name(stage_name, "presence"),
                 PRESENCE_SQL.format(topic=topics.presence_topic()), "${clientId}"),
                ("DeviceMetricsRule", rule_name(stage_name, "device_metrics"),
                 METRICS_SQL.format(topic=topics.defender_metrics_topic("+")), "${topic(3)}"),
            )
        ]
        finish_rule_role(role, key=observations.encryption_key, purpose="the detector's rules",
                         error_bucket=error_bucket, error_bucket_label=(
                             f"arn:<AWS::Partition>:s3:::{prefix}-alerts-<AWS::AccountId>-<AWS::Region>"))

        # --- the windowed detector --------------------------------------------------------------
        self.detector = PythonFunction(
            self, "Detector",
            handler="defense.detector.handler.lambda_handler",
            description="Counts each device's messages, bytes and connections per window; "
                        "publishes a violation when a limit is crossed",
            service="detector",
            environment={
                "VIOLATION_TOPIC_ARN": violation_topic.topic_arn,
                "PROFILE_NAME": profile_name,
                "WINDOW_SECONDS": str(window_seconds),
                "MAX_MESSAGES": str(limits.messages),
                "MAX_BYTES": str(limits.message_bytes),
                "MAX_CONNECTS": str(limits.connection_attempts),
                "MAX_DISCONNECTS": str(limits.disconnects),
                "MAX_ESTABLISHED_TCP": str(limits.established_tcp_connections),
            },
            reserved_concurrency=20,
            timeout=Duration.minutes(1),
            synchronous_reason="It consumes a Kinesis stream; failed batches go to the on-failure "
                               "queue of the event source mapping.",
            defaults=defaults,
        ).function
        self.detector.add_event_source(event_sources.KinesisEventSource(
            observations,
            starting_position=lambda_.StartingPosition.LATEST,
            batch_size=500,
            max_batching_window=Duration.seconds(5),
            tumbling_window=Duration.seconds(window_seconds),
            retry_attempts=3,
            bisect_batch_on_error=False,  # a split batch would be folded with the wrong state
            on_failure=event_sources.SqsDlq(dead_letters),
        ))
        allow_publish(self.detector, violation_topic, key)
        acknowledge_dead_letter_grant(self.detector.role)

        # --- authorisation failures from IoT Core logs (the stage that owns IoT logging) ----------
        self.auth_failures = None
        if watch_auth_failures:
            counters = secure_table(
                self, "Counters",
                table_name=f"{prefix}-detector-counters",
                partition_key="pk",
                key=key,
                time_to_live_attribute="expires_at",
                removal_policy=RemovalPolicy.DESTROY,
                backup_reason="Counters live one detection window; they are rebuilt by the next "
                              "failures and hold nothing worth restoring.",
            )
            self.auth_failures = PythonFunction(
                self, "AuthFailureDetector",
                handler="defense.auth_failures.handler.lambda_handler",
                description="Counts authorisation failures per client per window from IoT Core logs",
                service="auth-failure-detector",
                environment={
                    "COUNTERS_TABLE": counters.table_name,
                    "VIOLATION_TOPIC_ARN": violation_topic.topic_arn,
                    "PROFILE_NAME": profile_name,
                    "WINDOW_SECONDS": str(window_seconds),
                    "MAX_AUTH_FAILURES": str(limits.authorization_failures),
                },
                reserved_concurrency=5,
                synchronous_reason="CloudWatch Logs invokes it for failure log lines only and "
                                   "retries delivery itself; the log lines stay in the log group.",
                defaults=defaults,
            ).function
            self.auth_failures.add_to_role_policy(iam.PolicyStatement(
                actions=["dynamodb:UpdateItem"], resources=[counters.table_arn]))
            allow_publish(self.auth_failures, violation_topic, key)
            allow_key_use(self.auth_failures, key)
            logs.SubscriptionFilter(
                self, "AuthFailureFilter",
                log_group=logs.LogGroup.from_log_group_name(self, "IotLogs", IOT_LOG_GROUP_NAME),
                destination=log_destinations.LambdaDestination(self.auth_failures),
                filter_pattern=logs.FilterPattern.literal(AUTH_FAILURE_PATTERN),
            )
        self.functions = [self.detector] + ([self.auth_failures] if self.auth_failures else [])
