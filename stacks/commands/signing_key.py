"""The stage's command-signing key: KMS ECC_NIST_P256, SIGN_VERIFY.

Its key policy is the whole policy (with the `@aws-cdk/aws-kms:defaultKeyPolicies` flag a given
policy replaces CDK's default, which would let any IAM principal of the account sign through IAM):
the account administers the key (no kms:Sign in that statement), any principal of the account may
read the public key, and only the named roles may sign, by `aws:PrincipalArn`. A condition is used
rather than naming the roles as principals because a key policy whose principal does not exist is
refused ("MalformedPolicyDocumentException - Policy contains a statement with one or more invalid
principals": check "that the IAM entity exists", AWS re:Post knowledge center kms-policy-error-invalid-
principals), and the auto-response role is deployed later, by the Defense stack; a condition value is
a string compared at request time: for a role session it is "the ARN of the role, not the ARN of the
user that assumed the role" (aws:PrincipalArn, IAM global condition context keys,
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html). Each role also needs kms:Sign on the key in its own
IAM policy: a key-policy statement for the account root only delegates to IAM
("Allows access to the AWS account and enables IAM policies", key-policy-default.html).
Asymmetric keys cannot be rotated automatically ("Automatic key rotation is not supported on
asymmetric KMS keys", rotate-keys.html): rollover is a new key next to this one (README).
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

ADMIN_ACTIONS = [
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
    "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
]


class CommandSigningKey(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, alias: str, description: str) -> None:
        super().__init__(scope, construct_id)
        account = iam.AccountRootPrincipal()
        policy = iam.PolicyDocument(statements=[
            iam.PolicyStatement(sid="AccountAdministersTheKeyButCannotSign", principals=[account],
                                actions=ADMIN_ACTIONS, resources=["*"]),
        ])
        self.key = kms.Key(
            self, "Key",
            alias=alias,
            description=description,
            key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY,
            policy=policy,
            removal_policy=RemovalPolicy.RETAIN,
        )
        Validations.of(self.key).acknowledge(*[Acknowledgment(id=rule, reason=(
            "An asymmetric signing key cannot be rotated automatically; rollover is a second key whose "
            "public key devices trust next to this one (documents carry the key id).")) for rule in (
            "AwsSolutions-KMS5", "HIPAA.Security-KMSBackingKeyRotationEnabled",
            "NIST.800.53.R5-KMSBackingKeyRotationEnabled")])


    def allow_signers(self, role_arns: list[str]) -> None:
        """The only principals that may sign (their IAM policies must allow kms:Sign too)."""
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="OnlyCommandFunctionsSign", principals=[iam.AccountRootPrincipal()], actions=["kms:Sign"],
            resources=["*"], conditions={"ArnEquals": {"aws:PrincipalArn": role_arns}}))


def named_role_arn(role_name: str) -> str:
    """The ARN of a role by name (for a key-policy condition on a role deployed by another stack)."""
    return f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/{role_name}"
