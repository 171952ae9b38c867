"""Deploy-time AWS API calls for what CloudFormation has no resource for (for example
attaching an IoT policy to a thing group), on CDK's AwsCustomResource singleton function."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import custom_resources as cr
from constructs import Construct

from stacks.platform.defaults import PlatformDefaults
from stacks.platform.nag import acknowledge_role_policy

_SINGLETON_ID = "AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", "")
_LOG_GROUP_ID = "SdkCallLogs"


def sdk_call(
    scope: Construct,
    construct_id: str,
    *,
    on_update: cr.AwsSdkCall,
    on_delete: cr.AwsSdkCall | None,
    statements: list[iam.PolicyStatement],
    defaults: PlatformDefaults,
    any_resource_reason: str | None = None,
) -> cr.AwsCustomResource:
    """`any_resource_reason`: why the call's statements name "*" (an action with no narrower resource),
    acknowledged on the call's policy for cdk-nag."""
    stack = Stack.of(scope)
    # One log group per stack, shared like the singleton function that writes to it.
    log_group = stack.node.try_find_child(_LOG_GROUP_ID) or defaults.log_group(stack, _LOG_GROUP_ID)
    call = cr.AwsCustomResource(
        scope,
        construct_id,
        on_update=on_update,
        on_delete=on_delete,
        policy=cr.AwsCustomResourcePolicy.from_statements(statements),
        log_group=log_group,
        install_latest_aws_sdk=False,
    )
    acknowledge_role_policy(call, "one deploy-time IoT API call")
    if any_resource_reason:
        Validations.of(call).acknowledge(Acknowledgment(id="AwsSolutions-IAM5[Resource::*]",
                                                        reason=any_resource_reason))
    _acknowledge_singleton(stack)
    return call


def iot_data_endpoint(scope: Construct, construct_id: str, *, prefix: str, defaults: PlatformDefaults) -> str:
    """The account's iot:Data-ATS endpoint host name, read with DescribeEndpoint at deploy time, so a
    function publishing or ending sessions makes no lookup call at run time. The SDK's regional default
    data endpoint is "intended for testing purposes only" (AWS CLI iot-data help;
    https://docs.aws.amazon.com/general/latest/gr/iot-core.html#iot-core-data-plane-endpoints)."""
    endpoint = sdk_call(
        scope, construct_id,
        on_update=cr.AwsSdkCall(
            service="Iot", action="describeEndpoint", parameters={"endpointType": "iot:Data-ATS"},
            physical_resource_id=cr.PhysicalResourceId.of(f"{prefix}-iot-data-ats-endpoint")),
        on_delete=None,
        # DescribeEndpoint has no resource type in the Service Authorization Reference: "*" only.
        statements=[iam.PolicyStatement(actions=["iot:DescribeEndpoint"], resources=["*"])],
        defaults=defaults,
        any_resource_reason="iot:DescribeEndpoint supports no resource-level permission (Service Authorization "
                            "Reference, AWS IoT): it reads the account's endpoint address, nothing else.",
    )
    return endpoint.get_response_field("endpointAddress")


def _acknowledge_singleton(stack: Stack) -> None:
    function = stack.node.try_find_child(_SINGLETON_ID)
    if function is None or getattr(stack, "_sdk_singleton_acknowledged", False):
        return
    stack._sdk_singleton_acknowledged = True
    deploy_only = ("CDK's AwsCustomResource function runs only while CloudFormation deploys this "
                   "stack, invoked synchronously by CloudFormation, which reports and rolls back "
                   "any failure; it has no steady-state traffic.")
    Validations.of(function).acknowledge(
        *[Acknowledgment(id=rule, reason=deploy_only) for rule in (
            "HIPAA.Security-LambdaConcurrency", "NIST.800.53.R5-LambdaConcurrency",
            "HIPAA.Security-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ")],
        *[Acknowledgment(id=rule, reason="It calls only the public IoT control-plane API over TLS "
                         "with IAM auth; there is no VPC resource to protect.")
          for rule in ("HIPAA.Security-LambdaInsideVPC", "NIST.800.53.R5-LambdaInsideVPC")],
    )
    Validations.of(function.node.find_child("ServiceRole")).acknowledge(Acknowledgment(
        id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
           "AWSLambdaBasicExecutionRole]",
        reason="CDK's singleton function role carries only the AWS-managed basic execution policy "
               "(write its own logs); each call's IoT permissions are separate, per-resource policies.",
    ))
