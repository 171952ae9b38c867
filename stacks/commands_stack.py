"""CommandStack: the command-signing key, the issuer API, the artifacts bucket, job templates and the
certificate-rotation workflow. Deployed after Identity and Ingest and before Defense, whose
auto-response signs its shutdown command with this stack's key."""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, CfnCustomResource, CfnOutput, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from lambdas.shared.command_jobs import ABORT_FAILED_PERCENT, ABORT_MIN_EXECUTED
from stacks.audit_stack import AuditStack
from stacks.commands.issuer_api import CommandIssuerApi, presign_role
from stacks.commands.rotation import CertificateRotation
from stacks.commands.rotation_starter import RotationStarter
from stacks.commands.signing_key import CommandSigningKey, named_role_arn
from stacks.config import StageConfig
from stacks.identity.device_registry import iot_arn_prefix
from stacks.identity_stack import IdentityStack
from stacks.platform.bucket import SecureBucket
from stacks.platform.function import PythonFunction, allow_key_use
from stacks.platform.key import customer_key
from stacks.platform.messaging import alarm, dead_letter_queue, queue_depth

# The commands an operator sends as they are (remote access and software updates need the issuer).
TEMPLATE_COMMANDS = ("config", "reboot", "shutdown", "rotate-certificate")


def auto_response_role_name(prefix: str) -> str:
    """The auto-response function's role name, fixed so this stack's key policy can name it before the
    Defense stack creates it."""
    return f"{prefix}-auto-response"


class CommandStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack,
                 identity: IdentityStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(identity)
        defaults = audit.defaults

        self.data_key = customer_key(self, "CommandDataKey", alias=f"alias/{stage.prefix}-commands-data",
                                     description=f"Fleetwarden {stage.name}: software-update artifacts, rotations")
        self.artifacts = SecureBucket(
            self, "Artifacts", encryption_key=self.data_key, access_log_bucket=audit.access_log_bucket,
            access_log_prefix="command-artifacts/", expire_after_days=365,
        ).bucket
        self.presign_role = presign_role(self, self.artifacts, self.data_key)

        job_environment = {
            "JOB_TIMEOUT_MINUTES": str(stage.command_timeout_minutes),
            "JOB_RETRY_ATTEMPTS": str(stage.command_retry_attempts),
            "PRESIGN_SECONDS": str(stage.artifact_url_seconds),
            "DEFAULT_LIFETIME_SECONDS": str(stage.command_lifetime_hours * 3600),
        }
        self.job_environment = job_environment
        self.signing = CommandSigningKey(
            self, "Signing", alias=f"alias/{stage.prefix}-commands",
            description=f"Fleetwarden {stage.name}: signs cloud-to-device commands (ECDSA P-256)")
        self.signing_key = self.signing.key
        self.issuer = CommandIssuerApi(
            self, "Issuer", prefix=stage.prefix, user_pool=identity.user_pool,
            signing_key=self.signing_key, artifacts=self.artifacts, artifacts_key=self.data_key,
            presign=self.presign_role, audit_table=identity.audit_table, audit_key=identity.data_key,
            defaults=defaults, environment={
                **job_environment,
                "MAX_ARTIFACT_BYTES": str(stage.max_artifact_mb * 1024 * 1024),
                "TUNNEL_LIFETIME_MINUTES": str(stage.tunnel_lifetime_minutes),
            })

        self.auto_response_role_name = auto_response_role_name(stage.prefix)

        for command in TEMPLATE_COMMANDS:
            iot.CfnJobTemplate(
                self, f"Template{command.title().replace('-', '')}",
                job_template_id=f"{stage.prefix}-{command}",
                description=f"Fleetwarden {command}: send with fleetctl command send (signed by the issuer)",
                # A job made from the template alone carries no signature: every device refuses it
                # (`unsigned`). The template pins the execution settings the issuer uses.
                document=json.dumps({"command": {"command": command, "note": "unsigned: use fleetctl command send"}}),
                # CDK types these two as plain JSON (no property classes): CloudFormation's own names.
                timeout_config={"InProgressTimeoutInMinutes": stage.command_timeout_minutes},
                job_executions_retry_config=iot.CfnJobTemplate.JobExecutionsRetryConfigProperty(
                    retry_criteria_list=[iot.CfnJobTemplate.RetryCriteriaProperty(
                        failure_type="TIMED_OUT", number_of_retries=stage.command_retry_attempts)]
                ) if stage.command_retry_attempts else None,
                abort_config={"CriteriaList": [{
                    "Action": "CANCEL", "FailureType": "FAILED", "MinNumberOfExecutedThings": ABORT_MIN_EXECUTED,
                    "ThresholdPercentage": ABORT_FAILED_PERCENT}]},
            )

        self.dead_letters = dead_letter_queue(
            self, "DeadLetters", queue_name=f"{stage.prefix}-commands-dlq", key=self.data_key,
            reason="This queue is itself the dead-letter destination of the rotation function and starter; "
                   "its depth alarms the ops topic.")
        self.dead_letters_alarm = alarm(
            self, "DeadLettersAlarm", alarm_name=f"{stage.prefix}-commands-dead-letters",
            description="A rotation step or the rotation starter failed every retry: the event waits in the "
                        "commands DLQ with its error. Fix the cause, then re-send it (the rotation row resumes).",
            metric=queue_depth(self.dead_letters), topic=audit.ops_topic)
        self.rotation = CertificateRotation(
            self, "Rotation", prefix=stage.prefix, stage_name=stage.name,
            device_policy_name=identity.device_policy_name, audit_table=identity.audit_table,
            audit_key=identity.data_key, key=self.data_key, error_bucket=self.artifacts,
            dead_letters=self.dead_letters, deletion_protection=stage.termination_protection, defaults=defaults)

        # The public key as PEM for the device team: a custom resource reads it at deploy time
        # (AwsCustomResource decodes binary answers as UTF-8 text, which would garble the DER key).
        reader = PythonFunction(
            self, "PublicKeyReader", handler="commands.public_key.handler.lambda_handler",
            description="Deploy time: the command-signing public key as PEM (stack output)",
            service="command-public-key", environment={}, defaults=defaults, reserved_concurrency=1,
            synchronous_reason="CloudFormation invokes it while deploying and waits for its answer; a failure "
                               "is answered FAILED and rolls the deployment back.")
        reader.function.add_to_role_policy(iam.PolicyStatement(actions=["kms:GetPublicKey"],
                                                               resources=[self.signing_key.key_arn]))
        public_key = CfnCustomResource(self, "PublicKey", service_token=reader.function.function_arn)
        public_key.add_property_override("KeyArn", self.signing_key.key_arn)

        self.signing_key_id = public_key.get_att("KeyId").to_string()
        self.issuer.function.function.add_environment("SIGNING_KEY_ID", self.signing_key_id)

        # Operators retire a rotated thing's old certificate through the issuer (grace period / revoke).
        issuer_fn = self.issuer.function.function
        issuer_fn.add_environment("ROTATIONS_TABLE", self.rotation.table.table_name)
        issuer_fn.add_environment("ROTATION_GRACE_SECONDS", str(stage.rotation_grace_hours * 3600))
        issuer_fn.add_to_role_policy(iam.PolicyStatement(
            sid="RetireOldCertificates", actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
            resources=[self.rotation.table.table_arn]))
        issuer_fn.add_to_role_policy(iam.PolicyStatement(
            sid="RetireOldCertificate", actions=["iot:UpdateCertificate"],
            resources=[f"{iot_arn_prefix()}:cert/*"]))
        allow_key_use(issuer_fn, self.data_key)
        Validations.of(self.issuer.role).acknowledge(Acknowledgment(
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cert/*]",
            reason="The old certificate is the one the rotation table records for the thing, named at run time."))
        self.starter = RotationStarter(
            self, "RotationStarter", device_policy_name=identity.device_policy_name, signing_key=self.signing_key,
            signing_key_id=self.signing_key_id, audit_table=identity.audit_table, audit_key=identity.data_key,
            dead_letters=self.dead_letters, job_timeout_minutes=stage.command_timeout_minutes,
            lifetime_seconds=stage.command_lifetime_hours * 3600, defaults=defaults)
        # Only these sign: the issuer, the rotation starter and (in the Defense stack) the auto-response.
        self.signing.allow_signers([self.issuer.role.role_arn, self.starter.role.role_arn,
                                    named_role_arn(self.auto_response_role_name)])

        self.functions = [self.issuer.function.function, self.rotation.function.function,
                          self.starter.function.function]
        CfnOutput(self, "CommandSigningPublicKeyPem", value=public_key.get_att("Pem").to_string(),
                  description="Devices trust this key (fleetctl command public-key prints it too)")
        CfnOutput(self, "CommandSigningKeyId", value=self.signing_key_id,
                  description="SHA-256 of the key's DER SubjectPublicKeyInfo: the key_id documents carry")
        CfnOutput(self, "CommandSigningKeyArn", value=self.signing_key.key_arn)
        CfnOutput(self, "ArtifactsBucketName", value=self.artifacts.bucket_name)

