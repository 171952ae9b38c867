"""Reading PEM inputs with clear errors, and writing outputs without leaking keys or clobbering files."""

import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from .errors import InputError

_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """Read a whole input file; missing or unreadable files become an InputError naming `what`."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory, not a file: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None


def _pem_label(data: bytes, path: str | os.PathLike, what: str) -> str:
    """The first PEM block's label, so a wrong file is reported as what it is, not as 'invalid'."""
    found = _PEM_LABEL.search(data)
    if found is None:
        raise InputError(f"{what} {path} is not a PEM file")
    return found.group(1).decode("ascii")


def load_certificate(path: str | os.PathLike, what: str = "certificate") -> x509.Certificate:
    data = read_bytes(path, what)
    label = _pem_label(data, path, what)
    if label != "CERTIFICATE":
        raise InputError(f"{what} {path} holds a PEM '{label}', not a certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise InputError(f"{what} {path} is not a valid PEM certificate") from None


def load_csr(path: str | os.PathLike) -> x509.CertificateSigningRequest:
    data = read_bytes(path, "CSR")
    label = _pem_label(data, path, "CSR")
    if label not in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        raise InputError(f"CSR {path} holds a PEM '{label}', not a certificate signing request")
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError:
        raise InputError(f"CSR {path} is not a valid PEM certificate signing request") from None


def load_private_key(path: str | os.PathLike, what: str = "private key") -> CertificateIssuerPrivateKeyTypes:
    data = read_bytes(path, what)
    label = _pem_label(data, path, what)
    if "PRIVATE KEY" not in label:
        raise InputError(f"{what} {path} holds a PEM '{label}', not a private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # raised by cryptography when the key needs a password
        raise InputError(f"{what} {path} is encrypted; fleetctl needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{what} {path} is not a valid PEM private key") from None
    return key


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    """Check every output before writing any, so a refusal never leaves half a key pair behind."""
    if force:
        return
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing:
        raise InputError(f"refusing to overwrite {', '.join(existing)} (use --force)")


def write_file(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create `path` with `mode` from the first byte on.

    os.open applies the mode at creation, so a private key is never world-readable, not even
    between open and chmod. O_EXCL also refuses to follow a symlink planted at `path`. With
    --force the old file is unlinked first rather than truncated, so it cannot keep a looser mode.
    """
    if force and (path.exists() or path.is_symlink()):
        path.unlink()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise InputError(f"refusing to overwrite {path} (use --force)") from None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_private_text(path: Path, text: str) -> None:
    """Replace `path` atomically with a 0600 file: written to a 0600 temp file beside it, then renamed, so a
    reader sees the old or the new content, never half, and the content is never readable by others."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_private_key(path: Path, key: CertificateIssuerPrivateKeyTypes, force: bool) -> None:
    # Unencrypted PKCS#8: the device (or dev CA) must load it unattended; mode 0600 protects it.
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file(path, pem, 0o600, force)


def write_public_pem(path: Path, obj: x509.Certificate | x509.CertificateSigningRequest, force: bool) -> None:
    write_file(path, obj.public_bytes(serialization.Encoding.PEM), 0o644, force)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create an output directory private to the operator (0700) if it does not exist yet."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {directory}: {exc.strerror}") from None
    return directory
