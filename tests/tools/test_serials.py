"""Serial (thing name) validation shared by device csr, device sign and token issue."""

import pytest

from tools.fleetctl.serials import DEFAULT_SERIAL_PATTERN, validate_serial


@pytest.mark.parametrize("serial", ["ABCD", "sn-0001", "0_dev-42", "A" * 64])
def test_valid_serials_are_returned_unchanged(serial):
    assert validate_serial(serial) == serial


@pytest.mark.parametrize(
    "serial",
    [
        "abc",  # too short
        "A" * 65,  # longer than a certificate CommonName allows
        "-abcd",  # must start with a letter or digit
        "_abcd",
        "dev 0001",
        "dev:0001",  # ':' is legal in thing names but not in ours
        "dev/0001",
        "dévice01",
        "ABCD\n",  # '$' alone would accept a trailing newline
        "",
    ],
)
def test_invalid_serials_raise_a_one_line_error_naming_serial_and_rule(serial):
    with pytest.raises(ValueError) as info:
        validate_serial(serial)
    message = str(info.value)
    assert "\n" not in message
    assert repr(serial) in message
    assert DEFAULT_SERIAL_PATTERN in message


def test_custom_pattern_replaces_the_default():
    assert validate_serial("x", r"^x$") == "x"
    with pytest.raises(ValueError, match=r"\^x\$"):
        validate_serial("ABCD", r"^x$")


def test_unparseable_custom_pattern_is_a_value_error():
    with pytest.raises(ValueError, match="serial-pattern"):
        validate_serial("ABCD", "([")
