"""Daily: devices whose certificates the audit found expiring get a signed rotate-certificate job."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.identity.device_registry import iot_arn_prefix
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use
from stacks.platform.nag import acknowledge_dead_letter_grant


class RotationStarter(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, device_policy_name: str, signing_key: kms.IKey,
                 signing_key_id: str, audit_table: dynamodb.ITable, audit_key: kms.IKey, dead_letters: sqs.IQueue,
                 job_timeout_minutes: int, lifetime_seconds: int, defaults: PlatformDefaults) -> None:
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        self.function = PythonFunction(
            self, "Start", handler="commands.expiring.handler.lambda_handler",
            description="Daily: signed rotate-certificate jobs for devices whose certificates are expiring",
            service="rotation-starter",
            environment={"SIGNING_KEY_ARN": signing_key.key_arn, "SIGNING_KEY_ID": signing_key_id,
                         "AUDIT_TABLE": audit_table.table_name, "DEVICE_POLICY_NAME": device_policy_name,
                         "THING_ARN_PREFIX": f"{arn}:thing/", "JOB_TIMEOUT_MINUTES": str(job_timeout_minutes),
                         "ROTATION_JOB_LIFETIME_SECONDS": str(lifetime_seconds)},
            defaults=defaults, reserved_concurrency=1, timeout=Duration.minutes(5))
        fn = self.function.function
        fn.configure_async_invoke(retry_attempts=2, max_event_age=Duration.hours(6),
                                  on_failure=destinations.SqsDestination(dead_letters))
        Validations.of(fn).acknowledge(*[Acknowledgment(id=rule, reason=(
            "Failed asynchronous invocations go to an on-failure destination (the commands dead-letter queue).")
        ) for rule in ("HIPAA.Security-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ")])
        # The audit runs daily (FleetAudit); a day's findings are read once a day, after it.
        events.Rule(self, "Daily", description="Start rotations for expiring device certificates",
                    schedule=events.Schedule.cron(minute="30", hour="6"),
                    targets=[targets.LambdaFunction(fn, retry_attempts=2)])
        certs, things = f"{arn}:cert/*", f"{arn}:thing/*"
        # ListAuditFindings and ListPrincipalThings have no resource type (Service Authorization Reference).
        fn.add_to_role_policy(iam.PolicyStatement(sid="ReadFindings",
                                                  actions=["iot:ListAuditFindings", "iot:ListPrincipalThings"],
                                                  resources=["*"]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="CheckCertificates",
                                                  actions=["iot:DescribeCertificate", "iot:ListAttachedPolicies"],
                                                  resources=[certs]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="QueueRotations", actions=["iot:CreateJob"],
                                                  resources=[f"{arn}:job/*", things]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="SignRotations", actions=["kms:Sign"],
                                                  resources=[signing_key.key_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="AuditRotations", actions=["dynamodb:PutItem"],
                                                  resources=[audit_table.table_arn]))
        allow_key_use(fn, audit_key)
        acknowledge_dead_letter_grant(self.function.role)
        Validations.of(self.function.role).acknowledge(
            *[Acknowledgment(id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:{kind}/*]",
                             reason="Certificates, things and jobs are named by the audit's findings at run time.")
              for kind in ("cert", "thing", "job")],
            Acknowledgment(id="AwsSolutions-IAM5[Resource::*]",
                           reason="iot:ListAuditFindings and iot:ListPrincipalThings support no resource-level "
                                  "permission; X-Ray tracing actions take Resource * too."))
        self.role = self.function.role
