"""The command issuer: its function, its REST API on the operator pool, the artifacts bucket and the
role IoT Jobs presigns artifact URLs with."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, CfnOutput, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from lambdas.shared.command_jobs import ARTIFACT_PREFIX
from stacks.identity.device_registry import iot_arn_prefix
from stacks.identity.token_api import ADMIN_GROUP
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import API_GATEWAY_CALLER, PythonFunction, allow_key_use
from stacks.platform.nag import acknowledge_role_policy, logical_id
from stacks.platform.rest_api import SecureRestApi

JOB_RUN_TIME_REASON = ("Jobs, things and thing groups are named by the operator at run time; the actions "
                       "are named exactly and the resources are this account's IoT jobs, things and groups.")


def presign_role(scope: Construct, bucket: s3.IBucket, key: kms.IKey) -> iam.Role:
    """The role IoT Jobs assumes to presign artifact URLs: read-only, the artifacts prefix only, and
    assumable by IoT only for this account's jobs (confused-deputy conditions,
    https://docs.aws.amazon.com/iot/latest/developerguide/cross-service-confused-deputy-prevention.html)."""
    role = iam.Role(scope, "PresignRole", description="IoT Jobs presigns software-update artifact URLs",
                    assumed_by=iam.ServicePrincipal("iot.amazonaws.com", conditions={
                        "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                        "ArnLike": {"aws:SourceArn": f"{iot_arn_prefix()}:job/*"}}))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                           resources=[bucket.arn_for_objects(f"{ARTIFACT_PREFIX}*")]))
    role.add_to_policy(iam.PolicyStatement(actions=["kms:Decrypt"], resources=[key.key_arn]))
    acknowledge_role_policy(role, "presigning artifact downloads")
    Validations.of(role).acknowledge(Acknowledgment(
        id=f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/{ARTIFACT_PREFIX}*]",
        reason="Artifacts are named by their SHA-256 at run time; the role reads only the artifacts/ prefix."))
    return role


class CommandIssuerApi(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, prefix: str, user_pool: cognito.IUserPool,
        signing_key: kms.IKey, artifacts: s3.IBucket, artifacts_key: kms.IKey, presign: iam.IRole,
        audit_table: dynamodb.ITable, audit_key: kms.IKey, defaults: PlatformDefaults,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        self.function = PythonFunction(
            self, "Handler",
            handler="commands.issuer.handler.lambda_handler",
            description="Signs and queues commands for admins (audited before each job is created)",
            service="command-issuer",
            environment={
                "SIGNING_KEY_ARN": signing_key.key_arn,
                "AUDIT_TABLE": audit_table.table_name,
                "ARTIFACTS_BUCKET": artifacts.bucket_name,
                "PRESIGN_ROLE_ARN": presign.role_arn,
                "ADMIN_GROUP": ADMIN_GROUP,
                **environment,
            },
            defaults=defaults, reserved_concurrency=5, synchronous_reason=API_GATEWAY_CALLER,
        )
        fn = self.function.function
        self.role = self.function.role
        fn.add_to_role_policy(iam.PolicyStatement(sid="SignCommands", actions=["kms:Sign", "kms:GetPublicKey"],
                                                  resources=[signing_key.key_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="AuditCommands", actions=["dynamodb:PutItem"],
                                                  resources=[audit_table.table_arn]))
        allow_key_use(fn, audit_key)
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="LookUpTargets", actions=["iot:DescribeThing", "iot:DescribeThingGroup"],
            resources=[f"{arn}:thing/*", f"{arn}:thinggroup/*"]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="QueueCommands", actions=["iot:CreateJob"],
            resources=[f"{arn}:job/*", f"{arn}:thing/*", f"{arn}:thinggroup/*"]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="FollowCommands",
            actions=["iot:DescribeJob", "iot:CancelJob", "iot:DescribeJobExecution", "iot:ListJobExecutionsForThing"],
            resources=[f"{arn}:job/*", f"{arn}:thing/*"]))
        # ListJobs has no resource type in the Service Authorization Reference (AWS IoT): "*" only.
        fn.add_to_role_policy(iam.PolicyStatement(sid="ListCommands", actions=["iot:ListJobs"], resources=["*"]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="JobsPresignArtifacts", actions=["iam:PassRole"],
                                                  resources=[presign.role_arn]))
        # Remote access: SSH tunnels only (iot:TunnelDestinationService, Service Authorization Reference).
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="OpenSshTunnels", actions=["iot:OpenTunnel"], resources=[f"{arn}:tunnel/*", f"{arn}:thing/*"],
            conditions={"ForAllValues:StringEquals": {"iot:TunnelDestinationService": ["SSH"]}}))
        # Upload URLs are presigned with this role's rights; HeadObject checks what was uploaded.
        fn.add_to_role_policy(iam.PolicyStatement(sid="ArtifactUploads", actions=["s3:PutObject", "s3:GetObject"],
                                                  resources=[artifacts.arn_for_objects(f"{ARTIFACT_PREFIX}*")]))
        fn.add_to_role_policy(iam.PolicyStatement(sid="ArtifactKey", actions=["kms:GenerateDataKey", "kms:Decrypt"],
                                                  resources=[artifacts_key.key_arn]))
        Validations.of(self.role).acknowledge(*[
            Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{wildcard}]", reason=JOB_RUN_TIME_REASON)
            for wildcard in ("arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:job/*",
                             "arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*",
                             "arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thinggroup/*",
                             "arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:tunnel/*")])
        Validations.of(self.role).acknowledge(
            Acknowledgment(id="AwsSolutions-IAM5[Resource::*]", reason=(
                "Only iot:ListJobs (no resource-level permission) and the X-Ray tracing actions use Resource *.")),
            Acknowledgment(id=f"AwsSolutions-IAM5[Resource::<{logical_id(artifacts)}.Arn>/{ARTIFACT_PREFIX}*]",
                           reason="Artifacts are named by their SHA-256 at run time; uploads and checks stay "
                                  "under the artifacts/ prefix."))

        self.rest = SecureRestApi(
            self, "Rest", name=f"{prefix}-commands",
            description="Signed cloud-to-device commands (admins only)",
            user_pool=user_pool, defaults=defaults, rate_limit=5, burst_limit=10,
            no_cache_reason="Answers carry job ids, tunnel tokens and upload URLs for one admin; every "
                            "request is authorised and audited individually.")
        api = self.rest.api
        commands_resource = api.root.add_resource("commands")
        self.rest.add_method(commands_resource, "POST", fn, request_models={
            "application/json": _object_model(api, "CommandRequest", ["command"])})
        self.rest.add_method(commands_resource, "GET", fn, request_parameters={
            "method.request.querystring.thing": False, "method.request.querystring.group": False})
        job = commands_resource.add_resource("{job_id}")
        self.rest.add_method(job, "GET", fn, request_parameters={
            "method.request.path.job_id": True, "method.request.querystring.thing": False})
        self.rest.add_method(job.add_resource("cancel"), "POST", fn,
                             request_parameters={"method.request.path.job_id": True})
        self.rest.add_method(api.root.add_resource("artifacts"), "POST", fn, request_models={
            "application/json": _object_model(api, "ArtifactRequest", ["sha256", "size"])})
        self.rest.add_method(api.root.add_resource("public-key"), "GET", fn)
        retire = api.root.add_resource("rotations").add_resource("{thing}").add_resource("retire")
        self.rest.add_method(retire, "POST", fn, request_parameters={"method.request.path.thing": True})
        self.url = api.url
        CfnOutput(self, "CommandApiUrl", key="CommandApiUrl", value=api.url, description="fleetctl command ... --api-url <this>")


def _object_model(api: apigw.RestApi, name: str, required: list[str]) -> apigw.Model:
    """A JSON object with these keys (the function checks each value exactly, as the device will)."""
    return api.add_model(name, content_type="application/json", model_name=name, schema=apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT, required=required))
