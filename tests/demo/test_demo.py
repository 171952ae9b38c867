"""`make demo` in CI: the whole lifecycle, in its own process, every step holding (well under a minute)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT
from tests.device.conftest import needs_mosquitto

def test_the_demo_runs_every_step_and_exits_zero():
    needs_mosquitto()
    result = subprocess.run(
        [sys.executable, "-m", "tests.demo"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout
    assert "13/13 steps held;" in result.stdout
