"""POST /provisioning-tokens: a signed-in member of the `admins` group gets a one-time token
for one serial. API Gateway checks the Cognito token; the function checks the group."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import API_GATEWAY_CALLER, PythonFunction, allow_key_use
from stacks.platform.rest_api import SecureRestApi

ADMIN_GROUP = "admins"
ANALYST_GROUP = "analysts"


class OperatorDirectory(Construct):
    """The Cognito user pool of privileged humans (admins) and the CLI's app client."""

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, deletion_protection: bool) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=f"{prefix}-operators",
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
            deletion_protection=deletion_protection,
            removal_policy=RemovalPolicy.RETAIN,
        )
        cognito.CfnUserPoolGroup(
            self, "AdminsGroup", user_pool_id=self.user_pool.user_pool_id, group_name=ADMIN_GROUP,
            description="May issue one-time provisioning tokens and take other privileged actions",
        )
        cognito.CfnUserPoolGroup(
            self, "AnalystsGroup", user_pool_id=self.user_pool.user_pool_id, group_name=ANALYST_GROUP,
            description="May list alerts and fetch their traces (each fetch is audited)",
        )
        self.cli_client = self.user_pool.add_client(
            "FleetctlClient",
            user_pool_client_name=f"{prefix}-fleetctl",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,
            id_token_validity=Duration.minutes(60),
            access_token_validity=Duration.minutes(60),
            refresh_token_validity=Duration.hours(12),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
        )
        CfnOutput(self, "UserPoolId", key="UserPoolId", value=self.user_pool.user_pool_id)
        CfnOutput(self, "FleetctlClientId", key="FleetctlClientId", value=self.cli_client.user_pool_client_id)


class ProvisioningTokenApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        serial_pattern: str,
        token_ttl_seconds: int,
        sets_account_logging_role: bool,
        user_pool: cognito.IUserPool,
        tokens_table: dynamodb.ITable,
        audit_table: dynamodb.ITable,
        defaults: PlatformDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = PythonFunction(
            self,
            "IssueToken",
            handler="identity.token_api.handler.lambda_handler",
            description="Issues one-time provisioning tokens to members of the admins group",
            service="provisioning-token-api",
            environment={
                "TOKENS_TABLE": tokens_table.table_name,
                "AUDIT_TABLE": audit_table.table_name,
                "SERIAL_PATTERN": serial_pattern,
                "TOKEN_TTL_SECONDS": str(token_ttl_seconds),
                "ADMIN_GROUP": ADMIN_GROUP,
            },
            defaults=defaults,
            reserved_concurrency=5,
            synchronous_reason=API_GATEWAY_CALLER,
        ).function
        self.function.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:PutItem"], resources=[tokens_table.table_arn, audit_table.table_arn]))
        allow_key_use(self.function, tokens_table.encryption_key)

        self.rest = SecureRestApi(
            self, "Rest",
            name=f"{prefix}-provisioning-tokens",
            description="One-time provisioning tokens for field association (admins only)",
            user_pool=user_pool, defaults=defaults,
            rate_limit=5, burst_limit=10, sets_account_logging_role=sets_account_logging_role,
            no_cache_reason="Responses carry one-time secrets and must never be cached; the API "
                            "is low-volume and admin-only.",
        )
        self.api = self.rest.api
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
        self.rest.add_method(self.api.root.add_resource("provisioning-tokens"), "POST", self.function,
                             request_models={"application/json": body_model})
        self.url = self.api.url
        CfnOutput(self, "ProvisioningTokenApiUrl", key="ProvisioningTokenApiUrl", value=self.api.url,
                  description="fleetctl token issue --api-url <this>")
