"""Prove a refactor changed no resource: synthesise the app at two revisions and diff the templates.

    python -m tools.template_diff --base REV     # REV's templates against the working tree's

Both revisions are synthesised with the same settings (every stage in cdk.json, plus variants that
switch on the optional parts: factory CA, declared devices, each detection mode, an existing trail, an
ops e-mail), in separate processes, each importing its own `stacks` package. Before comparing, asset
hashes (the code moved, so its zip is new) and Lambda `Handler` strings (the module path moved) are
normalised; the handler moves are listed so a reader can check them. Anything else that differs,
logical ids first, is printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HASH = re.compile(r"[0-9a-f]{64}")

# (variant name, stage, overrides); `{fixtures}` is replaced by the shared fixtures directory.
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("dev", "dev", {}),
    ("prod", "prod", {}),
    ("dev-defender", "dev", {"detect": "defender"}),
    ("dev-builtin", "dev", {"detect": "builtin"}),
    ("dev-options", "dev", {"revocation": "revoke", "dry_run": True, "exempt_group": "lab-benches",
                            "existing_trail_log_group": "aws-controltower/CloudTrailLogs",
                            "ops_email": "oncall@example.com"}),
    ("dev-devices", "dev", {"ca_certificate_file": "{fixtures}/ca/ca.cert.pem",
                            "ca_verification_certificate_file": "{fixtures}/verify.pem",
                            "declared_devices": [{"name": "SN-0001", "csr_file": "{fixtures}/SN-0001.csr.pem"}]}),
]


def _fill(value: Any, fixtures: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{fixtures}", str(fixtures))
    if isinstance(value, list):
        return [_fill(v, fixtures) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, fixtures) for k, v in value.items()}
    return value


def make_fixtures(fixtures: Path) -> None:
    """A CA, its verification certificate and a device CSR, made once and used by both revisions."""
    if (fixtures / "SN-0001.csr.pem").exists():
        return
    import contextlib
    import io

    from tools.fleetctl.cli import main as fleetctl

    for argv in (["ca", "create", "--out-dir", str(fixtures / "ca")],
                 ["ca", "verification-cert", "--ca-dir", str(fixtures / "ca"),
                  "--registration-code", "0123456789abcdef", "--out", str(fixtures / "verify.pem")],
                 ["device", "csr", "--serial", "SN-0001", "--out-dir", str(fixtures)]):
        with contextlib.redirect_stdout(io.StringIO()):
            code = fleetctl(argv)
        if code != 0:
            raise SystemExit(f"template_diff: fleetctl {' '.join(argv)} failed")


def snapshot(root: Path, out: Path, fixtures: Path) -> None:
    """Synthesise every variant with the app at `root` (run in its own process)."""
    sys.path[:0] = [str(root), str(root / "lambdas")]
    os.chdir(root)
    import aws_cdk as cdk
    from stacks.config import load_config
    from stacks.fleet_app import build_fleet

    base = json.loads((root / "cdk.json").read_text())["context"]
    for name, stage, overrides in VARIANTS:
        context = json.loads(json.dumps(base))
        context["stage"] = stage
        context["fleetwarden"]["stages"][stage].update(_fill(overrides, fixtures))
        outdir = out / name
        app = cdk.App(context=context, outdir=str(outdir))
        build_fleet(app, load_config(context))
        app.synth()


def normalise(template: dict) -> tuple[dict, dict[str, str]]:
    handlers = {}
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Lambda::Function" and "Handler" in props:
            handlers[logical_id] = props["Handler"]
            props["Handler"] = "<handler>"
    text = HASH.sub("<hash>", json.dumps(template, sort_keys=True))
    return json.loads(text), handlers


def _walk_diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                out.append(f"  + {path}/{key}")
            elif key not in b:
                out.append(f"  - {path}/{key}")
            else:
                _walk_diff(a[key], b[key], f"{path}/{key}", out)
    elif a != b:
        out.append(f"  ~ {path}: {json.dumps(a)[:150]} -> {json.dumps(b)[:150]}")


def compare(before: Path, after: Path) -> int:
    problems: list[str] = []
    moves: set[tuple[str, str]] = set()
    files = sorted({p.relative_to(before) for p in before.rglob("*.template.json")}
                   | {p.relative_to(after) for p in after.rglob("*.template.json")})
    for rel in files:
        if not (before / rel).exists() or not (after / rel).exists():
            problems.append(f"{rel}: only in {'after' if (after / rel).exists() else 'before'}")
            continue
        a, ha = normalise(json.loads((before / rel).read_text()))
        b, hb = normalise(json.loads((after / rel).read_text()))
        moves |= {(ha[k], hb[k]) for k in ha.keys() & hb.keys()}
        ids_a, ids_b = set(a.get("Resources", {})), set(b.get("Resources", {}))
        lines = [f"  logical id removed: {i}" for i in sorted(ids_a - ids_b)]
        lines += [f"  logical id added: {i}" for i in sorted(ids_b - ids_a)]
        _walk_diff(a, b, "", lines)
        if lines:
            problems.append(f"{rel}:\n" + "\n".join(lines))
    print(f"{len(files)} templates compared")
    for old, new in sorted(moves):
        if old != new:
            print(f"handler moved: {old} -> {new}")
    if problems:
        print("\n".join(problems))
        return 1
    print("identical apart from asset hashes and handler strings")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="git revision to compare the working tree against")
    parser.add_argument("--snapshot", nargs=3, metavar=("ROOT", "OUT", "FIXTURES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.snapshot:
        root, out, fixtures = (Path(p) for p in args.snapshot)
        snapshot(root, out, fixtures)
        return 0
    if not args.base:
        parser.error("--base REV is required")
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
           "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    with tempfile.TemporaryDirectory(prefix="template-diff-") as tmp:
        work = Path(tmp)
        make_fixtures(work / "fixtures")
        subprocess.run(["git", "worktree", "add", "--detach", str(work / "base"), args.base],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            for root, out in ((work / "base", work / "before"), (ROOT, work / "after")):
                subprocess.run([sys.executable, __file__, "--snapshot", str(root), str(out),
                                str(work / "fixtures")], check=True, env=env)
            return compare(work / "before", work / "after")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "base")], cwd=ROOT, check=False)


if __name__ == "__main__":
    sys.exit(main())
