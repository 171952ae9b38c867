"""The one way Fleetwarden packages and runs a Python Lambda function.

Code: the plain `lambdas/` directory as an asset (no Docker bundling), with the AWS-managed
Powertools for AWS Lambda (Python) V3 layer for powertools and pydantic. Every function gets
X-Ray tracing, a KMS-encrypted log group with the stage's retention, JSON logs, bounded
concurrency, and the Powertools environment, encrypted at rest with the same customer-managed
key as its logs. (Lambda creates the key grant for the execution role when CloudFormation
creates the function; the role needs no KMS statement.)
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Acknowledgment, Aws, Duration, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.nag import acknowledge_role_policy

LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
RUNTIME = lambda_.Runtime.PYTHON_3_14
POWERTOOLS_LAYER_ACCOUNT = "017000801446"  # the Powertools team's publishing account
API_GATEWAY_CALLER = ("API Gateway invokes it synchronously and returns its error to the caller, "
                      "who retries; there is no asynchronous event to dead-letter.")


def powertools_layer_arn(version: int) -> str:
    return (f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
            f"AWSLambdaPowertoolsPythonV3-python314-x86_64:{version}")


class PythonFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        service: str,
        environment: dict[str, str],
        defaults: PlatformDefaults,
        reserved_concurrency: int,
        timeout: Duration = Duration.seconds(10),
        memory_size: int = 256,
        synchronous_reason: str | None = None,
        role_name: str | None = None,
        layers: list[lambda_.ILayerVersion] | None = None,
    ) -> None:
        """`role_name`: a fixed name, only for a role another stack must name before it exists (a key
        policy condition); otherwise CloudFormation names it."""
        super().__init__(scope, construct_id)
        self.log_group = defaults.log_group(self, "Logs")
        # Our own role instead of CDK's default: the AWS-managed basic execution policy would
        # let the function write to any log group; this one writes only to its own.
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Fleetwarden {service} function",
            role_name=role_name,
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            role=self.role,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=handler,
            code=lambda_.Code.from_asset(
                str(LAMBDAS_DIR), exclude=["**/__pycache__", "**/*.pyc", "**/tests"]
            ),
            layers=[lambda_.LayerVersion.from_layer_version_arn(
                self, "Powertools", powertools_layer_arn(defaults.powertools_layer_version)
            ), *(layers or [])],
            description=description,
            timeout=timeout,
            memory_size=memory_size,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment_encryption=defaults.key,
            environment={
                "POWERTOOLS_SERVICE_NAME": service,
                "POWERTOOLS_METRICS_NAMESPACE": defaults.metrics_namespace,
                **environment,
            },
        )
        role = self.role
        acknowledge_role_policy(role, f"the {service} function")
        # X-Ray's PutTraceSegments/PutTelemetryRecords accept no resource narrower than "*".
        Validations.of(role).acknowledge(Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="Only the X-Ray tracing actions (xray:PutTraceSegments, "
                   "xray:PutTelemetryRecords) use Resource *; they support no narrower resource.",
        ))
        acks = [Acknowledgment(
            id=rule,
            reason="The function reaches only AWS public service endpoints (IoT, DynamoDB, "
                   "CloudWatch) over TLS with IAM auth; there is no VPC resource to protect.",
        ) for rule in ("HIPAA.Security-LambdaInsideVPC", "NIST.800.53.R5-LambdaInsideVPC")]
        if synchronous_reason:
            acks += [Acknowledgment(id=rule, reason=synchronous_reason) for rule in (
                "HIPAA.Security-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ")]
        Validations.of(self.function).acknowledge(*acks)


def allow_key_use(function: lambda_.IFunction, key: kms.IKey) -> None:
    """What DynamoDB needs from a caller of a table encrypted with a customer-managed key,
    named exactly (CDK's grant would add kms:GenerateDataKey* and kms:ReEncrypt* wildcards)."""
    function.add_to_role_policy(iam.PolicyStatement(
        actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
        resources=[key.key_arn],
    ))


def allow_publish(function: lambda_.IFunction, topic: sns.ITopic, key: kms.IKey) -> None:
    """Publish to one KMS-encrypted SNS topic, with exactly the key actions SNS needs."""
    function.add_to_role_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn]))
    function.add_to_role_policy(iam.PolicyStatement(
        actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]))
