"""IdentityStack: who a device is, what it may do, and how it joins the fleet."""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from lambdas.shared import topics
from stacks.audit_stack import AuditStack
from stacks.config import StageConfig
from stacks.identity.device_endpoint import DeviceEndpoint
from stacks.identity.device_registry import DeviceRegistry
from stacks.identity.factory_ca import FactoryCa
from stacks.identity.fleet_provisioning import FleetProvisioning
from stacks.identity.provisioning_role import ProvisioningRole
from stacks.platform.table import secure_table
from stacks.identity.token_api import OperatorDirectory, ProvisioningTokenApi


class IdentityStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, stage: StageConfig, audit: AuditStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.add_stack_dependency(audit)
        self.telemetry_rule_name = topics.telemetry_rule_name(stage.name)
        log_key = audit.key

        self.endpoint = DeviceEndpoint(
            self, "DeviceEndpoint",
            name=f"{stage.prefix}-devices", tls_security_policy=stage.tls_security_policy,
        )
        self.registry = DeviceRegistry(
            self, "Registry",
            prefix=stage.prefix, telemetry_rule=self.telemetry_rule_name,
            log_key=log_key, log_retention_days=stage.log_retention_days,
        )

        self.data_key = kms.Key(
            self, "IdentityDataKey",
            alias=f"alias/{stage.prefix}-identity",
            description=f"Fleetwarden {stage.name}: provisioning tokens and the audit table",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
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
            stage=stage, registry=self.registry, provisioning_role=self.provisioning_role,
            tokens_table=self.tokens_table, audit_table=self.audit_table, log_key=log_key,
        )
        self.operators = OperatorDirectory(self, "Operators", stage=stage)
        self.token_api = ProvisioningTokenApi(
            self, "ProvisioningTokenApi",
            stage=stage, directory=self.operators,
            tokens_table=self.tokens_table, audit_table=self.audit_table, log_key=log_key,
        )

        CfnOutput(self, "DevicePolicyName", value=self.registry.device_policy.policy_name)
        CfnOutput(self, "FleetGroupName", value=self.registry.fleet_group.thing_group_name)
        CfnOutput(self, "QuarantineGroupName", value=self.registry.quarantine_group.thing_group_name)
        CfnOutput(self, "ClaimPolicyName", value=self.provisioning.claim_policy.policy_name)
        CfnOutput(self, "ProvisioningTemplateName", value=self.provisioning.template_name)
        CfnOutput(self, "AuditTableName", value=self.audit_table.table_name)
