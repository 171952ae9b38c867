"""Field association: a claim certificate may only ask to provision; the pre-provisioning
hook allows it only with a one-time token an admin obtained for exactly that serial."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Aws, Duration, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from constructs import Construct

from stacks.identity.device_registry import DeviceRegistry, iot_arn_prefix
from stacks.identity.iot_policies import claim_policy_document
from stacks.identity.provisioning_templates import fleet_provisioning_template
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use

# IoT waits at most 5 s for the hook; the function must answer well inside that.
HOOK_TIMEOUT = Duration.seconds(4)


class FleetProvisioning(Construct):
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
            reserved_concurrency=20,
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
        Validations.of(self.hook.role).acknowledge(Acknowledgment(
            id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*]",
            reason="The hook reads (ListThingPrincipals) the thing named by the serial "
                   "in the request, which is only known at run time; it has no write access to things.",
        ))
        self.hook.add_permission(
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
                target_arn=self.hook.function_arn, payload_version="2020-04-01"
            ),
        )
        self.template.node.add_dependency(self.hook)
