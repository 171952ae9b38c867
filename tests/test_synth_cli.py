"""`make synth`'s path: the pinned CDK CLI runs app.py offline; a finding fails it readably."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.infra.synth import ROOT, cdk_context

CDK = ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.skipif(not CDK.exists(), reason="CDK CLI not installed: run `make test`, which installs it")
def test_pinned_cli_synthesises_every_stack_offline(tmp_path):
    result = subprocess.run(
        [str(CDK), "synth", "--quiet", "-c", "stage=prod", "-o", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CDK_DISABLE_VERSION_CHECK": "true"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    templates = sorted(p.name for p in (tmp_path / "out").glob("*.template.json"))
    assert templates == [f"Fleetwarden-prod-{part}.template.json" for part in ("Audit", "Commands", "Defense", "Identity", "Ingest")]


def test_app_fails_with_a_readable_message_on_a_finding(tmp_path):
    # app.main() exactly, with one non-compliant bucket slipped into the audit stack.
    script = textwrap.dedent("""
        import sys
        from aws_cdk import aws_s3 as s3
        import app, stacks.fleet_app as fleet_app
        real = fleet_app.build_fleet
        def seeded(cdk_app, config):
            stacks = real(cdk_app, config)
            s3.Bucket(stacks.audit, "Seeded")
            return stacks
        app.build_fleet = seeded
        sys.exit(app.main())
    """)
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(cdk_context()), "CDK_OUTDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "Fleetwarden-dev-Audit/Seeded/Resource" in output
    assert "AwsSolutions-S10" in output
    assert "fleetwarden: security checks failed" in result.stderr
