"""Provisioning tokens and serial numbers: the one definition the token API and the hook share.

A token is a one-time secret an admin hands to a device for fleet provisioning. Only its
SHA-256 is ever stored, so a leak of the tokens table cannot be replayed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import string

DEFAULT_SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$"
# The only characters a serial (= thing name = certificate CN = MQTT client id and topic level =
# S3 key segment) may hold, whatever serial_pattern says; stacks/config.py refuses a pattern that
# could match any other. AWS IoT allows [a-zA-Z0-9:_-]{1,128} in a thing name (CreateThing,
# https://docs.aws.amazon.com/iot/latest/apireference/API_CreateThing.html), but ':' is one of the
# characters S3 says "might require special handling" in a key (Naming Amazon S3 objects,
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html) and arrives
# URL-encoded in S3 event notifications (%3A; Event message structure,
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html);
# the telemetry transform (SAFE_THING) and the alert layout (alerts.model.THING_PATTERN) accept
# letters, digits, '_' and '-' only. Every one of these is in S3's "safe characters" and needs no
# encoding anywhere. tests/identity/test_serial_paths.py runs one device through every path.
SERIAL_ALPHABET = string.ascii_letters + string.digits + "_-"
MAX_SERIAL_LENGTH = 128  # CreateThing: thingName length 1 to 128
_SAFE_SERIAL = re.compile(f"[{re.escape(SERIAL_ALPHABET)}]{{1,{MAX_SERIAL_LENGTH}}}")
TOKEN_BYTES = 32  # 256 bits of entropy
MAX_TOKEN_LENGTH = 256  # the hook refuses anything longer before hashing it
# Claim-certificate clients connect as `claim-<anything>` (see the claim policy). No device may
# be named like that, or a claim holder could connect under a device's client id.
CLAIM_CLIENT_PREFIX = "claim-"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Hex SHA-256: the tokens table's partition key. surrogatepass: never raise on odd input."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=8)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def serial_pattern(env: os._Environ[str] | dict[str, str] | None = None) -> re.Pattern[str]:
    """SERIAL_PATTERN from the environment (set by the stack), or the default."""
    env = os.environ if env is None else env
    return _compile(env.get("SERIAL_PATTERN") or DEFAULT_SERIAL_PATTERN)


def validate_serial(serial: object, pattern: re.Pattern[str] | str | None = None) -> bool:
    """True only for a str matching the whole pattern (fullmatch: '$' would accept a trailing newline)
    that is also made of SERIAL_ALPHABET (1 to 128 characters) and is not a claim client id. The
    alphabet holds even if a pattern admitting more reached the environment."""
    if pattern is None:
        pattern = serial_pattern()
    elif isinstance(pattern, str):
        pattern = _compile(pattern)
    return (isinstance(serial, str) and _SAFE_SERIAL.fullmatch(serial) is not None
            and pattern.fullmatch(serial) is not None and not serial.startswith(CLAIM_CLIENT_PREFIX))
