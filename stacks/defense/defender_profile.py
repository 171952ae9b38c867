"""Device Defender Detect: one security profile on the fleet group, alerting the violation topic."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.config import DetectionLimits
from stacks.platform.nag import acknowledge_role_policy


def _behavior(name: str, metric: str, count: int, duration: int | None = None) -> iot.CfnSecurityProfile.BehaviorProperty:
    return iot.CfnSecurityProfile.BehaviorProperty(
        name=name,
        metric=metric,
        criteria=iot.CfnSecurityProfile.BehaviorCriteriaProperty(
            comparison_operator="greater-than",
            value=iot.CfnSecurityProfile.MetricValueProperty(count=str(count)),
            duration_seconds=duration,
            consecutive_datapoints_to_alarm=1,
            consecutive_datapoints_to_clear=1,
        ),
    )


def profile_behaviors(limits: DetectionLimits, window: int, max_message_bytes: int,
                      ) -> list[iot.CfnSecurityProfile.BehaviorProperty]:
    """Cloud-side (IoT Core measures) and device-side (the device reports) behaviours;
    counts are per `window` seconds."""
    return [
        _behavior("MessagesSent", "aws:num-messages-sent", limits.messages, window),
        _behavior("MessageByteSize", "aws:message-byte-size", max_message_bytes),
        _behavior("AuthorizationFailures", "aws:num-authorization-failures",
                  limits.authorization_failures, window),
        _behavior("ConnectionAttempts", "aws:num-connection-attempts", limits.connection_attempts, window),
        _behavior("Disconnects", "aws:num-disconnects", limits.disconnects, window),
        # A device never listens: any open port is a violation.
        _behavior("ListeningTcpPorts", "aws:num-listening-tcp-ports", 0),
        _behavior("ListeningUdpPorts", "aws:num-listening-udp-ports", 0),
        _behavior("EstablishedTcpConnections", "aws:num-established-tcp-connections",
                  limits.established_tcp_connections),
    ]


class DefenderProfile(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        limits: DetectionLimits,
        window_seconds: int,
        max_message_bytes: int,
        fleet_group_arn: str,
        violation_topic: sns.ITopic,
        topic_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = name
        alert_role = iam.Role(
            self, "AlertRole",
            assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
            description="Device Defender publishes violations to the violation topic",
            inline_policies={"PublishViolations": iam.PolicyDocument(statements=[
                iam.PolicyStatement(actions=["sns:Publish"], resources=[violation_topic.topic_arn]),
                iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"],
                                    resources=[topic_key.key_arn]),
            ])},
        )
        self.profile = iot.CfnSecurityProfile(
            self, "Profile",
            security_profile_name=self.name,
            security_profile_description="Fleetwarden behaviour limits for every fleet device",
            behaviors=profile_behaviors(limits, window_seconds, max_message_bytes),
            alert_targets={"SNS": iot.CfnSecurityProfile.AlertTargetProperty(
                alert_target_arn=violation_topic.topic_arn, role_arn=alert_role.role_arn)},
            target_arns=[fleet_group_arn],
        )
        acknowledge_role_policy(alert_role, "Device Defender publishing violations")
        self.alert_role = alert_role
