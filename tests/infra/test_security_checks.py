"""cdk-nag (AwsSolutions, HIPAA Security, NIST 800-53 R5) gates synthesis; cfn-lint is clean."""

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from stacks.fleet_app import add_security_checks
from tests.infra.synth import ROOT, synthesise

CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
PACKS = {"AwsSolutions", "HIPAA.Security", "NIST.800.53.R5"}


def test_every_stage_synthesises_with_zero_unacknowledged_findings(synthesised):
    # The fixture's app.synth() raises on any finding, so reaching here means a clean gate.
    for s in synthesised.values():
        report = json.loads((s.outdir / "validation-report.json").read_text())
        assert report["pluginReports"] == [], s.stage


def _failing_rules(outdir, construct_path):
    report = json.loads((outdir / "validation-report.json").read_text())
    assert {p["pluginName"] for p in report["pluginReports"]} == PACKS
    return {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]
            if any(c["constructPath"] == construct_path for c in v["violatingConstructs"])}


def test_the_real_app_gate_stops_a_seeded_violation(tmp_path):
    # Same build_fleet as app.py: a non-compliant resource slipped into a stack must fail synth.
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        synthesise("dev", tmp_path, amend=lambda stacks: s3.Bucket(stacks.audit, "Seeded"))
    assert "AwsSolutions-S10" in _failing_rules(tmp_path, "Fleetwarden-dev-Audit/Seeded/Resource")


def test_gate_reports_a_noncompliant_bucket(tmp_path):
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Throwaway")
    s3.Bucket(stack, "PlainBucket")  # no versioning, no TLS-only policy, no logging, no KMS
    add_security_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    failing = _failing_rules(tmp_path, "Throwaway/PlainBucket/Resource")
    assert {"AwsSolutions-S1", "AwsSolutions-S10", "HIPAA.Security-S3BucketVersioningEnabled",
            "NIST.800.53.R5-S3DefaultEncryptionKMS"} <= failing


def _acknowledgements(construct):
    """(path, rule, reason) for every acknowledgement under `construct`."""
    found = []
    for node in construct.node.find_all():
        for entry in node.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                # one entry per acknowledgement: {"Annotation::<rule id>": reason}. CDK's own
                # constructs acknowledge some of its template validations ("CloudFormation-
                # Validate::..."); those are the library's, not ours.
                for key, reason in entry.data.items():
                    source, rule = key.split("::", 1)
                    if source != "CloudFormation-Validate":
                        found.append((node.node.path, rule, reason))
    return found


def test_every_acknowledgement_sits_on_a_resource_with_a_specific_reason(synthesised):
    for s in synthesised.values():
        acks = [a for stack in s.stacks.all() for a in _acknowledgements(stack)]
        assert acks, "expected the documented acknowledgements"
        stack_paths = {stack.node.path for stack in s.stacks.all()}
        for path, rule, reason in acks:
            assert path not in stack_paths, f"{rule} acknowledged on a whole stack ({path})"
            assert len(reason) >= 40, f"{path}: reason for {rule} is too thin: {reason!r}"
            assert rule.startswith(tuple(PACKS)), rule


def test_cfn_lint_is_clean_on_every_synthesised_template(synthesised):
    templates = [str(s.outdir / f"{stack.artifact_id}.template.json")
                 for s in synthesised.values() for stack in s.stacks.all()]
    # The repository's .cfnlintrc.yaml documents each ignored rule and why.
    result = subprocess.run(
        [CFN_LINT, "--config-file", str(ROOT / ".cfnlintrc.yaml"), "--", *templates],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_would_catch_a_broken_template(tmp_path):
    broken = tmp_path / "broken.template.json"
    broken.write_text(json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic",
                                                          "Properties": {"NoSuchProperty": 1}}}}))
    result = subprocess.run([CFN_LINT, "--", str(broken)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "NoSuchProperty" in result.stdout
