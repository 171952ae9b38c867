"""Lambda layers Fleetwarden builds itself, without Docker: manylinux wheels from the package index,
installed for the Lambda runtime's platform with pip (`--platform --only-binary=:all: --target`), into
`build/layers/<name>/python` (Lambda adds a layer's `python/` directory to the import path: "Packaging
your layer content", https://docs.aws.amazon.com/lambda/latest/dg/python-layers.html).

Built once per machine and pin: the first synthesis (or `make layers`) downloads the wheels, every
later one reads the built directory (synthesis is then offline). The pin is requirements.txt's, the
same version the tests run, so what is tested is what is deployed.

`cryptography` is the one layer: the certificate-rotation function parses and checks device CSRs with
it. It is not in the Lambda Python runtime, and whether the AWS-managed Powertools layer carries it
(through aws-encryption-sdk) is not documented for the layer version in use (unverified): it is not
relied on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "layers"
# The Lambda runtime (stacks.platform.function.RUNTIME: Python 3.14, x86_64) as pip names it.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PYTHON_VERSION = "3.14"


class LayerBuildError(RuntimeError):
    """The layer could not be built (no package index reachable on the first synthesis)."""


def pinned(package: str) -> str:
    """`package==version` as requirements.txt pins it."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"^\s*({re.escape(package)}==[^\s#;]+)", line)
        if match:
            return match.group(1)
    raise LayerBuildError(f"{package} is not pinned in requirements.txt")


def build_layer(name: str, requirement: str) -> Path:
    """The layer directory for `requirement`, built if missing or built for another pin."""
    target = BUILD / name
    stamp = target / ".requirement"
    if stamp.is_file() and stamp.read_text() == requirement:
        return target
    staging = BUILD / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
               "--implementation", "cp", "--python-version", PYTHON_VERSION, "--only-binary=:all:",
               "--target", str(staging / "python"), requirement]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise LayerBuildError(f"could not build the {name} layer ({requirement}) with pip: "
                              f"{result.stderr.strip().splitlines()[-1:] or result.returncode}; "
                              "the first synthesis needs the package index (then `make layers` is enough)")
    (staging / ".requirement").write_text(requirement)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def cryptography_layer(scope: Construct, construct_id: str) -> lambda_.LayerVersion:
    requirement = pinned("cryptography")
    return lambda_.LayerVersion(
        scope, construct_id,
        code=lambda_.Code.from_asset(str(build_layer("cryptography", requirement)), exclude=[".requirement"]),
        compatible_runtimes=[lambda_.Runtime.PYTHON_3_14],
        compatible_architectures=[lambda_.Architecture.X86_64],
        description=f"{requirement} (manylinux wheels) for CSR checks",
    )


if __name__ == "__main__":  # `make layers`
    print(build_layer("cryptography", pinned("cryptography")))
