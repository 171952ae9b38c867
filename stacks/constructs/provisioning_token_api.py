"""POST /provisioning-tokens: a signed-in member of the `admins` group gets a one-time token
for one serial. API Gateway checks the Cognito token; the function checks the group."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Duration, RemovalPolicy, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import StageConfig
from stacks.constructs.python_function import PythonFunction, allow_key_use
from stacks.retention import log_retention

ADMIN_GROUP = "admins"


class OperatorDirectory(Construct):
    """The Cognito user pool of privileged humans (admins) and the CLI's app client."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=f"{stage.prefix}-operators",
            self_sign_up_enabled=False,  # admins create operator accounts
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14, require_lowercase=True, require_uppercase=True,
                require_digits=True, require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=stage.termination_protection,
            removal_policy=RemovalPolicy.RETAIN,
        )
        cognito.CfnUserPoolGroup(
            self, "AdminsGroup", user_pool_id=self.user_pool.user_pool_id, group_name=ADMIN_GROUP,
            description="May issue one-time provisioning tokens and take other privileged actions",
        )
        self.cli_client = self.user_pool.add_client(
            "FleetctlClient",
            user_pool_client_name=f"{stage.prefix}-fleetctl",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,
            id_token_validity=Duration.minutes(60),
            access_token_validity=Duration.minutes(60),
            refresh_token_validity=Duration.hours(12),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
        )
        CfnOutput(self, "UserPoolId", value=self.user_pool.user_pool_id)
        CfnOutput(self, "FleetctlClientId", value=self.cli_client.user_pool_client_id)


class ProvisioningTokenApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        directory: OperatorDirectory,
        tokens_table: dynamodb.ITable,
        audit_table: dynamodb.ITable,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = PythonFunction(
            self,
            "IssueToken",
            handler="token_api.handler.lambda_handler",
            description="Issues one-time provisioning tokens to members of the admins group",
            service="provisioning-token-api",
            environment={
                "TOKENS_TABLE": tokens_table.table_name,
                "AUDIT_TABLE": audit_table.table_name,
                "SERIAL_PATTERN": stage.serial_pattern,
                "TOKEN_TTL_SECONDS": str(stage.provisioning_token_ttl_minutes * 60),
                "ADMIN_GROUP": ADMIN_GROUP,
            },
            log_key=log_key,
            log_retention_days=stage.log_retention_days,
            powertools_layer_version=stage.powertools_layer_version,
            reserved_concurrency=5,
            synchronous_reason="API Gateway invokes it synchronously and returns its error to the "
                               "caller, who retries; there is no asynchronous event to dead-letter.",
        ).function
        self.function.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:PutItem"], resources=[tokens_table.table_arn, audit_table.table_arn]))
        allow_key_use(self.function, tokens_table.encryption_key)

        access_logs = logs.LogGroup(
            self, "AccessLogs",
            retention=log_retention(stage.log_retention_days),
            encryption_key=log_key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{stage.prefix}-provisioning-tokens",
            description="One-time provisioning tokens for field association (admins only)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # API Gateway's CloudWatch role is an account-wide setting: the owning stage sets it.
            cloud_watch_role=stage.owns_account_singletons,
            cloud_watch_role_removal_policy=(
                RemovalPolicy.RETAIN if stage.owns_account_singletons else None),
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=5,
                throttling_burst_limit=10,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies carry tokens: never log them
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True,
                ),
            ),
            disable_execute_api_endpoint=False,
        )
        if stage.owns_account_singletons:
            Validations.of(self.api.node.find_child("CloudWatchRole")).acknowledge(Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                   "AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="API Gateway's account-wide logging role; AWS documents this managed policy "
                       "for it, and API Gateway names its execution log groups itself.",
            ))
        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[directory.user_pool],
            identity_source="method.request.header.Authorization",
        )
        body_model = self.api.add_model(
            "TokenRequest",
            content_type="application/json",
            model_name="TokenRequest",
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4,
                type=apigw.JsonSchemaType.OBJECT,
                required=["serial"],
                additional_properties=False,
                properties={"serial": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING,
                                                       min_length=1, max_length=128)},
            ),
        )
        validator = self.api.add_request_validator(
            "ValidateBody", validate_request_body=True, validate_request_parameters=True)
        resource = self.api.root.add_resource("provisioning-tokens")
        resource.add_method(
            "POST",
            apigw.LambdaIntegration(self.function),
            authorizer=authorizer,
            authorization_type=apigw.AuthorizationType.COGNITO,
            request_validator=validator,
            request_models={"application/json": body_model},
            request_parameters={"method.request.header.Authorization": True},
        )
        self.url = self.api.url
        CfnOutput(self, "ProvisioningTokenApiUrl", value=self.api.url,
                  description="fleetctl token issue --api-url <this>")

        Validations.of(self.api.deployment_stage).acknowledge(
            *[Acknowledgment(id=rule, reason="Responses carry one-time secrets and must never be "
                             "cached; the API is low-volume and admin-only.")
              for rule in ("NIST.800.53.R5-APIGWCacheEnabledAndEncrypted",
                           "HIPAA.Security-APIGWCacheEnabledAndEncrypted")],
            *[Acknowledgment(id=rule, reason="A backend client certificate authenticates API Gateway "
                             "to HTTP backends; this API's only backend is a Lambda integration "
                             "invoked over IAM.")
              for rule in ("NIST.800.53.R5-APIGWSSLEnabled", "HIPAA.Security-APIGWSSLEnabled")],
            *[Acknowledgment(id=rule, reason="No WAF: the single method requires a Cognito token of "
                             "an MFA-protected admin, validates its body and is throttled to 5 rps; "
                             "a web ACL would add cost without a threat it uniquely stops here.")
              for rule in ("AwsSolutions-APIG3", "NIST.800.53.R5-APIGWAssociatedWithWAF")],
        )
