"""Cold-start import time of every Lambda handler module (lambdas/<capability>/<function>/handler.py).

Usage: .venv/bin/python bench/bench_imports.py [--runs 7] [--target-ms 150] [--env KEY=VALUE ...]
For each handler, runs `python -X importtime -c "import <package>.handler"` in a fresh interpreter
(cwd and PYTHONPATH = lambdas/, as on Lambda) once to warm the disk cache, then --runs times, and
reports the median cumulative import time of the handler module: everything it imports that the
interpreter had not imported at startup. PYTHONDONTWRITEBYTECODE=1: the handler's own modules are
compiled from source each time, as from a Lambda asset without .pyc (installed packages use their
.pyc). Handlers get dummy values for the environment they read at import (--env adds more).
Prints a table; exits 1 if any handler is over the target or fails to import.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = ROOT / "lambdas"
TARGET_MS = 150.0
# What the stacks set on the functions, with dummy values: enough for any handler to import.
DUMMY_ENV = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
    "TOKENS_TABLE": "bench-tokens",
    "AUDIT_TABLE": "bench-audit",
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "Fleetwarden",
    "MAX_PAYLOAD_BYTES": "8192",
}
LINE = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\| (\s*)(\S+)\s*$")


def handlers() -> list[str]:
    """Handler modules as Lambda names them (`alerts.processor.handler`)."""
    return sorted(".".join(path.relative_to(LAMBDAS).with_suffix("").parts)
                  for path in LAMBDAS.glob("*/*/handler.py"))


def import_ms(module: str, env: dict[str, str]) -> tuple[float, list[tuple[float, str]]]:
    """Cumulative import time of `module` (ms) in a new interpreter, and its direct imports
    (ms, name), slowest first; RuntimeError if it fails."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=LAMBDAS,
                          env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(tail[0])
    children: list[tuple[float, str]] = []  # the output lists a module after its imports
    for line in proc.stderr.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        depth, name, cumulative_ms = len(match.group(3)) // 2, match.group(4), int(match.group(2)) / 1000
        if depth == 0 and name == module:
            return cumulative_ms, sorted(children, reverse=True)
        if depth == 0:
            children = []
        elif depth == 1:
            children.append((cumulative_ms, name))
    raise RuntimeError(f"{module} not in the -X importtime output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--target-ms", type=float, default=TARGET_MS)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="more environment for the handlers (repeatable)")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "POWERTOOLS_"))}
    env.update(DUMMY_ENV)
    env.update(item.split("=", 1) for item in args.env)
    env.update({"PYTHONPATH": str(LAMBDAS), "PYTHONDONTWRITEBYTECODE": "1"})

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} "
          f"({sys.executable}), {time.strftime('%Y-%m-%d')}; median of {args.runs} runs after a warm-up")
    target = f"<= {args.target_ms:.0f} ms"
    print(f"{'handler module':<40} {'median ms':>9} {'min':>7} {'max':>7}  {target:<11}  "
          "slowest direct imports (ms)")
    failed = False
    for module in handlers():
        try:
            import_ms(module, env)  # warm-up: disk cache
            runs = [import_ms(module, env) for _ in range(args.runs)]
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            failed = True
            print(f"{module:<40} {'FAILED':>9}  {exc}")
            continue
        samples = [total for total, _ in runs]
        median = statistics.median(samples)
        over = median > args.target_ms
        failed |= over
        # The slowest direct imports of the median run: where to look when it is over.
        _, children = sorted(runs)[len(runs) // 2]
        slowest = ", ".join(f"{name} {ms:.0f}" for ms, name in children[:3])
        print(f"{module:<40} {median:>9.1f} {min(samples):>7.1f} {max(samples):>7.1f}  "
              f"{'OVER TARGET' if over else 'ok':<11}  {slowest}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
