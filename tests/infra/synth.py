"""Synthesise the real app in-process, exactly as app.py does, for template assertions."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aws_cdk as cdk
from aws_cdk.assertions import Template

from stacks.config import load_config
from stacks.fleet_app import FleetStacks, build_fleet

ROOT = Path(__file__).resolve().parents[2]


def cdk_context() -> dict[str, Any]:
    return json.loads((ROOT / "cdk.json").read_text())["context"]


def stage_names() -> list[str]:
    return list(cdk_context()["fleetwarden"]["stages"])


@dataclass
class Synthesised:
    stage: str
    stacks: FleetStacks
    outdir: Path

    def template(self, stack: cdk.Stack) -> Template:
        return Template.from_json(self.template_json(stack))

    def template_json(self, stack: cdk.Stack) -> dict:
        return json.loads((self.outdir / f"{stack.artifact_id}.template.json").read_text())

    def templates(self) -> dict[str, dict]:
        return {s.stack_name: self.template_json(s) for s in self.stacks.all()}


def synthesise(
    stage: str,
    outdir: Path,
    overrides: dict[str, Any] | None = None,
    amend: Callable[[FleetStacks], None] | None = None,
) -> Synthesised:
    """Synthesise one stage with cdk.json's context, optionally overriding stage settings
    or amending the stacks before synthesis."""
    context = copy.deepcopy(cdk_context())
    context["stage"] = stage
    if overrides:
        context["fleetwarden"]["stages"][stage].update(overrides)
    app = cdk.App(context=context, outdir=str(outdir))
    stacks = build_fleet(app, load_config(context))
    if amend:
        amend(stacks)
    app.synth()  # raises if any security check finds an unacknowledged violation
    return Synthesised(stage=stage, stacks=stacks, outdir=outdir)


# --- reading synthesised templates -----------------------------------------------------------

def resources(template_json: dict, cfn_type: str) -> dict[str, dict]:
    """The template's resources of one type, by logical id."""
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == cfn_type}


def actions_of(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def role_actions(template_json: dict, role_prefix: str) -> set[str]:
    """Every action granted to the roles whose logical id starts with `role_prefix`."""
    found = set()
    for policy in resources(template_json, "AWS::IAM::Policy").values():
        if any(r["Ref"].startswith(role_prefix) for r in policy["Properties"]["Roles"]):
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                found |= set(actions_of(statement))
    return found


def topic_rules(template_json: dict) -> dict[str, dict]:
    """Each IoT topic rule's payload, by rule name."""
    return {r["Properties"]["RuleName"]: r["Properties"]["TopicRulePayload"]
            for r in resources(template_json, "AWS::IoT::TopicRule").values()}
