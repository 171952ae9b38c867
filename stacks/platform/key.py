"""Customer-managed KMS keys: one per stack and purpose, rotated, kept when the stack goes."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


def customer_key(scope: Construct, construct_id: str, *, alias: str, description: str) -> kms.Key:
    """The key policy starts as CDK's default (the account administers it through IAM);
    `allow_service` adds each AWS service that must use the key as itself."""
    return kms.Key(
        scope, construct_id,
        alias=alias,
        description=description,
        enable_key_rotation=True,
        removal_policy=RemovalPolicy.RETAIN,
    )


def allow_service(key: kms.Key, *, sid: str, service: str, actions: list[str], conditions: dict) -> None:
    """One key-policy statement for a service principal, narrowed by `conditions`."""
    key.add_to_resource_policy(iam.PolicyStatement(
        sid=sid,
        principals=[iam.ServicePrincipal(service)],
        actions=actions,
        resources=["*"],
        conditions=conditions,
    ))
