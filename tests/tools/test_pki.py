"""fleetctl ca create / ca verification-cert / device csr / device sign: the certificates they produce."""

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def cn(name: x509.Name) -> str:
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def load_key(path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def strict_client_verify(cert, ca_cert):
    """RFC 5280 path validation as a TLS server would do for a client cert (SAN optional for IoT)."""
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store([ca_cert]))
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    return verifier.verify(cert, [])


# --- ca create -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_type, key_class", [("ec", ec.EllipticCurvePrivateKey), ("rsa", rsa.RSAPrivateKey)])
def test_ca_create_writes_a_self_signed_ca(run, tmp_path, key_type, key_class):
    out_dir = tmp_path / "new" / "ca"
    result = run("ca", "create", "--out-dir", out_dir, "--name", "Acme Factory CA", "--days", "30",
                 "--key-type", key_type)

    assert result.code == 0, result.err
    key_path, cert_path = out_dir / "ca.key.pem", out_dir / "ca.cert.pem"
    assert mode(key_path) == 0o600
    key = load_key(key_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert isinstance(key, key_class)
    if key_type == "ec":
        assert isinstance(key.curve, ec.SECP256R1)
    else:
        assert key.key_size == 2048
    assert spki(key.public_key()) == spki(cert.public_key())
    assert cn(cert.subject) == "Acme Factory CA"
    cert.verify_directly_issued_by(cert)  # self-signed: issuer == subject and the signature verifies

    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is True and basic.value.path_length == 0
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30, minutes=1)


def test_ca_create_force_replaces_files_and_keeps_key_private(run, tmp_path):
    out_dir = tmp_path / "ca"
    out_dir.mkdir()
    stale_key = out_dir / "ca.key.pem"
    stale_key.write_text("old")
    stale_key.chmod(0o644)
    (out_dir / "ca.cert.pem").write_text("old")

    assert run("ca", "create", "--out-dir", out_dir, "--force").code == 0

    # A world-readable file left by someone else must not keep its mode when replaced.
    assert mode(stale_key) == 0o600
    assert isinstance(load_key(stale_key), ec.EllipticCurvePrivateKey)


# --- device csr ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_device_csr_writes_private_key_and_csr_for_the_serial(run, tmp_path, key_type):
    result = run("device", "csr", "--serial", "SN-000123", "--out-dir", tmp_path / "dev", "--key-type", key_type)

    assert result.code == 0, result.err
    key_path, csr_path = tmp_path / "dev" / "SN-000123.key.pem", tmp_path / "dev" / "SN-000123.csr.pem"
    assert mode(key_path) == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-000123")])
    assert spki(csr.public_key()) == spki(load_key(key_path).public_key())
    assert sorted(p.name for p in (tmp_path / "dev").iterdir()) == ["SN-000123.csr.pem", "SN-000123.key.pem"]


def test_device_csr_key_is_0600_even_with_a_permissive_umask(run, tmp_path):
    old = os.umask(0)
    try:
        assert run("device", "csr", "--serial", "SN-0001", "--out-dir", tmp_path).code == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / "SN-0001.key.pem") == 0o600


def test_custom_serial_pattern_is_honoured(run, tmp_path):
    pattern = r"^ACME-\d{6}$"
    assert run("device", "csr", "--serial", "ACME-123456", "--out-dir", tmp_path, "--serial-pattern", pattern).code == 0
    assert run("device", "csr", "--serial", "SN-000123", "--out-dir", tmp_path, "--serial-pattern", pattern).code == 2


# --- device sign -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key_type, agreement, encipherment", [("ec", True, False), ("rsa", False, True)])
def test_csr_sign_round_trip_chains_to_the_ca(run, tmp_path, ca_dir, ca_cert, key_type, agreement, encipherment):
    assert run("device", "csr", "--serial", "SN-000777", "--out-dir", tmp_path, "--key-type", key_type).code == 0
    out = tmp_path / "SN-000777.cert.pem"
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    result = run("device", "sign", "--csr", tmp_path / "SN-000777.csr.pem", "--ca-dir", ca_dir,
                 "--out", out, "--days", "90")

    assert result.code == 0, result.err
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.issuer == ca_cert.subject
    cert.verify_directly_issued_by(ca_cert)
    assert strict_client_verify(cert, ca_cert).chain == [cert, ca_cert]
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-000777")])
    assert spki(cert.public_key()) == spki(load_key(tmp_path / "SN-000777.key.pem").public_key())

    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_agreement == agreement and usage.key_encipherment == encipherment
    assert not usage.key_cert_sign
    ca_ski = ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())

    assert cert.not_valid_before_utc <= before - dt.timedelta(seconds=59)  # backdated for clock skew
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90, minutes=1)


def test_sign_ignores_extensions_and_subject_fields_the_device_asks_for(run, tmp_path, ca_dir, ca_cert):
    # A CSR may request CA rights or serverAuth; the CA decides the profile, not the device.
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-000888"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Someone Else")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    csr_path = tmp_path / "greedy.csr.pem"
    csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))

    assert run("device", "sign", "--csr", csr_path, "--ca-dir", ca_dir, "--out", tmp_path / "c.pem").code == 0

    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SN-000888")])
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_each_signed_certificate_gets_a_distinct_serial_number(run, tmp_path, ca_dir):
    assert run("device", "csr", "--serial", "SN-0001", "--out-dir", tmp_path).code == 0
    numbers = set()
    for name in ("a.pem", "b.pem"):
        assert run("device", "sign", "--csr", tmp_path / "SN-0001.csr.pem", "--ca-dir", ca_dir,
                   "--out", tmp_path / name).code == 0
        numbers.add(x509.load_pem_x509_certificate((tmp_path / name).read_bytes()).serial_number)
    assert len(numbers) == 2


# --- ca verification-cert --------------------------------------------------------------------------

def test_verification_cert_carries_the_registration_code_and_is_signed_by_the_ca(run, tmp_path, ca_dir, ca_cert):
    code = "a3f1" * 16  # the shape `aws iot get-registration-code` returns: 64 hex characters
    out_dir = tmp_path / "verify"
    out_dir.mkdir()

    result = run("ca", "verification-cert", "--ca-dir", ca_dir, "--registration-code", code,
                 "--out", out_dir / "verification.pem")

    assert result.code == 0, result.err
    cert = x509.load_pem_x509_certificate((out_dir / "verification.pem").read_bytes())
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)])
    cert.verify_directly_issued_by(ca_cert)
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert [p.name for p in out_dir.iterdir()] == ["verification.pem"]  # the throwaway key is not written
    assert "register-ca-certificate" in result.out
