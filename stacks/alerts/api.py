"""GET /alerts and GET /alerts/{id}/trace for the analysis tool: Cognito-authorised,
traces handed out as presigned URLs of at most 5 minutes, every trace fetch audited."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Validations
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.alerts.pipeline import ALERTS_PREFIX
from stacks.identity.token_api import ADMIN_GROUP, ANALYST_GROUP
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import API_GATEWAY_CALLER, PythonFunction, allow_key_use
from stacks.platform.nag import logical_id
from stacks.platform.rest_api import SecureRestApi

TRACE_URL_SECONDS = 300


class AlertsApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        user_pool: cognito.IUserPool,
        alerts_table: dynamodb.ITable,
        bucket: s3.IBucket,
        data_key: kms.IKey,
        audit_table: dynamodb.ITable,
        audit_key: kms.IKey,
        defaults: PlatformDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = PythonFunction(
            self, "Handler",
            handler="alerts.api.handler.lambda_handler",
            description="Lists alerts and hands out short-lived trace URLs (audited)",
            service="alerts-api",
            environment={
                "ALERTS_TABLE": alerts_table.table_name,
                "AUDIT_TABLE": audit_table.table_name,
                "DATA_BUCKET": bucket.bucket_name,
                "TRACE_URL_SECONDS": str(TRACE_URL_SECONDS),
                "ALERTS_READER_GROUP": ANALYST_GROUP,
                "ADMIN_GROUP": ADMIN_GROUP,
            },
            defaults=defaults,
            reserved_concurrency=10,
            synchronous_reason=API_GATEWAY_CALLER,
        ).function
        fn = self.function
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="QueryAlertIndex", actions=["dynamodb:Query"],
            resources=[alerts_table.table_arn, f"{alerts_table.table_arn}/index/by_alert_id"]))
        # A presigned URL carries the signer's rights: the role may read alert objects only.
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="SignTraceDownloads", actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[bucket.arn_for_objects(f"{ALERTS_PREFIX}*")]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="AuditTraceFetches", actions=["dynamodb:PutItem"], resources=[audit_table.table_arn]))
        allow_key_use(fn, data_key)
        allow_key_use(fn, audit_key)
        Validations.of(fn.role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/{ALERTS_PREFIX}*]",
                reason="Trace downloads are presigned for alert objects named at run time; the role "
                       "can read only the alerts/ prefix.",
            ),
            Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{logical_id(alerts_table)}.Arn>/index/by_alert_id]",
                reason="One named index of the alert table (the nag rule reads the path as a wildcard).",
            ),
        )

        self.rest = SecureRestApi(
            self, "Rest",
            name=f"{prefix}-alerts",
            description="Alert index and trace downloads for analysts",
            user_pool=user_pool, defaults=defaults,
            rate_limit=20, burst_limit=40,
            no_cache_reason="Each trace fetch must be authorised and audited individually; a cache "
                            "would serve presigned URLs to other callers.",
        )
        api = self.rest.api
        alerts = api.root.add_resource("alerts")
        self.rest.add_method(alerts, "GET", fn, request_parameters={
            "method.request.querystring.thing": True,
            "method.request.querystring.from": False,
            "method.request.querystring.to": False,
            "method.request.querystring.code": False,
            "method.request.querystring.limit": False,
            "method.request.querystring.next": False,
        })
        trace = alerts.add_resource("{id}").add_resource("trace")
        self.rest.add_method(trace, "GET", fn, request_parameters={"method.request.path.id": True})
        CfnOutput(self, "AlertsApiUrl", key="AlertsApiUrl", value=api.url, description="Alerts API for the analysis tool")
