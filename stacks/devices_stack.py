"""DevicesStack: the small, optional list of devices declared in config, each registered
from its CSR. Its own stack keeps the 100-device cap clear of CloudFormation's resource limit.

Each declared thing joins the fleet thing group, as JITP and fleet provisioning put theirs there,
so the Device Defender security profile (which targets that group) covers it too. CloudFormation
has no thing-group membership resource: a deploy-time AddThingToThingGroup call adds it and
RemoveThingFromThingGroup takes it out when the device is no longer declared."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.config import DeclaredDevice
from stacks.identity.device_registry import iot_arn_prefix
from stacks.identity_stack import IdentityStack
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.sdk_call import sdk_call


class DevicesStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, devices: tuple[DeclaredDevice, ...],
        identity: IdentityStack, defaults: PlatformDefaults, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(identity)  # the device policy and fleet group are referenced by name
        fleet_group = identity.registry.fleet_group.thing_group_name
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
            self._join_fleet_group(device.name, thing, fleet_group, defaults)

    def _join_fleet_group(self, name: str, thing: iot.CfnThing, group: str,
                          defaults: PlatformDefaults) -> None:
        """AddThingToThingGroup / RemoveThingFromThingGroup (AWS IoT API reference), each allowed
        on this thing and the fleet group only: both actions take the thing and thinggroup
        resource types ("Actions, resources, and condition keys for AWS IoT")."""
        membership = {"thingGroupName": group, "thingName": thing.ref}
        arn = iot_arn_prefix()
        sdk_call(
            self, f"{name}FleetGroupMembership",
            on_update=cr.AwsSdkCall(  # also the create call; adding a member twice changes nothing
                service="Iot", action="addThingToThingGroup", parameters=membership,
                physical_resource_id=cr.PhysicalResourceId.of(f"{group}/{name}"),
            ),
            on_delete=cr.AwsSdkCall(
                service="Iot", action="removeThingFromThingGroup", parameters=membership,
                # A documented error of the call: the thing or group is already gone.
                ignore_error_codes_matching="ResourceNotFoundException",
            ),
            statements=[iam.PolicyStatement(
                actions=["iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup"],
                resources=[f"{arn}:thing/{name}", f"{arn}:thinggroup/{group}"],
            )],
            defaults=defaults,
        )
