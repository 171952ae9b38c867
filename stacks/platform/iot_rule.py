"""IoT topic rules: their role, and where a message goes when an action fails. Their names come from
`lambdas/shared/topics.rule_name`, which the devices use too (the Basic Ingest topic names the rule)."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_iot_alpha as iot
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.platform.nag import acknowledge_role_policy, logical_id


def rule_role(scope: Construct, description: str) -> iam.Role:
    """The role a construct's rules act as (construct id `RuleRole`)."""
    return iam.Role(scope, "RuleRole", assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
                    description=description)


def topic_rule(scope: Construct, construct_id: str, *, name: str, description: str, sql: str,
               action: iot.IAction, role: iam.IRole, error_bucket: s3.IBucket) -> iot.TopicRule:
    """SQL version 2016-03-23, and an error action, so no failed delivery goes unseen."""
    return iot.TopicRule(
        scope, construct_id,
        topic_rule_name=name,
        description=description,
        sql=iot.IotSql.from_string_as_ver20160323(sql),
        actions=[action],
        error_action=rule_error_action(error_bucket, name, role),
    )


def rule_error_action(bucket: s3.IBucket, name: str, role: iam.IRole) -> actions.S3PutObjectAction:
    """Where a rule puts a message its action could not deliver: one object per failure."""
    return actions.S3PutObjectAction(
        bucket, role=role,
        key=f"rule-errors/{name}/${{parse_time('yyyy/MM/dd', timestamp())}}/${{timestamp()}}-${{newuuid()}}.json",
    )


def finish_rule_role(role: iam.Role, *, key: kms.IKey, purpose: str, error_bucket: s3.IBucket,
                     error_bucket_label: str | None = None) -> None:
    """Once the rules acting as `role` exist: let it encrypt with `key` (its destinations are
    KMS-encrypted) and acknowledge its grants.

    The alpha S3 action grants s3:PutObject on the bucket's objects; its object names are made
    per message (substitution templates), so no narrower resource exists at deploy time.
    `error_bucket_label`: how cdk-nag prints the bucket ARN when it is not a bucket of this stack.
    """
    role.add_to_policy(iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Encrypt"],
                                           resources=[key.key_arn]))
    acknowledge_role_policy(role, purpose)
    label = error_bucket_label or f"<{logical_id(error_bucket)}.Arn>"
    Validations.of(role).acknowledge(Acknowledgment(
        id=f"AwsSolutions-IAM5[Resource::{label}/*]",
        reason="IoT rule S3 actions write one object per message, named at run time from the "
               "topic, time and a UUID; the role can only put objects into this one bucket.",
    ))
