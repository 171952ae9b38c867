"""A real mosquitto on loopback with mutual TLS: the local stand-in for the AWS IoT Core device endpoint.

`LocalPki` is a test CA (tools/fleetctl/pki.py makes it and signs the device CSRs, exactly as `fleetctl` does
for a factory) plus the broker's server certificate. `Broker` writes mosquitto.conf with `require_certificate
true`, `use_identity_as_username true` and the ACL from acl.py, starts mosquitto on a free loopback port, and
stops it. mosquitto comes from Debian's package (`apt-get install mosquitto`); `mosquitto_path()` says where
it is or None.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fleetwarden_device import identity

from lambdas.shared import topics
from tools.fleetctl import pki

from . import acl

HOST = "localhost"  # the name in the server certificate; the agent checks it (and sends it as SNI)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(path, os.X_OK)),
        None,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class DeviceFiles:
    thing: str
    cert_file: Path
    key_file: Path
    certificate: x509.Certificate


class LocalPki:
    """A CA in `directory`: ca.pem, server.pem / server.key (CN and SAN DNS localhost only, so dialling
    127.0.0.1 fails the host name check)."""

    def __init__(self, directory: Path, name: str = "Fleetwarden local CA"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca_cert = pki.create_ca(name, days=30)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(_pem(self.ca_cert))
        server_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        server = self._builder(
            HOST, server_key.public_key(), now - dt.timedelta(minutes=1), now + dt.timedelta(days=1)
        )
        server = (
            server.add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.server_cert_file = directory / "server.pem"
        self.server_cert_file.write_bytes(_pem(server))
        self.server_key_file = directory / "server.key"
        self.server_key_file.write_bytes(_key_pem(server_key))
        os.chmod(self.server_key_file, 0o600)

    def _builder(self, cn: str, public_key, not_before, not_after) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )

    def sign_csr(self, csr_pem: bytes, days: int = 1) -> x509.Certificate:
        """What the factory (fleetctl) or the rotation function does with a device CSR."""
        csr = x509.load_pem_x509_csr(csr_pem)
        return pki.sign_device_csr(
            csr, self.ca_key, self.ca_cert, days, serial_pattern=r"^[A-Za-z0-9:_-]{1,128}$"
        )

    def device(self, thing: str, directory: Path | None = None, *, expired: bool = False) -> DeviceFiles:
        """A device key made the device's way (identity.new_key, 0600) and its certificate from this CA."""
        directory = directory or self.directory / thing
        key_file = directory / "device.key.pem"
        key = identity.new_key(key_file)
        if expired:
            now = dt.datetime.now(dt.timezone.utc)
            certificate = (
                self._builder(
                    thing, key.public_key(), now - dt.timedelta(days=10), now - dt.timedelta(days=1)
                )
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(self.ca_key, hashes.SHA256())
            )
        else:
            certificate = self.sign_csr(identity.csr_pem(key, thing))
        cert_file = directory / "device.cert.pem"
        cert_file.write_bytes(_pem(certificate))
        return DeviceFiles(thing, cert_file, key_file, certificate)

    def crl(self, revoked: list[x509.Certificate]) -> bytes:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + dt.timedelta(days=1))
        )
        for certificate in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(certificate.serial_number)
                .revocation_date(now - dt.timedelta(minutes=1))
                .build()
            )
        return builder.sign(self.ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:<port>, TLS only, certificates required, the generated ACL."""

    def __init__(
        self,
        directory: Path,
        local_pki: LocalPki,
        *,
        stage: str = "local",
        claim_template: str | None = None,
        tls_version: str | None = None,
        openssl_conf: Path | None = None,
    ):
        self.directory = directory
        self.pki = local_pki
        self.stage = stage
        self.claim_template = claim_template
        self.telemetry_rule = topics.rule_name(stage, "telemetry")
        self.tls_version = tls_version
        self.openssl_conf = openssl_conf
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.revoked: list[x509.Certificate] = []
        self.log_file = directory / "mosquitto.log"

    def _write_config(self) -> Path:
        acl_file = acl.write(self.directory / "acl", self.telemetry_rule, self.claim_template)
        lines = [
            # as root, mosquitto would otherwise switch to the `mosquitto` user and lose access to the files
            f"user {getpass.getuser()}",
            "persistence false",
            f"log_dest file {self.log_file}",
            "log_type all",
            "connection_messages true",
            "per_listener_settings false",
            "allow_anonymous false",
            f"acl_file {acl_file}",
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.pki.ca_file}",
            f"certfile {self.pki.server_cert_file}",
            f"keyfile {self.pki.server_key_file}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
        if self.tls_version:
            lines.append(f"tls_version {self.tls_version}")
        if self.revoked:
            crl_file = self.directory / "crl.pem"
            crl_file.write_bytes(self.pki.crl(self.revoked))
            lines.append(f"crlfile {crl_file}")
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> "Broker":
        path = mosquitto_path()
        if path is None:
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        config = self._write_config()
        env = dict(os.environ)
        if self.openssl_conf:
            env["OPENSSL_CONF"] = str(self.openssl_conf)
        self.process = subprocess.Popen(
            [path, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {self.process.stderr.read().decode()[-2000:]} "
                    f"{self.log_file.read_text()[-2000:] if self.log_file.exists() else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart_refusing(self, certificates: list[x509.Certificate]) -> None:
        """End every live session and refuse these certificates from now on (a CRL): what DeleteConnection and
        a certificate set INACTIVE do at IoT Core. mosquitto reads its CRL only at start, hence the
        restart."""
        self.stop()
        self.revoked = list(certificates)
        self.start()

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""
