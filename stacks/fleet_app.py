"""Composes every Fleetwarden stack for one stage and registers the security checks."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks

from stacks.audit_stack import AuditStack
from stacks.commands_stack import CommandStack
from stacks.config import FleetConfig
from stacks.defense_stack import DefenseStack
from stacks.devices_stack import DevicesStack
from stacks.identity_stack import IdentityStack
from stacks.ingest_stack import IngestStack


@dataclass
class FleetStacks:
    audit: AuditStack
    identity: IdentityStack
    ingest: IngestStack
    defense: DefenseStack
    commands: CommandStack
    devices: DevicesStack | None = None

    def all(self) -> list[cdk.Stack]:
        return [s for s in (self.audit, self.identity, self.ingest, self.commands, self.defense, self.devices)
                if s is not None]


def add_security_checks(app: cdk.App) -> None:
    """cdk-nag rule packs as policy-validation plugins: any unacknowledged finding fails synth."""
    cdk.Validations.of(app).add_plugins(
        AwsSolutionsChecks(app), HIPAASecurityChecks(app), NIST80053R5Checks(app)
    )


def build_fleet(app: cdk.App, config: FleetConfig) -> FleetStacks:
    stage = config.stage
    env = cdk.Environment(account=stage.account, region=stage.region) if (
        stage.account or stage.region) else None
    common = dict(env=env, termination_protection=stage.termination_protection)

    audit = AuditStack(app, f"{stage.stack_prefix}-Audit", stage=stage,
                       description=f"Fleetwarden {stage.name}: audit trail, alarms, IoT logging", **common)
    identity = IdentityStack(app, f"{stage.stack_prefix}-Identity", stage=stage, audit=audit,
                             description=f"Fleetwarden {stage.name}: device identity and endpoint", **common)

    ingest = IngestStack(app, f"{stage.stack_prefix}-Ingest", stage=stage, audit=audit, identity=identity,
                         description=f"Fleetwarden {stage.name}: telemetry and alert pipelines", **common)
    commands = CommandStack(app, f"{stage.stack_prefix}-Commands", stage=stage, audit=audit, identity=identity,
                            description=f"Fleetwarden {stage.name}: signed commands, certificate rotation",
                            **common)
    defense = DefenseStack(app, f"{stage.stack_prefix}-Defense", stage=stage, audit=audit,
                           identity=identity, ingest=ingest, commands=commands,
                           description=f"Fleetwarden {stage.name}: detection, containment, audits",
                           **common)
    devices = DevicesStack(app, f"{stage.stack_prefix}-Devices", devices=stage.declared_devices, identity=identity,
                           defaults=audit.defaults,
                           description=f"Fleetwarden {stage.name}: devices declared in config",
                           **common) if stage.declared_devices else None

    cdk.Tags.of(app).add("project", config.project)
    cdk.Tags.of(app).add("stage", stage.name)
    add_security_checks(app)
    return FleetStacks(audit=audit, identity=identity, ingest=ingest, defense=defense, commands=commands,
                       devices=devices)
