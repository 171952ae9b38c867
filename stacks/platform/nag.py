"""Acknowledgements that recur across stacks, each with the reason it is safe."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def logical_id(construct: IConstruct) -> str:
    """The logical id of a construct's resource, as cdk-nag prints it in a finding's id."""
    return Stack.of(construct).get_logical_id(construct.node.default_child)


def acknowledge_role_policy(role: IConstruct, purpose: str) -> None:
    """CDK writes a role's grants as an `AWS::IAM::Policy` attached to that role alone.

    HIPAA and NIST 800-53 call any such policy 'inline'. The policy is single-purpose and
    attached to exactly one role, so no other principal can pick it up; its statements are
    checked for least privilege separately (AwsSolutions-IAM5 is not acknowledged here).
    """
    reason = (f"Grants for {purpose}: an AWS::IAM::Policy attached to this one role only, "
              "scoped to the resources it uses.")
    Validations.of(role).acknowledge(
        Acknowledgment(id="HIPAA.Security-IAMNoInlinePolicy", reason=reason),
        Acknowledgment(id="NIST.800.53.R5-IAMNoInlinePolicy", reason=reason),
    )


def acknowledge_dead_letter_grant(role: IConstruct) -> None:
    """CDK's grant to send failed events to a KMS-encrypted dead-letter queue adds the KMS
    wildcard actions below, on that queue's key only."""
    reason = ("CDK's send grant for the KMS-encrypted dead-letter queue: kms:GenerateDataKey* and "
              "kms:ReEncrypt* on that one key, so failed events can be kept encrypted.")
    Validations.of(role).acknowledge(*[Acknowledgment(id=f"AwsSolutions-IAM5[Action::{action}]", reason=reason)
                                       for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*")])
