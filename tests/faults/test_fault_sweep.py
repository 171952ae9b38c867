"""The fault sweep (tests/faults/README.md): every AWS call of every function, under every fault
kind, replayed as its event source retries it. Fails on any lost, double, stranded or wrong answer;
`pytest -s` prints each function's outcomes (bench/bench_faults.py prints the whole table)."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import SCENARIOS
from tests.faults.sweep import DEFECTS, sweep, table


@pytest.mark.parametrize("build", SCENARIOS, ids=lambda build: build.__name__.removesuffix("_scenario"))
def test_no_fault_loses_doubles_strands_or_lies(build):
    scenario = build()
    clean, rows = sweep(scenario)
    print("\n" + table([(scenario, clean, rows)]))
    defects = [row for row in rows if row.outcome in DEFECTS]
    assert not defects, "\n".join(f"{r.call} {r.name} {r.kind}: {r.outcome} ({r.detail})" for r in defects)
