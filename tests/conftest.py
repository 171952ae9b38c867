"""Shared test setup: quiet jsii, no AWS credentials or network, the project on sys.path."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# On AWS Lambda `lambdas/` is the code root (handlers import `shared.*`); so it is here too.
sys.path.insert(1, str(ROOT / "lambdas"))

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# Tests never reach AWS: any call not mocked by moto fails on these fake credentials.
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
}.items():
    os.environ[key] = value


# Synthesised stages, shared by every test directory (built lazily, once per session).
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthesised(tmp_path_factory):
    """Every stage in cdk.json, synthesised once per test session with the cdk-nag gate on."""
    from tests.infra.synth import stage_names, synthesise

    return {stage: synthesise(stage, tmp_path_factory.mktemp(f"cdk-{stage}")) for stage in stage_names()}


@pytest.fixture(scope="session")
def dev(synthesised):
    return synthesised["dev"]


@pytest.fixture(scope="session")
def prod(synthesised):
    return synthesised["prod"]


@pytest.fixture
def clock():
    from tests.helpers import Clock

    return Clock()


@pytest.fixture
def context():
    from tests.helpers import LambdaContext

    return LambdaContext()
