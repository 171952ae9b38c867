"""Every bad input: exit code 2, exactly one `fleetctl: ` line on stderr, no traceback, nothing written."""

import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID


def write_csr(path, name_attributes, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(name_attributes)).sign(key, algorithm)
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def sign(run, csr, ca_dir, out, *extra):
    return run("device", "sign", "--csr", csr, "--ca-dir", ca_dir, "--out", out, *extra)


@pytest.fixture
def good_csr(run, tmp_path):
    assert run("device", "csr", "--serial", "SN-0001", "--out-dir", tmp_path).code == 0
    return tmp_path / "SN-0001.csr.pem"


# --- usage ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "required"),
        (["nope"], "No such command"),
        (["device", "sign"], "--csr"),
        (["ca", "create", "--out-dir", "x", "--key-type", "dsa"], "--key-type"),
        (["device", "sign", "--csr", "c", "--ca-dir", "d", "--out", "o", "--days", "ten"], "--days"),
    ],
)
def test_usage_errors(run, argv, fragment):
    run(*argv).assert_one_error_line(2, fragment)


def test_help_returns_zero_instead_of_exiting(run):
    result = run("device", "sign", "--help")
    assert result.code == 0 and "--days" in result.out


# --- files ------------------------------------------------------------------------------------------

def test_missing_csr_file(run, tmp_path, ca_dir):
    sign(run, tmp_path / "absent.csr.pem", ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "not found")


def test_missing_ca_dir(run, tmp_path, good_csr):
    sign(run, good_csr, tmp_path / "no-ca", tmp_path / "o.pem").assert_one_error_line(2, "CA certificate", "not found")


def test_csr_that_is_not_pem(run, tmp_path, ca_dir):
    junk = tmp_path / "junk.csr"
    junk.write_bytes(b"\x00\x01 definitely not PEM")
    sign(run, junk, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "not a PEM file")


def test_csr_with_corrupt_pem_body(run, tmp_path, ca_dir):
    broken = tmp_path / "broken.csr"
    broken.write_text("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    sign(run, broken, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "not a valid")


def test_certificate_passed_as_csr(run, tmp_path, ca_dir):
    sign(run, ca_dir / "ca.cert.pem", ca_dir, tmp_path / "o.pem").assert_one_error_line(
        2, "not a certificate signing request")


def test_ca_cert_that_is_not_a_certificate(run, tmp_path, ca_dir, good_csr):
    shutil.copy(good_csr, ca_dir / "ca.cert.pem")
    sign(run, good_csr, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "not a certificate")


def test_ca_key_that_does_not_match_the_ca_cert(run, tmp_path, ca_dir, good_csr):
    assert run("ca", "create", "--out-dir", tmp_path / "other").code == 0
    shutil.copy(tmp_path / "other" / "ca.key.pem", ca_dir / "ca.key.pem")
    out = tmp_path / "o.pem"
    sign(run, good_csr, ca_dir, out).assert_one_error_line(2, "does not match")
    assert not out.exists()


def test_ca_dir_holding_a_device_cert_is_not_a_ca(run, tmp_path, ca_dir, good_csr):
    # A leaf cert and its key in --ca-dir must not be usable to sign further certificates.
    assert sign(run, good_csr, ca_dir, tmp_path / "leaf.pem").code == 0
    fake_ca = tmp_path / "fake-ca"
    fake_ca.mkdir()
    shutil.copy(tmp_path / "leaf.pem", fake_ca / "ca.cert.pem")
    shutil.copy(tmp_path / "SN-0001.key.pem", fake_ca / "ca.key.pem")
    sign(run, good_csr, fake_ca, tmp_path / "o.pem").assert_one_error_line(2, "not a CA certificate")


# --- CSR contents -------------------------------------------------------------------------------------

def test_csr_without_common_name(run, tmp_path, ca_dir):
    csr = write_csr(tmp_path / "no-cn.csr", [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    sign(run, csr, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "CommonName")


def test_csr_whose_common_name_is_not_a_valid_serial(run, tmp_path, ca_dir):
    csr = write_csr(tmp_path / "bad.csr", [x509.NameAttribute(NameOID.COMMON_NAME, "../../etc")])
    sign(run, csr, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "invalid serial '../../etc'")


def test_csr_with_tampered_subject_fails_signature_check(run, tmp_path, ca_dir, good_csr):
    # Swap the CN inside the signed bytes: still parses, but the signature no longer matches.
    tampered = tmp_path / "tampered.csr"
    der = x509.load_pem_x509_csr(good_csr.read_bytes()).public_bytes(serialization.Encoding.DER)
    swapped = x509.load_der_x509_csr(der.replace(b"SN-0001", b"SN-0002"))
    tampered.write_bytes(swapped.public_bytes(serialization.Encoding.PEM))
    sign(run, tampered, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "signature is invalid")


@pytest.mark.parametrize("key_factory", [
    lambda: ed25519.Ed25519PrivateKey.generate(),
    lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
])
def test_csr_with_a_key_aws_iot_rejects(run, tmp_path, ca_dir, key_factory):
    csr = write_csr(tmp_path / "weak.csr", [x509.NameAttribute(NameOID.COMMON_NAME, "SN-0001")], key_factory())
    sign(run, csr, ca_dir, tmp_path / "o.pem").assert_one_error_line(2, "CSR key must be")


# --- serials and --days -----------------------------------------------------------------------------

def test_bad_serial_for_device_csr_writes_nothing(run, tmp_path):
    out_dir = tmp_path / "dev"
    run("device", "csr", "--serial", "no spaces", "--out-dir", out_dir).assert_one_error_line(2, "'no spaces'")
    assert not out_dir.exists()


def test_bad_serial_pattern(run, tmp_path):
    run("device", "csr", "--serial", "SN-0001", "--out-dir", tmp_path,
        "--serial-pattern", "([").assert_one_error_line(2, "--serial-pattern")


@pytest.mark.parametrize("days", ["0", "-1", "3651"])
def test_device_days_out_of_range(run, tmp_path, ca_dir, good_csr, days):
    out = tmp_path / "o.pem"
    sign(run, good_csr, ca_dir, out, "--days", days).assert_one_error_line(2, "--days", "3650")
    assert not out.exists()


def test_ca_days_out_of_range(run, tmp_path):
    run("ca", "create", "--out-dir", tmp_path / "ca", "--days", "0").assert_one_error_line(2, "--days")
    assert not (tmp_path / "ca").exists()


def test_device_cert_may_not_outlive_the_ca(run, tmp_path, good_csr):
    assert run("ca", "create", "--out-dir", tmp_path / "short", "--days", "30").code == 0
    sign(run, good_csr, tmp_path / "short", tmp_path / "o.pem", "--days", "365").assert_one_error_line(
        2, "outlive the CA")


@pytest.mark.parametrize("code", ["", "not a code", "x" * 65])
def test_bad_registration_code(run, tmp_path, ca_dir, code):
    run("ca", "verification-cert", "--ca-dir", ca_dir, "--registration-code", code,
        "--out", tmp_path / "v.pem").assert_one_error_line(2, "registration code")


# --- overwrite refusal ------------------------------------------------------------------------------

def test_ca_create_refuses_to_overwrite_an_existing_ca(run, ca_dir):
    key_before = (ca_dir / "ca.key.pem").read_bytes()
    cert_before = (ca_dir / "ca.cert.pem").read_bytes()
    run("ca", "create", "--out-dir", ca_dir).assert_one_error_line(2, "refusing to overwrite", "--force")
    assert (ca_dir / "ca.key.pem").read_bytes() == key_before
    assert (ca_dir / "ca.cert.pem").read_bytes() == cert_before


def test_ca_create_refuses_when_only_the_cert_exists(run, tmp_path):
    # Checked before anything is written: no orphan key is left beside someone else's cert.
    (tmp_path / "ca.cert.pem").write_text("keep me")
    run("ca", "create", "--out-dir", tmp_path).assert_one_error_line(2, "refusing to overwrite")
    assert not (tmp_path / "ca.key.pem").exists()


def test_device_csr_refuses_to_replace_a_device_key(run, tmp_path, good_csr):
    key_before = (tmp_path / "SN-0001.key.pem").read_bytes()
    run("device", "csr", "--serial", "SN-0001", "--out-dir", tmp_path).assert_one_error_line(2, "refusing")
    assert (tmp_path / "SN-0001.key.pem").read_bytes() == key_before


def test_device_sign_refuses_to_overwrite_output(run, tmp_path, ca_dir, good_csr):
    out = tmp_path / "o.pem"
    out.write_text("keep me")
    sign(run, good_csr, ca_dir, out).assert_one_error_line(2, "refusing to overwrite")
    assert out.read_text() == "keep me"
    assert sign(run, good_csr, ca_dir, out, "--force").code == 0


def test_output_into_a_missing_directory(run, tmp_path, ca_dir, good_csr):
    sign(run, good_csr, ca_dir, tmp_path / "no" / "such" / "o.pem").assert_one_error_line(2, "cannot write")
