"""Field association: a claim certificate may only ask to provision; the pre-provisioning
hook allows it only with a one-time token an admin obtained for exactly that serial."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Duration, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.identity.device_registry import DeviceRegistry, iot_arn_prefix
from stacks.identity.iot_policies import claim_policy_document
from stacks.identity.provisioning_templates import fleet_provisioning_template
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use

# IoT waits at most 5 s for the hook, cold start included; the function must answer well inside that.
# This is only the backstop: the handler keeps its own, tighter budget (see its docstring).
HOOK_TIMEOUT = Duration.seconds(4)
HOOK_RESERVED_CONCURRENCY = 20
HOOK_ALIAS = "live"


class FleetProvisioning(Construct):
    """The claim policy, the fleet-provisioning template and its pre-provisioning hook.

    Cold starts and IoT's 5 seconds. IoT fails the request unless the hook returns within 5 s
    ("Pre-provisioning hooks", AWS IoT developer guide), and an on-demand cold start spends part
    of that in init. With `provisioned_concurrency` > 0 the hook runs as an alias ("live") of a
    published version with that many provisioned execution environments, whose init (boto3 and
    the clients, built at import) runs at allocation, ahead of any request ("Managing Lambda
    provisioned concurrency", Lambda developer guide); the template's hook TargetArn and IoT's
    invoke permission name the alias, so IoT invokes exactly what is kept warm (a permission on
    an alias covers only the alias ARN: "Using Lambda aliases in event sources and permissions
    policies"). Whether IoT accepts a qualified (alias) ARN as TargetArn is not stated by the
    AWS::IoT::ProvisioningTemplate ProvisioningHook or IoT API ProvisioningHook pages ("The ARN
    of the target function"; unverified): if it did not, the deploy would fail visibly. With 0
    (dev) there is no alias and IoT invokes the function itself; the hook's budget then counts
    its own init time and denies, logged, rather than run past the deadline.

    Why not SnapStart: it now supports Python 3.12+ ("Improving startup performance with Lambda
    SnapStart", Lambda developer guide; all commercial Regions except Asia Pacific (New Zealand)
    and (Taipei)), but it still restores a snapshot on every new environment (sub-second "as low
    as", not bounded), cannot be combined with provisioned concurrency, and the same page
    recommends provisioned concurrency where cold-start latency requirements are strict. Warm
    environments are what a hard 5-second deadline needs. Provisioned concurrency counts against
    reserved concurrency, and more cannot be provisioned than is reserved (same Lambda page), so
    the reserve grows with it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        serial_pattern: str,
        registry: DeviceRegistry,
        provisioning_role: iam.IRole,
        tokens_table: dynamodb.ITable,
        audit_table: dynamodb.ITable,
        defaults: PlatformDefaults,
        provisioned_concurrency: int = 0,
    ) -> None:
        super().__init__(scope, construct_id)
        self.template_name = f"{prefix}-field"
        template_arn = f"{iot_arn_prefix()}:provisioningtemplate/{self.template_name}"

        self.claim_policy = iot.CfnPolicy(
            self,
            "ClaimPolicy",
            policy_name=f"{prefix}-claim",
            policy_document=claim_policy_document(iot_arn_prefix(), self.template_name),
        )

        self.hook = PythonFunction(
            self,
            "PreProvisioningHook",
            handler="identity.provisioning_hook.handler.lambda_handler",
            description="Allows fleet provisioning only with an unused one-time token for the serial",
            service="provisioning-hook",
            environment={
                "TOKENS_TABLE": tokens_table.table_name,
                "AUDIT_TABLE": audit_table.table_name,
                "SERIAL_PATTERN": serial_pattern,
            },
            defaults=defaults,
            reserved_concurrency=max(HOOK_RESERVED_CONCURRENCY, provisioned_concurrency),
            timeout=HOOK_TIMEOUT,
            synchronous_reason="IoT invokes the hook synchronously and waits for its answer; a "
                               "failed call denies provisioning and the device retries, so there is "
                               "no asynchronous event to dead-letter.",
        ).function
        # Consume a token: one conditional UpdateItem (a refusal returns the old item for the log).
        self.hook.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:UpdateItem"], resources=[tokens_table.table_arn]))
        self.hook.add_to_role_policy(iam.PolicyStatement(
            actions=["dynamodb:PutItem"], resources=[audit_table.table_arn]))
        allow_key_use(self.hook, tokens_table.encryption_key)
        # Is the serial's thing already bound to another certificate? Serials arrive at run time.
        self.hook.add_to_role_policy(iam.PolicyStatement(
            actions=["iot:ListThingPrincipals"],
            resources=[f"{iot_arn_prefix()}:thing/*"],
        ))
        # A retried RegisterThing: is the device's certificate still ACTIVE (not contained)?
        self.hook.add_to_role_policy(iam.PolicyStatement(
            actions=["iot:DescribeCertificate"],
            resources=[f"{iot_arn_prefix()}:cert/*"],
        ))
        Validations.of(self.hook.role).acknowledge(Acknowledgment(
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*]",
            reason="The hook reads (ListThingPrincipals) the thing named by the serial "
                   "in the request, which is only known at run time; it has no write access to things.",
        ), Acknowledgment(
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:cert/*]",
            reason="On a retried registration the hook reads (DescribeCertificate) the status of the "
                   "certificate in the request, known only at run time; it cannot change certificates.",
        ))
        # What IoT invokes: the warm alias, or the function itself when nothing is provisioned.
        self.hook_target: lambda_.IFunction = lambda_.Alias(
            self, "PreProvisioningHookLive",
            alias_name=HOOK_ALIAS,
            version=self.hook.current_version,
            provisioned_concurrent_executions=provisioned_concurrency,
            description="What IoT invokes: the published hook, with provisioned concurrency",
        ) if provisioned_concurrency > 0 else self.hook
        self.hook_target.add_permission(
            "InvokedByIotFleetProvisioning",
            principal=iam.ServicePrincipal("iot.amazonaws.com"),
            source_arn=template_arn,
            source_account=Aws.ACCOUNT_ID,
        )

        self.template = iot.CfnProvisioningTemplate(
            self,
            "Template",
            template_name=self.template_name,
            description="Field association of a Fleetwarden device (claim certificate + one-time token)",
            enabled=True,
            template_type="FLEET_PROVISIONING",
            provisioning_role_arn=provisioning_role.role_arn,
            template_body=fleet_provisioning_template(
                thing_type=registry.thing_type.thing_type_name,
                fleet_group=registry.fleet_group.thing_group_name,
                device_policy=registry.device_policy.policy_name,
            ),
            pre_provisioning_hook=iot.CfnProvisioningTemplate.ProvisioningHookProperty(
                target_arn=self.hook_target.function_arn, payload_version="2020-04-01"
            ),
        )
        self.template.node.add_dependency(self.hook_target)  # with its invoke permission
