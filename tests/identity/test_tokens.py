"""identity.tokens: provisioning tokens and the one serial rule."""

from __future__ import annotations

import hashlib
import string

import pytest

from identity.tokens import (
    DEFAULT_SERIAL_PATTERN, hash_token, new_token, serial_pattern, validate_serial,
)


def test_tokens_are_256_bit_urlsafe_and_unique():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    urlsafe = set(string.ascii_letters + string.digits + "-_")
    assert all(len(t) == 43 and set(t) <= urlsafe for t in tokens)


def test_hash_is_hex_sha256():
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(hash_token("\ud800")) == 64  # a lone surrogate does not raise


@pytest.mark.parametrize("serial", ["abcd", "A1-b_2", "x" * 64, "0000"])
def test_valid_serials(serial):
    assert validate_serial(serial, DEFAULT_SERIAL_PATTERN)


@pytest.mark.parametrize("serial", ["abc", "x" * 65, "-abc", "_abc", "ab cd", "abcd\n", "abcd/", "ab.cd", "",
                                    None, 1234, "aaaé", "+/../../etc"])
def test_invalid_serials(serial):
    assert not validate_serial(serial, DEFAULT_SERIAL_PATTERN)


def test_serial_pattern_comes_from_the_environment():
    assert serial_pattern({}).pattern == DEFAULT_SERIAL_PATTERN
    assert validate_serial("SN-1", serial_pattern({"SERIAL_PATTERN": r"^SN-\d+$"}))
    assert not validate_serial("abcd", serial_pattern({"SERIAL_PATTERN": r"^SN-\d+$"}))


def test_one_serial_rule_for_config_hook_api_and_fleetctl():
    from lambdas.identity.tokens import DEFAULT_SERIAL_PATTERN, validate_serial
    from stacks import config
    from tools.fleetctl import serials

    assert config.DEFAULT_SERIAL_PATTERN == DEFAULT_SERIAL_PATTERN == serials.DEFAULT_SERIAL_PATTERN
    # A device may never be named like a claim client (claim-*): it could be impersonated.
    assert validate_serial("SN-0001") and not validate_serial("claim-0001")
