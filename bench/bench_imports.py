"""Cold-start import time of every Lambda handler module (lambdas/<capability>/<function>/handler.py).

Usage: .venv/bin/python bench/bench_imports.py [--runs 7] [--slack-ms 30] [--lambdas DIR] [--env KEY=VALUE ...]
For each handler, runs `python -X importtime -c "import <package>.handler"` in a fresh interpreter
(cwd and PYTHONPATH = lambdas/, as on Lambda) once to warm the disk cache, then --runs times, and
reports the median cumulative import time of the handler module: everything it imports that the
interpreter had not imported at startup. PYTHONDONTWRITEBYTECODE=1: the handler's own modules are
compiled from source each time, as from a Lambda asset without .pyc (installed packages use their
.pyc). Handlers get dummy values for the environment they read at import (--env adds more).

The target is relative, measured in the same run: the import of what any handler needs anyway
(`boto3` and Powertools `Logger`/`Metrics`, the reference row) plus --slack-ms (30 ms). A handler
that does not import boto3 at all comes in well under it.
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
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = ROOT / "lambdas"
SLACK_MS = 30.0
REFERENCE = "bench_reference"  # a module holding exactly the imports every handler may spend
REFERENCE_SOURCE = "import boto3\nfrom aws_lambda_powertools import Logger, Metrics\n"
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


def handlers(lambdas: Path) -> list[str]:
    """Handler modules as Lambda names them (`alerts.processor.handler`)."""
    return sorted(".".join(path.relative_to(lambdas).with_suffix("").parts)
                  for path in lambdas.glob("*/*/handler.py"))


def import_ms(module: str, env: dict[str, str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Cumulative import time of `module` (ms) in a new interpreter, and its direct imports
    (ms, name), slowest first; RuntimeError if it fails."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=cwd,
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


def measure(module: str, env: dict[str, str], cwd: Path, runs: int) -> tuple[list[float], list[tuple[float, str]]]:
    """Samples (ms) of `module`'s cumulative import and the slowest direct imports of the median run."""
    import_ms(module, env, cwd)  # warm-up: disk cache
    results = [import_ms(module, env, cwd) for _ in range(runs)]
    _, children = sorted(results)[len(results) // 2]
    return [total for total, _ in results], children


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--slack-ms", type=float, default=SLACK_MS,
                        help="allowed over the reference import (boto3 + Powertools Logger/Metrics)")
    parser.add_argument("--lambdas", type=Path, default=LAMBDAS,
                        help="the Lambda code root to measure (e.g. a worktree of an older revision)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="more environment for the handlers (repeatable)")
    args = parser.parse_args()
    lambdas = args.lambdas.resolve()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "POWERTOOLS_"))}
    env.update(DUMMY_ENV)
    env.update(item.split("=", 1) for item in args.env)
    env.update({"PYTHONDONTWRITEBYTECODE": "1"})

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} "
          f"({sys.executable}), {time.strftime('%Y-%m-%d')}; median of {args.runs} runs after a warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{REFERENCE}.py").write_text(REFERENCE_SOURCE)
        reference, _ = measure(REFERENCE, {**env, "PYTHONPATH": tmp}, Path(tmp), args.runs)
    target_ms = statistics.median(reference) + args.slack_ms
    env["PYTHONPATH"] = str(lambdas)
    target = f"<= {target_ms:.0f} ms"
    print(f"{'handler module':<40} {'median ms':>9} {'min':>7} {'max':>7}  {target:<11}  "
          "slowest direct imports (ms)")
    print(f"{'(reference: boto3 + Logger, Metrics)':<40} {statistics.median(reference):>9.1f} "
          f"{min(reference):>7.1f} {max(reference):>7.1f}  {'+ ' + str(int(args.slack_ms)) + ' ms':<11}")
    failed = False
    for module in handlers(lambdas):
        try:
            samples, children = measure(module, env, lambdas, args.runs)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            failed = True
            print(f"{module:<40} {'FAILED':>9}  {exc}")
            continue
        median = statistics.median(samples)
        over = median > target_ms
        failed |= over
        # The slowest direct imports of the median run: where to look when it is over.
        slowest = ", ".join(f"{name} {ms:.0f}" for ms, name in children[:3])
        print(f"{module:<40} {median:>9.1f} {min(samples):>7.1f} {max(samples):>7.1f}  "
              f"{'OVER TARGET' if over else 'ok':<11}  {slowest}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
