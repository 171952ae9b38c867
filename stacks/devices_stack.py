"""DevicesStack: the small, optional list of devices declared in config, each registered
from its CSR. Its own stack keeps the 100-device cap clear of CloudFormation's resource limit."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.config import DeclaredDevice
from stacks.identity_stack import IdentityStack


class DevicesStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, devices: tuple[DeclaredDevice, ...],
        identity: IdentityStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(identity)  # the device policy is referenced by name
        for device in devices:
            # IoT signs the CSR: the private key stays on the device and never enters the template.
            certificate = iot.CfnCertificate(
                self, f"{device.name}Certificate",
                certificate_signing_request=device.csr_pem, status="ACTIVE",
            )
            thing = iot.CfnThing(
                self, f"{device.name}Thing",
                thing_name=device.name,
                attribute_payload=iot.CfnThing.AttributePayloadProperty(attributes={"serial": device.name}),
            )
            iot.CfnThingPrincipalAttachment(
                self, f"{device.name}ThingAttachment",
                thing_name=thing.ref, principal=certificate.attr_arn,
            )
            iot.CfnPolicyPrincipalAttachment(
                self, f"{device.name}PolicyAttachment",
                policy_name=identity.device_policy_name, principal=certificate.attr_arn,
            )
