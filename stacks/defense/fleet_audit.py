"""Device Defender Audit (account-wide: the owning stage) and mitigation actions for findings."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot_l1
from aws_cdk import aws_iot_alpha as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.identity.device_registry import iot_arn_prefix
from stacks.defense.auto_response import THING_WILDCARD_REASON
from stacks.platform.nag import acknowledge_role_policy


class MitigationActions(Construct):
    """What an operator can apply to an audit finding: quarantine, deactivate, tell ops."""

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, quarantine_group_name: str,
                 quarantine_group_arn: str, ops_topic: sns.ITopic, ops_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
                        description="Device Defender mitigation actions")
        role.add_to_policy(iam.PolicyStatement(
            actions=["iot:AddThingToThingGroup"], resources=[f"{arn}:thing/*", quarantine_group_arn]))
        role.add_to_policy(iam.PolicyStatement(actions=["iot:UpdateCertificate"], resources=[f"{arn}:cert/*"]))
        role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[ops_topic.topic_arn]))
        role.add_to_policy(iam.PolicyStatement(
            actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[ops_key.key_arn]))
        acknowledge_role_policy(role, "mitigation actions")
        Validations.of(role).acknowledge(*[Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:{kind}/*]",
            reason=THING_WILDCARD_REASON) for kind in ("thing", "cert")])

        P = iot_l1.CfnMitigationAction
        self.actions = [
            P(self, "Quarantine", action_name=f"{prefix}-quarantine", role_arn=role.role_arn,
              action_params=P.ActionParamsProperty(add_things_to_thing_group_params=P.AddThingsToThingGroupParamsProperty(
                  thing_group_names=[quarantine_group_name], override_dynamic_groups=True))),
            P(self, "DeactivateCertificate", action_name=f"{prefix}-deactivate-certificate",
              role_arn=role.role_arn,
              action_params=P.ActionParamsProperty(update_device_certificate_params=P.UpdateDeviceCertificateParamsProperty(
                  action="DEACTIVATE"))),
            P(self, "NotifyOps", action_name=f"{prefix}-notify-ops", role_arn=role.role_arn,
              action_params=P.ActionParamsProperty(publish_finding_to_sns_params=P.PublishFindingToSnsParamsProperty(
                  topic_arn=ops_topic.topic_arn))),
        ]


class FleetAudit(Construct):
    """Every audit check on, a daily scheduled audit, findings to the ops topic."""

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str,
                 ops_topic: sns.ITopic, ops_key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.configuration = iot.AccountAuditConfiguration(self, "Configuration", target_topic=ops_topic)
        Validations.of(self.configuration.node.find_child("AuditRole")).acknowledge(Acknowledgment(
            id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
               "AWSIoTDeviceDefenderAudit]",
            reason="Device Defender Audit reads account-wide IoT and IAM configuration for its "
                   "checks; AWS maintains this managed policy as the checks change.",
        ))
        notification_role = self.configuration.node.find_child("NotificationRole")
        acknowledge_role_policy(notification_role, "audit notifications to the ops topic")
        # The ops topic is encrypted: publishing needs its key too.
        notification_role.add_to_policy(iam.PolicyStatement(
            actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[ops_key.key_arn]))
        self.daily = iot.ScheduledAudit(
            self, "Daily",
            scheduled_audit_name=f"{prefix}-daily",
            account_audit_configuration=self.configuration,
            frequency=iot.Frequency.DAILY,
            audit_checks=list(iot.AuditCheck),
        )
        # The configuration enables every check IoT offers, including three the alpha enum does
        # not name yet; the daily audit runs them all.
        scheduled = self.daily.node.default_child
        scheduled.add_property_override("TargetCheckNames", [check.value for check in iot.AuditCheck] + [
            "DEVICE_CERTIFICATE_AGE_CHECK",
            "INTERMEDIATE_CA_REVOKED_FOR_ACTIVE_DEVICE_CERTIFICATES_CHECK",
            "IOT_POLICY_POTENTIAL_MIS_CONFIGURATION_CHECK",
        ])
