"""Registry structure and device permissions: thing type, fleet and quarantine groups,
the device policy and the quarantine deny policy bound to the quarantine group."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.sdk_call import sdk_call
from stacks.identity.iot_policies import device_policy_document, quarantine_policy_document

SEARCHABLE_ATTRIBUTES = ["serial", "model", "firmware"]


def iot_arn_prefix() -> str:
    return f"arn:{Aws.PARTITION}:iot:{Aws.REGION}:{Aws.ACCOUNT_ID}"


class DeviceRegistry(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        telemetry_rule: str,
        defaults: PlatformDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        arn_prefix = iot_arn_prefix()

        self.thing_type = iot.CfnThingType(
            self,
            "DeviceType",
            thing_type_name=f"{prefix}-device",
            thing_type_properties=iot.CfnThingType.ThingTypePropertiesProperty(
                thing_type_description="A Fleetwarden device; thing name = device serial",
                searchable_attributes=SEARCHABLE_ATTRIBUTES,
            ),
        )
        self.fleet_group = iot.CfnThingGroup(
            self,
            "FleetGroup",
            thing_group_name=f"{prefix}-fleet",
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description="Every provisioned device of this stage",
            ),
        )
        self.quarantine_group = iot.CfnThingGroup(
            self,
            "QuarantineGroup",
            thing_group_name=f"{prefix}-quarantine",
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description="Devices cut off by an explicit deny; membership is the switch",
            ),
        )

        self.device_policy = iot.CfnPolicy(
            self,
            "DevicePolicy",
            policy_name=f"{prefix}-device",
            policy_document=device_policy_document(arn_prefix, telemetry_rule),
        )
        self.quarantine_policy = iot.CfnPolicy(
            self,
            "QuarantinePolicy",
            policy_name=f"{prefix}-quarantine",
            policy_document=quarantine_policy_document(arn_prefix, telemetry_rule),
        )

        # CloudFormation cannot attach a policy to a thing group; IoT's AttachPolicy can.
        group_arn = self.quarantine_group.attr_arn
        policy_name = self.quarantine_policy.policy_name
        attach = sdk_call(
            self,
            "AttachQuarantinePolicy",
            on_update=cr.AwsSdkCall(
                service="Iot",
                action="attachPolicy",
                parameters={"policyName": policy_name, "target": group_arn},
                physical_resource_id=cr.PhysicalResourceId.of(f"{prefix}-quarantine-policy-attachment"),
            ),
            on_delete=cr.AwsSdkCall(
                service="Iot",
                action="detachPolicy",
                parameters={"policyName": policy_name, "target": group_arn},
            ),
            statements=[
                iam.PolicyStatement(
                    actions=["iot:AttachPolicy", "iot:DetachPolicy"],
                    resources=[self.quarantine_policy.attr_arn, group_arn],
                ),
            ],
            defaults=defaults,
        )
        attach.node.add_dependency(self.quarantine_policy)
        self.quarantine_attachment = attach
