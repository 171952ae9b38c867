"""The device's identity: a P-256 key made on the device (it never leaves it) and a CSR with CN = thing name.

The key file is created 0600 with O_EXCL, so an existing key is never overwritten by accident (rotation writes
a new file next to it and swaps only after the new certificate is proven, see rotation.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key written to `path` with mode 0600 (FileExistsError if the file exists)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: the device key must be EC")
    return key


def csr_pem(key: ec.EllipticCurvePrivateKey, thing: str) -> bytes:
    """A CSR proving possession of `key`, subject CN = the thing name (the backend checks CN = thing)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def write_public(path: Path, data: bytes) -> None:
    """Certificates and CSRs: public, written atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
