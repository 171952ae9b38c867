"""Acknowledgements that recur across stacks, each with the reason it is safe."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


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
