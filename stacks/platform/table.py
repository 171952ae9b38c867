"""A DynamoDB table with the posture every Fleetwarden table must have: on-demand, encrypted
with a customer-managed key, point-in-time recovery on."""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct


def secure_table(
    scope: Construct,
    construct_id: str,
    *,
    table_name: str,
    partition_key: str,
    key: kms.IKey,
    backup_reason: str,
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    **extra,
) -> dynamodb.Table:
    """`backup_reason` says why point-in-time recovery is enough without an AWS Backup plan."""
    table = dynamodb.Table(
        scope,
        construct_id,
        table_name=table_name,
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
        encryption_key=key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True),
        removal_policy=removal_policy,
        **extra,
    )
    Validations.of(table).acknowledge(*[Acknowledgment(id=rule, reason=backup_reason) for rule in (
        "HIPAA.Security-DynamoDBInBackupPlan", "NIST.800.53.R5-DynamoDBInBackupPlan")])
    return table
