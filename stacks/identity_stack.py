"""IdentityStack: who a device is, what it may do, and how it joins the fleet."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from lambdas.shared import topics
from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.constructs.device_endpoint import DeviceEndpoint
from stacks.constructs.device_registry import DeviceRegistry


class IdentityStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(audit)
        self.telemetry_rule_name = topics.telemetry_rule_name(stage.name)
        self.endpoint = DeviceEndpoint(
            self,
            "DeviceEndpoint",
            name=f"{stage.prefix}-devices",
            tls_security_policy=stage.tls_security_policy,
        )
        self.registry = DeviceRegistry(
            self,
            "Registry",
            prefix=stage.prefix,
            telemetry_rule=self.telemetry_rule_name,
            log_key=audit.key,
            log_retention_days=stage.log_retention_days,
        )
        CfnOutput(self, "DevicePolicyName", value=self.registry.device_policy.policy_name)
        CfnOutput(self, "QuarantineGroupName", value=self.registry.quarantine_group.thing_group_name)
