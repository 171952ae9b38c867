"""IdentityStack: who a device is, what it may do, and how it joins the fleet."""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.identity.device_endpoint import DeviceEndpoint
from stacks.identity.device_registry import DeviceRegistry
from stacks.identity.factory_ca import FactoryCa
from stacks.identity.fleet_index import fleet_indexing
from stacks.identity.fleet_provisioning import FleetProvisioning
from stacks.identity.iot_policies import only_through_domain
from stacks.identity.provisioning_role import ProvisioningRole
from stacks.identity.token_api import OperatorDirectory, ProvisioningTokenApi
from lambdas.shared.topics import rule_name
from stacks.platform.key import customer_key
from stacks.platform.table import secure_table


class IdentityStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(audit)
        # Named here because the device policy publishes to it and the ingest stack creates it.
        self.telemetry_rule_name = rule_name(stage.name, "telemetry")
        defaults = audit.defaults

        self.endpoint = DeviceEndpoint(
            self, "DeviceEndpoint",
            name=f"{stage.prefix}-devices", tls_security_policy=stage.tls_security_policy,
            defaults=defaults, domain_name=stage.device_domain_name,
            certificate_arn=stage.device_domain_certificate_arn,
            validation_certificate_arn=stage.device_domain_validation_certificate_arn,
        )
        self.registry = DeviceRegistry(
            self, "Registry",
            prefix=stage.prefix, telemetry_rule=self.telemetry_rule_name, defaults=defaults,
        )

        self.data_key = customer_key(
            self, "IdentityDataKey",
            alias=f"alias/{stage.prefix}-identity",
            description=f"Fleetwarden {stage.name}: provisioning tokens and the audit table",
        )
        self.audit_table = secure_table(
            self, "AuditTable",
            table_name=f"{stage.prefix}-audit",
            partition_key="event_id",
            key=self.data_key,
            deletion_protection=stage.termination_protection,
            backup_reason="Point-in-time recovery keeps 35 days of continuous backups of the audit "
                          "table; copies beyond that belong to the organisation's AWS Backup policy.",
        )
        self.audit_table.add_global_secondary_index(
            index_name="by_target",
            partition_key=dynamodb.Attribute(name="target", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="at", type=dynamodb.AttributeType.STRING),
        )
        # Only hashes of tokens are stored; expired rows are removed by TTL.
        self.tokens_table = secure_table(
            self, "ProvisioningTokens",
            table_name=f"{stage.prefix}-provisioning-tokens",
            partition_key="token_hash",
            key=self.data_key,
            time_to_live_attribute="expires_at",
            removal_policy=RemovalPolicy.DESTROY,
            backup_reason="Tokens live minutes and are useless once expired; point-in-time "
                          "recovery covers accidental deletion.",
        )

        self.provisioning_role = ProvisioningRole(self, "ProvisioningRole", registry=self.registry).role
        self.factory_ca = FactoryCa(
            self, "FactoryCa",
            ca_certificate_pem=stage.ca_certificate_pem,
            verification_certificate_pem=stage.ca_verification_certificate_pem,
            registry=self.registry, provisioning_role=self.provisioning_role,
        ) if stage.ca_certificate_pem else None

        self.provisioning = FleetProvisioning(
            self, "FleetProvisioning",
            prefix=stage.prefix, serial_pattern=stage.serial_pattern,
            provisioned_concurrency=stage.hook_provisioned_concurrency,
            registry=self.registry, provisioning_role=self.provisioning_role,
            tokens_table=self.tokens_table, audit_table=self.audit_table, defaults=defaults,
        )
        # Device and claim certificates get in only through the Fleetwarden endpoint.
        for policy in (self.registry.device_policy, self.provisioning.claim_policy):
            policy.policy_document = only_through_domain(policy.policy_document, self.endpoint.host_name)

        self.operators = OperatorDirectory(
            self, "Operators", prefix=stage.prefix, deletion_protection=stage.termination_protection)
        self.token_api = ProvisioningTokenApi(
            self, "ProvisioningTokenApi",
            prefix=stage.prefix, serial_pattern=stage.serial_pattern,
            token_ttl_seconds=stage.provisioning_token_ttl_minutes * 60,
            sets_account_logging_role=stage.owns_account_singletons,
            user_pool=self.operators.user_pool,
            tokens_table=self.tokens_table, audit_table=self.audit_table, defaults=defaults,
        )

        # Account-wide, like IoT logging: only the stage that owns the account singletons sets it.
        if stage.fleet_indexing:
            fleet_indexing(self, prefix=stage.prefix, defaults=defaults)

        # What the other stacks use.
        self.user_pool = self.operators.user_pool
        self.device_policy_name = self.registry.device_policy.policy_name
        self.fleet_group_arn = self.registry.fleet_group.attr_arn
        self.quarantine_group_name = self.registry.quarantine_group.thing_group_name
        self.quarantine_group_arn = self.registry.quarantine_group.attr_arn
        self.functions = [self.provisioning.hook, self.token_api.function]

        CfnOutput(self, "DevicePolicyName", value=self.device_policy_name)
        CfnOutput(self, "FleetGroupName", value=self.registry.fleet_group.thing_group_name)
        CfnOutput(self, "QuarantineGroupName", value=self.quarantine_group_name)
        self.claim_policy_name = self.provisioning.claim_policy.policy_name
        CfnOutput(self, "ClaimPolicyName", value=self.claim_policy_name)
        CfnOutput(self, "ProvisioningTemplateName", value=self.provisioning.template_name)
        CfnOutput(self, "AuditTableName", value=self.audit_table.table_name)
