"""The role IoT assumes to create devices during JITP and fleet provisioning."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.identity.device_registry import DeviceRegistry, iot_arn_prefix


class ProvisioningRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, registry: DeviceRegistry) -> None:
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        things, certs = f"{arn}:thing/*", f"{arn}:cert/*"
        policy = iam.ManagedPolicy(
            self,
            "Policy",
            description="Create a Fleetwarden device: thing, certificate activation, policy, fleet group",
            statements=[
                iam.PolicyStatement(
                    sid="CreateThings",
                    actions=["iot:CreateThing", "iot:DescribeThing", "iot:UpdateThing",
                             "iot:AttachThingPrincipal", "iot:ListThingPrincipals",
                             "iot:ListThingGroupsForThing", "iot:AddThingToThingGroup"],
                    resources=[things, registry.fleet_group.attr_arn, registry.thing_type.attr_arn],
                ),
                iam.PolicyStatement(
                    sid="ActivateCertificates",
                    actions=["iot:DescribeCertificate", "iot:UpdateCertificate",
                             "iot:AttachPolicy", "iot:ListAttachedPolicies"],
                    resources=[certs],
                ),
                iam.PolicyStatement(
                    sid="UseTheDevicePolicyAndGroup",
                    actions=["iot:AttachPolicy", "iot:GetPolicy", "iot:DescribeThingGroup",
                             "iot:DescribeThingType"],
                    resources=[registry.device_policy.attr_arn, registry.fleet_group.attr_arn,
                               registry.thing_type.attr_arn],
                ),
            ],
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description="Assumed by IoT Core to provision Fleetwarden devices",
            managed_policies=[policy],
        )
        reason = ("Things and certificates are created at run time by JITP and fleet provisioning; "
                  "their names and ids cannot be known at deploy time. Actions are limited to "
                  "creating and activating devices; the policy and group are named exactly.")
        Validations.of(policy).acknowledge(*[
            Acknowledgment(id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:"
                              f"<AWS::AccountId>:{kind}/*]", reason=reason)
            for kind in ("thing", "cert")
        ])
