import pytest

from tests.infra.synth import Synthesised, stage_names, synthesise


@pytest.fixture(scope="session")
def synthesised(tmp_path_factory) -> dict[str, Synthesised]:
    """Every stage in cdk.json, synthesised once per test session with the cdk-nag gate on."""
    return {stage: synthesise(stage, tmp_path_factory.mktemp(f"cdk-{stage}")) for stage in stage_names()}


@pytest.fixture(scope="session")
def dev(synthesised) -> Synthesised:
    return synthesised["dev"]


@pytest.fixture(scope="session")
def prod(synthesised) -> Synthesised:
    return synthesised["prod"]
