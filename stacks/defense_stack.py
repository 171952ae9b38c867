"""DefenseStack: detection (Device Defender and/or the built-in detector), automatic
containment, fleet audits, mitigation actions, and the fleet dashboard."""

from __future__ import annotations

from aws_cdk import Annotations, CfnOutput, Stack
from constructs import Construct

from lambdas.shared import topics
from stacks.audit_stack import AuditStack
from stacks.commands_stack import CommandStack
from stacks.config import StageConfig
from stacks.defense.auto_response import AutoResponse
from stacks.defense.builtin_detector import BuiltinDetector
from stacks.defense.dashboard import FleetDashboard
from stacks.defense.defender_profile import DefenderProfile
from stacks.defense.fleet_audit import FleetAudit, MitigationActions
from stacks.identity_stack import IdentityStack
from stacks.ingest_stack import IngestStack
from stacks.platform.key import customer_key
from stacks.platform.messaging import dead_letter_queue, encrypted_topic


# Basic Ingest page: "the AWS IoT Device Defender metric num-messages-received metrics is not
# emitted"; nothing documents that aws:num-messages-sent counts Basic Ingest publishes.
DEFENDER_ALONE_WARNING = (
    "detect = 'defender': telemetry arrives through Basic Ingest, which Device Defender's message "
    "metrics may not count (unverified for aws:num-messages-sent and aws:message-byte-size), so a "
    "telemetry flood may go unseen by Defender alone; use detect = 'both' to count it with the "
    "built-in detector.")


class DefenseStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack,
        identity: IdentityStack, ingest: IngestStack, commands: CommandStack, **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(ingest)
        self.add_stack_dependency(commands)

        self.key = customer_key(
            self, "DefenseKey",
            alias=f"alias/{stage.prefix}-defense",
            description=f"Fleetwarden {stage.name}: violations, incidents, detector state",
        )
        # Both detection sources publish Device Defender's alert format here.
        self.violation_topic = encrypted_topic(
            self, "Violations",
            topic_name=f"{stage.prefix}-violations",
            display_name=f"Fleetwarden {stage.name} device violations",
            key=self.key,
        )
        self.dead_letters = dead_letter_queue(
            self, "DeadLetters",
            queue_name=f"{stage.prefix}-defense-dlq", key=self.key,
            reason="This queue is itself the dead-letter destination of the auto-response and the "
                   "detector; its depth alarms the ops topic.",
        )

        self.defender = DefenderProfile(
            self, "Defender",
            name=f"{stage.prefix}-fleet", limits=stage.limits, window_seconds=stage.detection_window_seconds,
            message_sizes={
                # The Basic Ingest topic the device publishes to and the topic the rule sees: which
                # one Defender matches is undocumented (see defender_profile).
                "Telemetry": ((topics.telemetry_topic(identity.telemetry_rule_name, "+"),
                               topics.telemetry_rule_topic("+")), stage.max_telemetry_bytes),
                "Alert": ((topics.alerts_topic("+"),), stage.max_alert_bytes),
            },
            fleet_group_arn=identity.fleet_group_arn,
            violation_topic=self.violation_topic, topic_key=self.key,
        ) if stage.detect in ("defender", "both") else None
        if stage.detect == "defender":
            Annotations.of(self).add_warning(DEFENDER_ALONE_WARNING)
        self.detector = BuiltinDetector(
            self, "Detector",
            prefix=stage.prefix, stage_name=stage.name,
            limits=stage.limits, window_seconds=stage.detection_window_seconds,
            max_telemetry_bytes=stage.max_telemetry_bytes, max_alert_bytes=stage.max_alert_bytes,
            watch_auth_failures=stage.owns_account_singletons,  # the stage that owns IoT logging
            profile_name=f"{stage.prefix}-builtin",
            observations=ingest.observations, violation_topic=self.violation_topic,
            key=self.key, defaults=audit.defaults, error_bucket_name=ingest.alerts_bucket_name,
            dead_letters=self.dead_letters,
        ) if ingest.observations is not None else None

        self.response = AutoResponse(
            self, "Response",
            prefix=stage.prefix, revocation=stage.revocation, exempt_group=stage.exempt_group,
            dry_run=stage.dry_run, deletion_protection=stage.termination_protection,
            violation_topic=self.violation_topic,
            ops_topic=audit.ops_topic, ops_key=audit.key,
            quarantine_group_name=identity.quarantine_group_name,
            quarantine_group_arn=identity.quarantine_group_arn,
            audit_table=identity.audit_table, audit_key=identity.data_key,
            key=self.key, defaults=audit.defaults, dead_letters=self.dead_letters,
            protected_policies=(identity.claim_policy_name,) if stage.protect_claim_certificate else (),
            signing_key_arn=commands.signing_key.key_arn, signing_key_id=commands.signing_key_id,
            role_name=commands.auto_response_role_name,
            job_timeout_minutes=stage.command_timeout_minutes,
            shutdown_lifetime_seconds=stage.command_lifetime_hours * 3600,
        )
        self.mitigations = MitigationActions(
            self, "Mitigations",
            prefix=stage.prefix,
            quarantine_group_name=identity.quarantine_group_name,
            quarantine_group_arn=identity.quarantine_group_arn,
            ops_topic=audit.ops_topic, ops_key=audit.key,
        )
        # The audit configuration exists once per account: only the owning stage sets it.
        self.fleet_audit = FleetAudit(
            self, "FleetAudit", prefix=stage.prefix, ops_topic=audit.ops_topic, ops_key=audit.key,
        ) if stage.owns_account_singletons else None

        self.dashboard = FleetDashboard(
            self, "Dashboard",
            prefix=stage.prefix,
            functions=[*self.response.functions, *ingest.functions, *identity.functions, *commands.functions,
                       *(self.detector.functions if self.detector else [])],
            response=self.response.function,
            violation_topic=self.violation_topic,
            telemetry_rule_name=ingest.telemetry_rule_name, alert_rule_name=ingest.alert_rule_name,
            defense_dead_letters=self.dead_letters, alert_dead_letters=ingest.alert_dead_letters,
            ops_topic=audit.ops_topic, metrics_namespace=audit.defaults.metrics_namespace,
        )
        CfnOutput(self, "ViolationTopicArn", value=self.violation_topic.topic_arn)
        CfnOutput(self, "IncidentsTableName", value=self.response.incidents.table_name,
                  description="fleetctl incidents list --table <this>")
        CfnOutput(self, "DeviceAdminFunctionName", value=self.response.device_admin.function_name,
                  description="fleetctl device quarantine|reinstate THING --function <this>")
