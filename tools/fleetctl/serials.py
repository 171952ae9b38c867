"""Device serial numbers. A serial becomes the AWS IoT thing name and the certificate CN."""

import re

from .errors import InputError

# AWS IoT thing names allow [a-zA-Z0-9:_-]{1,128}; we are stricter: no ':' (it separates ARN parts
# and topic-policy variables get awkward), at least 4 characters, and at most 64 because an X.509
# CommonName is limited to 64 characters.
DEFAULT_SERIAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$"

_DEFAULT_RULE = "4-64 characters: letters, digits, '_' or '-', starting with a letter or digit"


def validate_serial(serial: str, pattern: str = DEFAULT_SERIAL_PATTERN) -> str:
    """Return `serial` unchanged if it matches `pattern`, else raise ValueError (an InputError).

    fullmatch, not match: with match, '$' also accepts a trailing newline ("ABCD\\n").
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"invalid --serial-pattern {pattern!r}: {exc}") from None
    if not isinstance(serial, str) or regex.fullmatch(serial) is None:
        rule = _DEFAULT_RULE if pattern == DEFAULT_SERIAL_PATTERN else "the serial pattern"
        raise InputError(f"invalid serial {serial!r}: must match {pattern} ({rule})")
    return serial
