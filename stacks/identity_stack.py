"""IdentityStack: who a device is and how it reaches IoT Core."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import Construct

from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.constructs.device_endpoint import DeviceEndpoint


class IdentityStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(audit)
        self.endpoint = DeviceEndpoint(
            self,
            "DeviceEndpoint",
            name=f"{stage.prefix}-devices",
            tls_security_policy=stage.tls_security_policy,
        )
