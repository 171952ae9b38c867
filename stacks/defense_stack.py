"""DefenseStack: detection (Device Defender and/or the built-in detector), automatic
containment, fleet audits, mitigation actions, and the fleet dashboard."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.defense.auto_response import AutoResponse
from stacks.defense.builtin_detector import BuiltinDetector
from stacks.defense.defender_profile import DefenderProfile
from stacks.defense.fleet_audit import FleetAudit, MitigationActions
from stacks.defense.dashboard import FleetDashboard
from stacks.identity_stack import IdentityStack
from stacks.ingest_stack import IngestStack


class DefenseStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack,
        identity: IdentityStack, ingest: IngestStack, **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(ingest)
        registry = identity.registry

        self.key = kms.Key(
            self, "DefenseKey",
            alias=f"alias/{stage.prefix}-defense",
            description=f"Fleetwarden {stage.name}: violations, incidents, detector state",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Both detection sources publish Device Defender's alert format here.
        self.violation_topic = sns.Topic(
            self, "Violations",
            topic_name=f"{stage.prefix}-violations",
            display_name=f"Fleetwarden {stage.name} device violations",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.dead_letters = sqs.Queue(
            self, "DeadLetters",
            queue_name=f"{stage.prefix}-defense-dlq",
            encryption=sqs.QueueEncryption.KMS, encryption_master_key=self.key,
            retention_period=Duration.days(14), enforce_ssl=True,
        )
        Validations.of(self.dead_letters).acknowledge(Acknowledgment(
            id="AwsSolutions-SQS3",
            reason="This queue is itself the dead-letter destination of the auto-response and the "
                   "detector; its depth alarms the ops topic.",
        ))

        self.profile_name = f"{stage.prefix}-fleet"
        self.defender = DefenderProfile(
            self, "Defender",
            stage=stage, fleet_group_arn=registry.fleet_group.attr_arn,
            violation_topic=self.violation_topic, topic_key=self.key,
        ) if stage.detect in ("defender", "both") else None
        self.detector = BuiltinDetector(
            self, "Detector",
            stage=stage, profile_name=f"{stage.prefix}-builtin",
            observations=ingest.observations, violation_topic=self.violation_topic,
            key=self.key, log_key=audit.key, error_bucket_name=ingest.alerts_bucket_name,
            dead_letters=self.dead_letters,
        ) if ingest.observations is not None else None

        self.response = AutoResponse(
            self, "Response",
            stage=stage, violation_topic=self.violation_topic,
            ops_topic=audit.ops_topic, ops_key=audit.key,
            quarantine_group=registry.quarantine_group,
            audit_table=identity.audit_table, audit_key=identity.data_key,
            key=self.key, log_key=audit.key, dead_letters=self.dead_letters,
        )
        self.mitigations = MitigationActions(
            self, "Mitigations",
            stage=stage, quarantine_group=registry.quarantine_group,
            ops_topic=audit.ops_topic, ops_key=audit.key,
        )
        # The audit configuration exists once per account: only the owning stage sets it.
        self.fleet_audit = FleetAudit(
            self, "FleetAudit", stage=stage, ops_topic=audit.ops_topic, ops_key=audit.key,
        ) if stage.owns_account_singletons else None

        self.dashboard = FleetDashboard(
            self, "Dashboard",
            stage=stage, defense=self, ingest=ingest, identity=identity, ops_topic=audit.ops_topic,
        )
        CfnOutput(self, "ViolationTopicArn", value=self.violation_topic.topic_arn)
        CfnOutput(self, "IncidentsTableName", value=self.response.incidents.table_name,
                  description="fleetctl incidents list --table <this>")
        CfnOutput(self, "DeviceAdminFunctionName", value=self.response.device_admin.function_name,
                  description="fleetctl device quarantine|reinstate THING --function <this>")
