"""Fixtures for fleetctl tests: run the CLI in-process and capture its output."""

from dataclasses import dataclass
from pathlib import Path

import pytest
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
