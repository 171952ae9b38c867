"""The fault sweep's outcome table (tests/faults), as recorded in bench/README.md.

    .venv/bin/python bench/bench_faults.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "lambdas")]

import tests.conftest  # noqa: E402,F401 - fake credentials, region, no network
from tests.faults.scenarios import SCENARIOS  # noqa: E402
from tests.faults.sweep import DEFECTS, sweep, table  # noqa: E402


def main() -> int:
    started = time.perf_counter()
    results = []
    for build in SCENARIOS:
        scenario = build()
        with contextlib.redirect_stderr(io.StringIO()):
            clean, rows = sweep(scenario)
        results.append((scenario, clean, rows))
    print(table(results))
    print(f"\nswept in {time.perf_counter() - started:.1f} s")
    return 1 if any(row.outcome in DEFECTS for _, _, rows in results for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
