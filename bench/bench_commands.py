"""Wall time of the two quick-start commands, warm (installs already done).

Usage: make bench   (or .venv/bin/python bench/bench_commands.py [--runs N])
Prints one line per command with the median, min and max; record them in bench/README.md.
Targets: `make synth` < 30 s, `make test` < 180 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"synth": 30.0, "test": 180.0}


def time_command(target: str) -> float:
    start = time.perf_counter()
    subprocess.run(["make", target], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    failed = False
    for target, limit in TARGETS.items():
        time_command(target)  # warm-up: installs and caches
        samples = [time_command(target) for _ in range(args.runs)]
        median = statistics.median(samples)
        verdict = "ok" if median < limit else "OVER TARGET"
        failed |= median >= limit
        print(f"make {target}: median {median:.1f} s (min {min(samples):.1f}, max {max(samples):.1f}, "
              f"{args.runs} runs) target < {limit:.0f} s: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
