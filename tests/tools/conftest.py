"""Fixtures for fleetctl tests: run the CLI in-process and capture its output."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.fleetctl import settings
from cryptography import x509

from tools.fleetctl.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def assert_one_error_line(self, code: int, *fragments: str) -> str:
        """The CLI contract for failures: exit code, a single `fleetctl: ` line, no traceback."""
        assert self.code == code, (self.code, self.out, self.err)
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("fleetctl: "), self.err
        assert "Traceback" not in self.err
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        return lines[0]


@pytest.fixture
def run(capsys):
    """run("ca", "create", ...) -> Result, calling main() exactly as the console script does."""

    def _run(*argv: str) -> Result:
        capsys.readouterr()  # drop output of earlier calls in the same test
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


@pytest.fixture
def ca_dir(run, tmp_path) -> Path:
    directory = tmp_path / "ca"
    assert run("ca", "create", "--out-dir", directory).code == 0
    return directory


@pytest.fixture
def ca_cert(ca_dir) -> x509.Certificate:
    return x509.load_pem_x509_certificate((ca_dir / "ca.cert.pem").read_bytes())


REGION = "eu-west-1"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Fake credentials, a default region and an empty fleetctl config directory: nothing from the operator's
    own AWS or fleetctl set-up leaks in."""
    monkeypatch.setenv(settings.CONFIG_DIR_ENV, str(tmp_path / "fleetctl-config"))
    monkeypatch.delenv(settings.STAGE_ENV, raising=False)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
