"""Device Defender Detect: one security profile on the fleet group, alerting the violation topic.

Message size is judged per topic: a TOPIC_FILTER dimension (AWS::IoT::Dimension) scopes a
behaviour's metric to the MQTT topics matching its filters, and `aws:message-byte-size` is one of
the cloud-side metrics a TOPIC_FILTER dimension takes ("Scoping metrics in security profiles
using dimensions", AWS IoT Core developer guide; CloudFormation "AWS::IoT::Dimension": up to 5
filters, MQTT wildcards allowed). Telemetry and alerts get their own limits, so a large,
legitimate alert cannot contain a healthy device.

Telemetry uses Basic Ingest. The Basic Ingest page ("Reducing messaging costs with Basic Ingest")
says `aws:num-messages-received` is not emitted for it; nothing documents whether
`aws:num-messages-sent` or `aws:message-byte-size` see that traffic, nor whether a topic filter
matches a `$aws/rules/...` topic (unverified). So the telemetry filters name both the topic the
device publishes to and the topic the rule sees, and the stack warns when Defender is the only
source (DefenseStack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.config import DetectionLimits
from stacks.platform.nag import acknowledge_role_policy


def _behavior(name: str, metric: str, count: int, duration: int | None = None, dimension: str | None = None,
              ) -> iot.CfnSecurityProfile.BehaviorProperty:
    """`duration` only for metrics counted over time: BehaviorCriteria.durationSeconds is "for those
    criteria that have a time dimension (for example, NUM_MESSAGES_SENT)" (AWS IoT API reference,
    BehaviorCriteria). Message size is per message; listening ports and established connections
    are what one device report states (the Device-side metrics page gives a Duration line for the
    traffic metrics, bytes/packets in/out, which Fleetwarden does not use)."""
    return iot.CfnSecurityProfile.BehaviorProperty(
        name=name,
        metric=metric,
        metric_dimension=iot.CfnSecurityProfile.MetricDimensionProperty(
            dimension_name=dimension, operator="IN") if dimension else None,
        criteria=iot.CfnSecurityProfile.BehaviorCriteriaProperty(
            comparison_operator="greater-than",
            value=iot.CfnSecurityProfile.MetricValueProperty(count=str(count)),
            duration_seconds=duration,
            consecutive_datapoints_to_alarm=1,
            consecutive_datapoints_to_clear=1,
        ),
    )


@dataclass(frozen=True)
class MessageSizeLimit:
    """A largest message size for the topics of one TOPIC_FILTER dimension."""

    behavior: str
    dimension: str  # the AWS::IoT::Dimension's name
    max_bytes: int


def profile_behaviors(limits: DetectionLimits, window: int, sizes: Sequence[MessageSizeLimit],
                      ) -> list[iot.CfnSecurityProfile.BehaviorProperty]:
    """Cloud-side (IoT Core measures) and device-side (the device reports) behaviours;
    counts are per `window` seconds, message sizes per topic dimension."""
    return [
        _behavior("MessagesSent", "aws:num-messages-sent", limits.messages, window),
        *[_behavior(size.behavior, "aws:message-byte-size", size.max_bytes, dimension=size.dimension)
          for size in sizes],
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
        message_sizes: Mapping[str, tuple[Sequence[str], int]],
        fleet_group_arn: str,
        violation_topic: sns.ITopic,
        topic_key: kms.IKey,
    ) -> None:
        """`message_sizes`: per kind of message (e.g. "Telemetry"), its topic filters and largest size."""
        super().__init__(scope, construct_id)
        self.name = name
        self.dimensions = {
            kind: iot.CfnDimension(self, f"{kind}Topics", name=f"{name}-{kind.lower()}-topics",
                                   type="TOPIC_FILTER", string_values=list(filters))
            for kind, (filters, _) in message_sizes.items()
        }
        # By name, with an explicit dependency: the profile names each dimension it uses.
        sizes = [MessageSizeLimit(f"{kind}MessageByteSize", self.dimensions[kind].name, max_bytes)
                 for kind, (_, max_bytes) in message_sizes.items()]
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
            behaviors=profile_behaviors(limits, window_seconds, sizes),
            alert_targets={"SNS": iot.CfnSecurityProfile.AlertTargetProperty(
                alert_target_arn=violation_topic.topic_arn, role_arn=alert_role.role_arn)},
            target_arns=[fleet_group_arn],
        )
        for dimension in self.dimensions.values():
            self.profile.node.add_dependency(dimension)
        acknowledge_role_policy(alert_role, "Device Defender publishing violations")
        self.alert_role = alert_role
