"""CloudWatch metric filters and alarms over the CloudTrail log group.

The patterns follow the CIS AWS Foundations monitoring controls, plus the IoT control plane
calls that change what a device may do or who a device is.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.platform.messaging import ALARM_PERIOD, alarm


def _any_event(source: str, names: tuple[str, ...]) -> str:
    calls = " || ".join(f'($.eventName = "{name}")' for name in names)
    return f'{{ ($.eventSource = "{source}") && ({calls}) }}'


IOT_POLICY_CHANGES = (
    "CreatePolicy",
    "CreatePolicyVersion",
    "DeletePolicy",
    "DeletePolicyVersion",
    "AttachPolicy",
    "DetachPolicy",
    "SetDefaultPolicyVersion",
)
# `RegisterCertificate*` covers RegisterCertificate and RegisterCertificateWithoutCA.
IOT_CERTIFICATE_CHANGES = (
    "UpdateCertificate",
    "RegisterCertificate*",
    "DeleteCertificate",
    "RegisterCACertificate",
    "UpdateCACertificate",
    "DeleteCACertificate",
)
CLOUDTRAIL_CHANGES = ("CreateTrail", "UpdateTrail", "DeleteTrail", "StartLogging", "StopLogging",
                      "PutEventSelectors")


@dataclass(frozen=True)
class SecuritySignal:
    metric_name: str
    description: str
    filter_pattern: str


SECURITY_SIGNALS = (
    SecuritySignal(
        "UnauthorizedApiCalls",
        "API calls refused for lack of permission",
        '{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }',
    ),
    SecuritySignal(
        "IotPolicyChanges",
        "IoT policies created, changed, attached or detached",
        _any_event("iot.amazonaws.com", IOT_POLICY_CHANGES),
    ),
    SecuritySignal(
        "IotCertificateChanges",
        "IoT device or CA certificates registered, changed or deleted",
        _any_event("iot.amazonaws.com", IOT_CERTIFICATE_CHANGES),
    ),
    SecuritySignal(
        "CloudTrailChanges",
        "CloudTrail trails created, changed, stopped or deleted",
        _any_event("cloudtrail.amazonaws.com", CLOUDTRAIL_CHANGES),
    ),
    SecuritySignal(
        "RootAccountUse",
        "The account root user made a call",
        '{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS '
        '&& $.eventType != "AwsServiceEvent" }',
    ),
)


class SecurityAlarms(Construct):
    """One metric filter and one alarm per security signal; alarms notify `topic`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        trail_log_group: logs.ILogGroup,
        topic: sns.ITopic,
        namespace: str,
        alarm_name_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for signal in SECURITY_SIGNALS:
            metric_filter = logs.MetricFilter(
                self,
                f"{signal.metric_name}Filter",
                log_group=trail_log_group,
                filter_pattern=logs.FilterPattern.literal(signal.filter_pattern),
                metric_namespace=namespace,
                metric_name=signal.metric_name,
                metric_value="1",
                default_value=0,
            )
            self.alarms[signal.metric_name] = alarm(
                self,
                f"{signal.metric_name}Alarm",
                alarm_name=f"{alarm_name_prefix}-{signal.metric_name}",
                description=f"{signal.description} (CloudTrail metric filter)",
                metric=metric_filter.metric(statistic="Sum", period=ALARM_PERIOD),
                topic=topic,
            )
