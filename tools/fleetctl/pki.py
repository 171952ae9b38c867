"""Certificate work: the development CA, device keys and CSRs, device certificates, and the
AWS IoT CA verification certificate. Pure functions over `cryptography` objects; files.py does I/O."""

import datetime as dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import files
from .errors import InputError
from .serials import DEFAULT_SERIAL_PATTERN, validate_serial

KEY_TYPES = ("ec", "rsa")
CA_KEY_FILE = "ca.key.pem"
CA_CERT_FILE = "ca.cert.pem"
MAX_CA_DAYS = 7300
MAX_DEVICE_DAYS = 3650
# Backdate not_valid_before so a device whose clock runs slightly behind still accepts its cert.
CLOCK_SKEW = dt.timedelta(minutes=1)
# The verification certificate is only shown to AWS IoT once, during CA registration.
VERIFICATION_CERT_DAYS = 30
# `aws iot get-registration-code` returns 64 hex characters; 64 is also the CommonName limit.
_REGISTRATION_CODE = re.compile(r"[A-Za-z0-9]{1,64}")
# What AWS IoT accepts for device certificates.
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(key_type: str) -> PrivateKey:
    """EC P-256 (small, fast on constrained devices) or RSA 2048 (for older TLS stacks)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise InputError(f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")


def common_name(value: str, what: str) -> x509.Name:
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])
    except ValueError:
        raise InputError(f"{what} {value!r} cannot be a certificate CommonName (1-64 characters)") from None


def check_days(days: int, maximum: int) -> int:
    if not 1 <= days <= maximum:
        raise InputError(f"--days must be between 1 and {maximum}, got {days}")
    return days


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_ca(name: str, days: int, key_type: str = "ec") -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA that may sign only end-entity certificates (path_length=0)."""
    check_days(days, MAX_CA_DAYS)
    subject = common_name(name, "CA name")
    key = generate_key(key_type)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def build_csr(serial: str, key_type: str = "ec") -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    """The device side: a fresh key pair and a CSR proving possession of it, CN = serial."""
    subject = common_name(serial, "serial")
    key = generate_key(key_type)
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr


def load_ca(ca_dir: str | Path) -> tuple[PrivateKey, x509.Certificate]:
    """Load DIR/ca.key.pem and DIR/ca.cert.pem and check they form a usable CA."""
    ca_dir = Path(ca_dir)
    cert = files.load_certificate(ca_dir / CA_CERT_FILE, "CA certificate")
    key = files.load_private_key(ca_dir / CA_KEY_FILE, "CA key")
    if not isinstance(key, PrivateKey):
        raise InputError(f"CA key {ca_dir / CA_KEY_FILE} must be an EC or RSA key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise InputError(f"CA key {ca_dir / CA_KEY_FILE} does not match CA certificate {ca_dir / CA_CERT_FILE}")
    if not _is_ca(cert):
        raise InputError(f"{ca_dir / CA_CERT_FILE} is not a CA certificate (BasicConstraints ca=False)")
    if not cert.not_valid_before_utc <= _now() <= cert.not_valid_after_utc:
        raise InputError(f"CA certificate {ca_dir / CA_CERT_FILE} is not valid now "
                         f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})")
    return key, cert


def serial_from_csr(csr: x509.CertificateSigningRequest, pattern: str = DEFAULT_SERIAL_PATTERN) -> str:
    """The CSR's single CN, validated as a serial: it becomes the thing name, so it is not trusted."""
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise InputError(f"CSR must have exactly one CommonName (the device serial), found {len(names)}")
    return validate_serial(str(names[0].value), pattern)


def sign_device_csr(
    csr: x509.CertificateSigningRequest,
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    days: int,
    serial_pattern: str = DEFAULT_SERIAL_PATTERN,
) -> x509.Certificate:
    """Issue a client-auth-only device certificate.

    Only the CSR's public key and validated CN are used: its other subject fields and requested
    extensions are ignored, so a device cannot ask for e.g. CA rights or serverAuth.
    """
    check_days(days, MAX_DEVICE_DAYS)
    if not csr.is_signature_valid:
        raise InputError("CSR signature is invalid (the CSR was altered or not signed by its key)")
    serial = serial_from_csr(csr, serial_pattern)
    public_key = csr.public_key()
    _check_device_key(public_key)
    is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
    usage = _key_usage(digital_signature=True, key_agreement=is_ec, key_encipherment=not is_ec)
    return _issue(ca_key, ca_cert, common_name(serial, "serial"), public_key, days, usage,
                  x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]))


def verification_cert(ca_key: PrivateKey, ca_cert: x509.Certificate, registration_code: str) -> x509.Certificate:
    """Prove to AWS IoT that we hold the CA key: a CA-signed cert whose CN is the registration code.

    Its key pair is generated here and dropped: AWS only checks the CA's signature and the CN.
    """
    if not _REGISTRATION_CODE.fullmatch(registration_code):
        raise InputError(f"invalid registration code {registration_code!r}: expected the 1-64 letters and "
                         "digits printed by `aws iot get-registration-code`")
    throwaway = generate_key("ec")
    usage = _key_usage(digital_signature=True, key_agreement=True)
    return _issue(ca_key, ca_cert, common_name(registration_code, "registration code"),
                  throwaway.public_key(), VERIFICATION_CERT_DAYS, usage, None)


def _issue(ca_key, ca_cert, subject, public_key, days, usage, eku) -> x509.Certificate:
    """Common end-entity profile: not a CA, key identifiers, random serial, backdated start."""
    now = _now()
    not_after = now + dt.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        remaining = (ca_cert.not_valid_after_utc - now).days
        raise InputError(f"certificate would outlive the CA (CA expires {ca_cert.not_valid_after_utc:%Y-%m-%d}); "
                         f"use --days {remaining} or less")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca_key, ca_cert), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(eku, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _authority_key_id(ca_key: PrivateKey, ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI when it has one, so the AKI matches it byte for byte.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _check_device_key(public_key) -> None:
    """Reject keys AWS IoT would refuse at registration, rather than issue a useless certificate."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, _EC_CURVES):
        return
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= _MIN_RSA_BITS:
        return
    raise InputError("CSR key must be EC P-256/P-384/P-521 or RSA of at least 2048 bits")


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    flags = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{flag: enabled.get(flag, False) for flag in flags})


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
