"""The fault sweep (tests/faults/README.md): every AWS call of every function, under every fault kind."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import SCENARIOS
from tests.faults.sweep import DEFECTS, sweep


@pytest.mark.parametrize("build", SCENARIOS, ids=lambda build: build.__name__.removesuffix("_scenario"))
def test_no_fault_loses_doubles_strands_or_lies(build):
    scenario = build()
    clean, rows = sweep(scenario)
    print(f"\n{scenario.name}: {len(clean.calls)} calls {clean.calls}")
    for row in rows:
        print(f"  {row.call:>2} {row.name:<45} {row.kind:<10} {row.outcome:<17} {row.detail}")
    defects = [row for row in rows if row.outcome in DEFECTS]
    assert not defects, "\n".join(f"{r.name} {r.kind}: {r.outcome} ({r.detail})" for r in defects)
