"""A regional REST API for humans: Cognito-authorised methods only, validated requests,
throttled, access- and execution-logged, traced. Token and alerts APIs are both built on it."""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults


class SecureRestApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        description: str,
        user_pool: cognito.IUserPool,
        defaults: PlatformDefaults,
        rate_limit: int,
        burst_limit: int,
        no_cache_reason: str,
        sets_account_logging_role: bool = False,
    ) -> None:
        """`sets_account_logging_role`: this API creates API Gateway's CloudWatch role, an
        account-wide setting: one API per account sets it, in the stage that owns account singletons."""
        super().__init__(scope, construct_id)
        access_logs = defaults.log_group(self, "AccessLogs")
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=name,
            description=description,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=sets_account_logging_role,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN if sets_account_logging_role else None,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=rate_limit,
                throttling_burst_limit=burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies may carry secrets: never log them
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=True,
                ),
            ),
        )
        self.authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[user_pool],
            identity_source="method.request.header.Authorization",
        )
        self.validator = self.api.add_request_validator(
            "Validate", validate_request_body=True, validate_request_parameters=True)
        self._acknowledge(sets_account_logging_role, no_cache_reason, rate_limit)

    def add_method(
        self,
        resource: apigw.IResource,
        http_method: str,
        function: lambda_.IFunction,
        *,
        request_models: dict[str, apigw.IModel] | None = None,
        request_parameters: dict[str, bool] | None = None,
    ) -> apigw.Method:
        """Every method: Cognito-authorised, with its parameters (and body model) validated."""
        return resource.add_method(
            http_method,
            apigw.LambdaIntegration(function),
            authorizer=self.authorizer,
            authorization_type=apigw.AuthorizationType.COGNITO,
            request_validator=self.validator,
            request_models=request_models,
            request_parameters={"method.request.header.Authorization": True, **(request_parameters or {})},
        )

    def _acknowledge(self, owner: bool, no_cache_reason: str, rate_limit: int) -> None:
        if owner:
            Validations.of(self.api.node.find_child("CloudWatchRole")).acknowledge(Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                   "AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="API Gateway's account-wide logging role; AWS documents this managed policy "
                       "for it, and API Gateway names its execution log groups itself.",
            ))
        Validations.of(self.api.deployment_stage).acknowledge(
            *[Acknowledgment(id=rule, reason=no_cache_reason)
              for rule in ("NIST.800.53.R5-APIGWCacheEnabledAndEncrypted",
                           "HIPAA.Security-APIGWCacheEnabledAndEncrypted")],
            *[Acknowledgment(id=rule, reason="A backend client certificate authenticates API Gateway "
                             "to HTTP backends; this API's only backends are Lambda integrations "
                             "invoked over IAM.")
              for rule in ("NIST.800.53.R5-APIGWSSLEnabled", "HIPAA.Security-APIGWSSLEnabled")],
            *[Acknowledgment(id=rule, reason="No WAF: every method requires a Cognito token of an "
                             "MFA-protected operator, validates its input and is throttled to "
                             f"{rate_limit} rps; a web ACL would add cost without a threat it "
                             "uniquely stops here.")
              for rule in ("AwsSolutions-APIG3", "NIST.800.53.R5-APIGWAssociatedWithWAF")],
        )
