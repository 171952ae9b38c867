"""`make demo` in CI: the whole lifecycle, in its own process, every step holding (well under a minute)."""

from __future__ import annotations

import subprocess
import sys

from fleetwarden_contracts import topics

from device.local import acl
from tests.conftest import ROOT
from tests.device.conftest import needs_mosquitto

# Rotation ends with the device's confirmation, which the device policy allows once the Commands stack's
# rotation lands; until then the demo shows everything before it and marks the step TODO (never ok).
CONFIRM_ALLOWED = f"pattern write {topics.cert_rotation_confirm_topic('%u')}" in acl.device_acl(
    topics.rule_name("demo", "telemetry")
)


def test_the_demo_runs_every_step_and_exits_zero():
    needs_mosquitto()
    result = subprocess.run(
        [sys.executable, "-m", "tests.demo"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout
    if CONFIRM_ALLOWED:
        assert "13/13 steps held;" in result.stdout
    else:
        assert "12/13 steps held, 1 waiting on work outside this branch (TODO)" in result.stdout
        assert "TODO new key and certificate in use; the confirmation is dropped" in result.stdout
