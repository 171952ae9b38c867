"""The role IoT assumes to create devices during JITP and fleet provisioning.

Its actions are AWS's `AWSIoTThingsRegistration` managed policy (v3: 30 actions on "*", page
"AWSIoTThingsRegistration - AWS Managed Policy", aws-managed-policy/latest/reference), which
the JITP and fleet-provisioning pages tell you to attach to the provisioning role, minus only
what the "Provisioning templates" page (iot/latest/developerguide/provision-template.html)
shows our templates (stacks/identity/provisioning_templates.py) never need. The docs name no
API that IoT calls for each template resource ("RegisterThing calls other AWS IoT control
plane APIs", API_RegisterThing), so every action they are silent about is kept, marked
"unverified": a missing one fails every device's first connection, silently.

Resources follow the resource types of each action in the Service Authorization Reference,
"Actions, resources, and condition keys for AWS IoT"
(service-authorization/latest/reference/list_awsiot.html). An action's ARN must be of a type
that action takes (a thing ARN on a cert-typed action is simply denied); an action with no
resource type takes only "*".
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.identity.device_registry import DeviceRegistry, iot_arn_prefix

# Removed from the managed policy, with the documentation that shows the templates never need
# them (provision-template.html unless said otherwise). tests/identity/test_provisioning_role.py
# pins the same set and checks that the templates still satisfy each reason.
#  iot:CreateCertificateFromCsr - the template's certificate resource names an existing
#      certificate (CertificateId), never a CertificateSigningRequest ("Only certificate IDs can
#      be used with a fleet provisioning template"). A device's own MQTT CreateCertificateFromCsr
#      ($aws/certificates/create-from-csr/..., fleet-provision-api.html) names no template, so no
#      provisioning role is involved: the claim certificate's IoT policy authorises it.
#  iot:CreatePolicy - the policy resource gives only PolicyName, of a policy this stack creates;
#      "If PolicyDocument is not provided, the policy must already be created".
#  iot:RemoveThingFromThingGroup - ThingGroups override is DO_NOTHING ("Leave the resource as
#      is") and a new thing is in no group. Without it re-provisioning can never take a device
#      out of the quarantine group.
#  iot:AddThingToBillingGroup, iot:DescribeBillingGroup, iot:RemoveThingFromBillingGroup - the
#      thing resource declares no BillingGroup.


class ProvisioningRole(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, registry: DeviceRegistry) -> None:
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        things, certs = f"{arn}:thing/*", f"{arn}:cert/*"
        fleet_group = registry.fleet_group.attr_arn
        policy = iam.ManagedPolicy(
            self,
            "Policy",
            description="Create a Fleetwarden device: thing, certificate activation, policy, fleet group",
            statements=[
                # Thing resource: ThingName, ThingTypeName, AttributePayload, with overrides
                # for an existing thing (MERGE attributes, REPLACE type). Resource type: thing.
                iam.PolicyStatement(
                    sid="Things",
                    actions=["iot:CreateThing", "iot:DescribeThing", "iot:UpdateThing",
                             "iot:ListThingGroupsForThing", "iot:ListThingPrincipals"],
                    resources=[things],
                ),
                # ThingGroups: [fleet group]. Types: thing + thinggroup. UpdateThingGroupsForThing
                # is unverified (either call could be the one IoT makes to add a thing to a group).
                iam.PolicyStatement(
                    sid="JoinTheFleetGroup",
                    actions=["iot:AddThingToThingGroup", "iot:UpdateThingGroupsForThing"],
                    resources=[things, fleet_group],
                ),
                # Certificate resource (CertificateId, Status ACTIVE), the thing-certificate
                # attachment, the device policy attached to the certificate. These actions
                # take the cert resource type (AttachPolicy also thinggroup, not the policy:
                # IAM cannot say which policy is attached). Unverified, kept: the deprecated
                # AttachPrincipalPolicy, DetachPolicy, DetachThingPrincipal, ListPrincipalThings
                # (re-provisioning an existing thing or certificate). On cert ARNs only, the
                # role cannot detach the quarantine policy from the quarantine group.
                iam.PolicyStatement(
                    sid="Certificates",
                    actions=["iot:DescribeCertificate", "iot:UpdateCertificate",
                             "iot:AttachThingPrincipal", "iot:AttachPolicy",
                             "iot:AttachPrincipalPolicy", "iot:DetachPolicy",
                             "iot:DetachThingPrincipal", "iot:ListPrincipalThings"],
                    resources=[certs],
                ),
                # Policy resource by PolicyName. Type: policy. ListTargetsForPolicy unverified.
                iam.PolicyStatement(
                    sid="TheDevicePolicy",
                    actions=["iot:GetPolicy", "iot:ListTargetsForPolicy"],
                    resources=[registry.device_policy.attr_arn],
                ),
                iam.PolicyStatement(
                    sid="TheFleetGroup",
                    actions=["iot:DescribeThingGroup"],
                    resources=[fleet_group],
                ),
                iam.PolicyStatement(
                    sid="TheThingType",
                    actions=["iot:DescribeThingType"],
                    resources=[registry.thing_type.attr_arn],
                ),
                # No resource type in the reference: "*" is the only Resource that grants them.
                # RegisterThing: JITP "uses [the template] to call RegisterThing" (jit-provisioning
                # .html); RegisterCertificate: JITP first registers the device certificate
                # PENDING_ACTIVATION; whether either is authorised by this role is unverified.
                # ListAttachedPolicies (and the deprecated ListPrincipalPolicies,
                # ListPolicyPrincipals): reading a certificate's policies, unverified.
                iam.PolicyStatement(
                    sid="NoResourceType",
                    actions=["iot:RegisterThing", "iot:RegisterCertificate",
                             "iot:ListAttachedPolicies", "iot:ListPrincipalPolicies",
                             "iot:ListPolicyPrincipals"],
                    resources=["*"],
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
                  "their names and ids cannot be known at deploy time. The policy, fleet group and "
                  "thing type are named exactly.")
        Validations.of(policy).acknowledge(
            *[Acknowledgment(id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:"
                                f"<AWS::AccountId>:{kind}/*]", reason=reason)
              for kind in ("thing", "cert")],
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="RegisterThing, RegisterCertificate, ListAttachedPolicies, ListPrincipalPolicies "
                       "and ListPolicyPrincipals take no resource type in the Service Authorization "
                       "Reference for AWS IoT, so only \"*\" grants them; they are part of AWS's "
                       "AWSIoTThingsRegistration policy for the provisioning role, kept because the "
                       "docs do not say IoT provisions without them."),
        )
