"""Certificate rotation: the rule on `cmd/+/certs/+`, the function (with the cryptography layer), and the
table of rotations awaiting confirmation."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot_actions_alpha as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambdas.shared import topics
from stacks.identity.device_registry import iot_arn_prefix
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use
from stacks.platform.iot_rule import finish_rule_role, rule_role, topic_rule
from stacks.platform.layers import cryptography_layer
from stacks.platform.nag import acknowledge_dead_letter_grant
from stacks.platform.sdk_call import iot_data_endpoint
from stacks.platform.table import secure_table

# principal() is the authenticated certificate; clientid(), topic(2) and topic(4) say where it published.
ROTATION_SQL = ("SELECT *, topic(2) AS thing, topic(4) AS step, principal() AS principal, clientid() AS client_id "
                f"FROM '{topics.cert_rotation_rule_topic()}' "
                f"WHERE topic(4) = '{topics.ROTATION_REQUEST}' OR topic(4) = '{topics.ROTATION_CONFIRM}'")


class CertificateRotation(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, prefix: str, stage_name: str, device_policy_name: str,
        audit_table: dynamodb.ITable, audit_key: kms.IKey, key: kms.IKey, error_bucket: s3.IBucket,
        dead_letters: sqs.IQueue, deletion_protection: bool, defaults: PlatformDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        self.table = secure_table(
            self, "Rotations", table_name=f"{prefix}-cert-rotations", partition_key="thing", key=key,
            deletion_protection=deletion_protection,
            backup_reason="Point-in-time recovery keeps 35 days of rotation state; the audit table holds "
                          "the permanent record of every step.")
        endpoint = iot_data_endpoint(self, "DataEndpoint", prefix=prefix, defaults=defaults)
        self.function = PythonFunction(
            self, "Rotate",
            handler="commands.rotation.handler.lambda_handler",
            description="Issues a device's new certificate from its CSR; retires the old one on confirmation",
            service="cert-rotation",
            environment={"ROTATIONS_TABLE": self.table.table_name, "AUDIT_TABLE": audit_table.table_name,
                         "DEVICE_POLICY_NAME": device_policy_name, "IOT_DATA_ENDPOINT": endpoint},
            defaults=defaults, reserved_concurrency=10, timeout=Duration.seconds(30),
            layers=[cryptography_layer(self, "Cryptography")],
        )
        fn = self.function.function
        # IoT invokes rule actions asynchronously: two retries resume from the rotation row, then the DLQ.
        fn.configure_async_invoke(retry_attempts=2, max_event_age=Duration.hours(1),
                                  on_failure=destinations.SqsDestination(dead_letters))
        Validations.of(fn).acknowledge(*[Acknowledgment(id=rule, reason=(
            "Failed asynchronous invocations go to an on-failure destination (the commands dead-letter queue), "
            "which keeps the event with its error.")) for rule in ("HIPAA.Security-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ")])
        certs, things = f"{arn}:cert/*", f"{arn}:thing/*"
        fn.add_to_role_policy(iam.PolicyStatement(sid="CheckThePublisher", actions=["iot:ListThingPrincipals"],
                                                  resources=[things]))
        # CreateCertificateFromCsr has no resource type in the Service Authorization Reference: "*" only.
        fn.add_to_role_policy(iam.PolicyStatement(sid="IssueFromCsr", actions=["iot:CreateCertificateFromCsr"],
                                                  resources=["*"]))
        # A retry finds the certificate a lost CreateCertificateFromCsr made (rotate.py): ListCertificates
        # lists the account's certificates, so it is granted on "*" (list_awsiot.html, Service Authorization
        # Reference).
        fn.add_to_role_policy(iam.PolicyStatement(sid="FindTheIssuedCertificate", actions=["iot:ListCertificates"],
                                                  resources=["*"]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="AttachNewCertificate", actions=["iot:AttachPolicy", "iot:AttachThingPrincipal"],
            resources=[certs, things]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ManageRotatedCertificates", actions=["iot:DescribeCertificate", "iot:UpdateCertificate"],
            resources=[certs]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="AnswerTheDevice", actions=["iot:Publish"],
            resources=[f"{arn}:topic/{topics.cert_rotation_response_prefix('*')}/*"]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="RotationState", actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            resources=[self.table.table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="AuditRotations", actions=["dynamodb:PutItem"],
                                                  resources=[audit_table.table_arn]))
        allow_key_use(fn, key)
        allow_key_use(fn, audit_key)
        acknowledge_dead_letter_grant(self.function.role)
        Validations.of(self.function.role).acknowledge(
            *[Acknowledgment(id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:{kind}/*]",
                             reason="Devices and their certificates are named at run time by the authenticated "
                                    "publisher; the function checks the pair before acting.")
              for kind in ("cert", "thing")],
            Acknowledgment(id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:"
                              f"topic/{topics.cert_rotation_response_prefix('*')}/*]",
                           reason="Answers go to the rotating device's own response topics only."),
            Acknowledgment(id="AwsSolutions-IAM5[Resource::*]",
                           reason="iot:CreateCertificateFromCsr supports no resource-level permission and "
                                  "iot:ListCertificates lists the account's certificates; X-Ray tracing actions "
                                  "take Resource * too."))

        role = rule_role(self, "Certificate rotation rule: invokes the rotation function")
        self.rule_name = topics.rule_name(stage_name, "cert_rotation")
        self.rule = topic_rule(self, "Rule", name=self.rule_name,
                               description="Device CSRs and rotation confirmations to the rotation function",
                               sql=ROTATION_SQL, action=actions.LambdaFunctionAction(fn), role=role,
                               error_bucket=error_bucket)
        finish_rule_role(role, key=error_bucket.encryption_key or key, purpose="the certificate rotation rule",
                         error_bucket=error_bucket)
