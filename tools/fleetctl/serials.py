"""Device serial numbers. A serial becomes the AWS IoT thing name and the certificate CN."""

import re
import string

from .errors import InputError

# AWS IoT thing names allow [a-zA-Z0-9:_-]{1,128}; we are stricter: no ':' (S3 event notifications
# carry it URL-encoded and the telemetry and alert paths take letters, digits, '_' and '-' only),
# at least 4 characters, and at most 64 because an X.509 CommonName is limited to 64 characters.
# This package is installed on its own (no lambdas/): SERIAL_ALPHABET, MAX_SERIAL_LENGTH,
# CLAIM_CLIENT_PREFIX and DEFAULT_SERIAL_PATTERN restate lambdas/identity/tokens.py, and
# tests/identity/test_serial_paths.py fails if they differ.
DEFAULT_SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$"
SERIAL_ALPHABET = string.ascii_letters + string.digits + "_-"
MAX_SERIAL_LENGTH = 128
# Claim-certificate clients connect as `claim-<anything>`: a device named so could be impersonated.
CLAIM_CLIENT_PREFIX = "claim-"

_DEFAULT_RULE = "4-64 characters: letters, digits, '_' or '-', starting with a letter or digit"
_SAFE_SERIAL = re.compile(f"[{re.escape(SERIAL_ALPHABET)}]{{1,{MAX_SERIAL_LENGTH}}}")


def validate_serial(serial: str, pattern: str = DEFAULT_SERIAL_PATTERN) -> str:
    """Return `serial` unchanged if it matches `pattern`, else raise ValueError (an InputError).

    fullmatch, not match: with match, '$' also accepts a trailing newline ("ABCD\\n"). Whatever the
    pattern, a serial is 1-128 letters, digits, '_' or '-' and does not start with "claim-", as the
    provisioning hook and the token API require.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"invalid --serial-pattern {pattern!r}: {exc}") from None
    if not isinstance(serial, str) or regex.fullmatch(serial) is None:
        rule = _DEFAULT_RULE if pattern == DEFAULT_SERIAL_PATTERN else "the serial pattern"
        raise InputError(f"invalid serial {serial!r}: must match {pattern} ({rule})")
    if _SAFE_SERIAL.fullmatch(serial) is None:
        raise InputError(f"invalid serial {serial!r}: a serial may hold only letters A-Z a-z, digits, "
                         f"'_' and '-' (1-{MAX_SERIAL_LENGTH} characters), whatever the pattern")
    if serial.startswith(CLAIM_CLIENT_PREFIX):
        raise InputError(f"invalid serial {serial!r}: {CLAIM_CLIENT_PREFIX}* is reserved for claim clients")
    return serial
