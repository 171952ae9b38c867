"""The audit key: CloudTrail, CloudWatch Logs and the ops topic encrypt with it."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from stacks.platform.key import allow_service, customer_key


def audit_key(scope: Construct, construct_id: str, *, alias: str, description: str, trail_name: str) -> kms.Key:
    """Key policy: account administration (CDK default) plus exactly the services that write
    audit records with it, each narrowed to this account (and the trail to `trail_name`)."""
    stack = Stack.of(scope)
    key = customer_key(scope, construct_id, alias=alias, description=description)
    trail_arn = stack.format_arn(service="cloudtrail", resource="trail", resource_name=trail_name)
    allow_service(
        key, sid="CloudTrailEncryptLogs", service="cloudtrail.amazonaws.com",
        actions=["kms:GenerateDataKey*"],
        conditions={
            "StringEquals": {"aws:SourceArn": trail_arn},
            "StringLike": {
                "kms:EncryptionContext:aws:cloudtrail:arn":
                    f"arn:{stack.partition}:cloudtrail:*:{stack.account}:trail/*"
            },
        },
    )
    allow_service(
        key, sid="CloudTrailDescribeKey", service="cloudtrail.amazonaws.com",
        actions=["kms:DescribeKey"],
        conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
    )
    allow_service(
        key, sid="CloudWatchLogsEncryptLogGroups", service=f"logs.{stack.region}.amazonaws.com",
        actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
        conditions={"ArnLike": {
            "kms:EncryptionContext:aws:logs:arn":
                f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
        }},
    )
    # Alarms publish to the encrypted SNS topic as the CloudWatch service principal.
    allow_service(
        key, sid="CloudWatchAlarmsPublishToEncryptedTopics", service="cloudwatch.amazonaws.com",
        actions=["kms:Decrypt", "kms:GenerateDataKey*"],
        conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
    )
    return key
