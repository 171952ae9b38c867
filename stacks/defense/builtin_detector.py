"""The built-in detector, for accounts where Device Defender Detect is not offered.

Telemetry (one aggregate per connection per Firehose batch, from the telemetry transform), every
other message a device sends (alerts, shadow requests, metric reports), presence events and refused connections go into one Kinesis stream
keyed by the connection (refused connections by certificate); the detector folds each shard's
records into per-subject counts held in Lambda tumbling-window state, so a healthy device costs
no database write and a flood spread over many batches still adds up. Authorisation failures
also come from IoT Core's logs through a subscription filter that passes only failures, so that
path costs only on anomalies. Whom each signal is counted against: lambdas/defense/attribution.py.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
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

# A lifecycle event's fields (https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html:
# clientId, timestamp, eventType, sessionIdentifier, principalIdentifier, versionNumber,
# disconnectReason; connect_failed has no versionNumber) -> the detector's names. A field an event
# lacks is left out of the rule's output.
PRESENCE_FIELDS = {"eventType": "event", "clientId": "client_id", "timestamp": "timestamp",
                   "principalIdentifier": "principal", "sessionIdentifier": "session",
                   "versionNumber": "version", "disconnectReason": "disconnect_reason"}
PRESENCE_SQL = ("SELECT 'presence' AS kind, "
                + ", ".join(f"{field} AS {name}" for field, name in PRESENCE_FIELDS.items())
                + " FROM '{topic}'{where}")
# connected / disconnected are keyed by client id (the thing, see attribution.py); connect_failed
# (the "Connect attempt failure event") by the certificate it is counted against, so all refused
# attempts of one certificate reach one shard whatever client ids it claims.
CONNECTED_OR_DISCONNECTED = " WHERE eventType = 'connected' OR eventType = 'disconnected'"
# Device metric reports (Device Defender's report format) reach this rule by Basic Ingest:
# topics.metrics_report_topic, $aws/rules/<this rule>/dt/<thing>/metrics. Defender's own
# $aws/things/<thing>/defender/metrics/json is publish-only ("AWS IoT Device Defender topics only
# support MQTT publish", https://docs.aws.amazon.com/iot/latest/developerguide/reserved-topics.html):
# a rule selecting it receives nothing. The rule's SQL sees the topic without the Basic Ingest
# prefix ("The initial prefix of a Basic Ingest topic ($aws/rules/rule_name) isn't available to the
# topic(Decimal) function", https://docs.aws.amazon.com/iot/latest/developerguide/iot-basic-ingest.html),
# so topic(2) is the thing the device named; clientid() is the thing it connected as (the device
# policy admits only ${iot:Connection.Thing.ThingName} in that topic, and the detector counts a
# mismatch against the client id). Reports come with long (header/metrics/custom_metrics) or short
# (hed/met/cmet) key names; "A report can have both or at least one metrics or custom_metrics
# block" ("Device metrics document specification", https://docs.aws.amazon.com/iot/latest/
# developerguide/detect-device-side-metrics.html). Absent keys are left out of the object.
METRICS_SQL = ("SELECT 'metrics' AS kind, topic(2) AS thing, clientid() AS client_id, "
               "{{'header': header, 'metrics': metrics, 'custom_metrics': custom_metrics, "
               "'hed': hed, 'met': met, 'cmet': cmet}} AS report FROM '{topic}'")
# Every other message a device sends counts toward its message limit too. Alerts (dt/<thing>/alerts)
# go with their size, judged per message against the alert limit: the length of the payload's
# base64, so the alert itself never rides the stream. `*` is the payload as raw binary and
# encode(*, 'base64') its base64 text ("Working with binary payloads",
# https://docs.aws.amazon.com/iot/latest/developerguide/binary-payloads.html, nests it in decode() the
# same way); length(String) counts its characters ("Functions",
# https://docs.aws.amazon.com/iot/latest/developerguide/iot-sql-functions.html).
# Shadow requests: a device publishes to <prefix>/update, /get, /delete ("Publish/Subscribe" in
# https://docs.aws.amazon.com/iot/latest/developerguide/reserved-topics.html#reserved-topics-shadow);
# '+' there takes exactly those, not the service's replies one level deeper (update/accepted...).
MESSAGE_SQL = "SELECT 'message' AS kind, clientid() AS client_id FROM '{topic}'"
ALERT_SQL = ("SELECT 'alert' AS kind, clientid() AS client_id, length(encode(*, 'base64')) AS b64_length "
             "FROM '{topic}'")
SHADOW_REQUESTS = topics.shadow_prefix("+", "+") + "/+"
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
        max_telemetry_bytes: int,
        max_alert_bytes: int,
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
        stage that owns IoT logging). `max_telemetry_bytes` / `max_alert_bytes`: the largest single
        message on each kind of topic, the same limits the Defender profile scopes by topic."""
        super().__init__(scope, construct_id)
        # The alert bucket has a deterministic name; referencing it by name keeps this stack
        # from exporting anything back to the ingest stack.
        error_bucket = s3.Bucket.from_bucket_name(self, "ErrorBucket", error_bucket_name)
        # --- presence and device reports join the telemetry aggregates on the stream -----------
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
                 PRESENCE_SQL.format(topic=topics.presence_topic(), where=CONNECTED_OR_DISCONNECTED),
                 "${clientId}"),
                ("ConnectFailedRule", rule_name(stage_name, "connect_failed"),
                 PRESENCE_SQL.format(topic=topics.presence_topic("connect_failed"), where=""),
                 "${principalIdentifier}"),
                ("DeviceMetricsRule", topics.metrics_rule_name(stage_name),
                 METRICS_SQL.format(topic=topics.metrics_report_rule_topic("+")), "${clientid()}"),
                ("AlertsCountRule", rule_name(stage_name, "alert_count"),
                 ALERT_SQL.format(topic=topics.alerts_topic("+")), "${clientid()}"),
                ("ShadowCountRule", rule_name(stage_name, "shadow_count"),
                 MESSAGE_SQL.format(topic=SHADOW_REQUESTS), "${clientid()}"),
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
                "MAX_AUTH_FAILURES": str(limits.authorization_failures),
                "MAX_TELEMETRY_BYTES": str(max_telemetry_bytes),
                "MAX_ALERT_BYTES": str(max_alert_bytes),
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
        # Is a refused connection's certificate attached to the thing it claimed? Asked only when a
        # certificate crosses a limit (lambdas/defense/attribution.py); ListThingPrincipals takes a
        # thing ARN, and the claimed thing may be any.
        things = Stack.of(self).format_arn(service="iot", resource="thing", resource_name="*")
        prove_attachment = iam.PolicyStatement(sid="ProveAttachment", actions=["iot:ListThingPrincipals"],
                                               resources=[things])
        self.detector.add_to_role_policy(prove_attachment)
        _acknowledge_any_thing(self.detector.role)

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
            self.auth_failures.add_to_role_policy(prove_attachment)
            _acknowledge_any_thing(self.auth_failures.role)
            allow_publish(self.auth_failures, violation_topic, key)
            allow_key_use(self.auth_failures, key)
            logs.SubscriptionFilter(
                self, "AuthFailureFilter",
                log_group=logs.LogGroup.from_log_group_name(self, "IotLogs", IOT_LOG_GROUP_NAME),
                destination=log_destinations.LambdaDestination(self.auth_failures),
                filter_pattern=logs.FilterPattern.literal(AUTH_FAILURE_PATTERN),
            )
        self.functions = [self.detector] + ([self.auth_failures] if self.auth_failures else [])


def _acknowledge_any_thing(role: iam.IRole) -> None:
    Validations.of(role).acknowledge(Acknowledgment(
        id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*]",
        reason="ListThingPrincipals (read-only) on the thing a refused connection claimed, which can be "
               "any thing of the account; asked only when a certificate crosses a detection limit."))
