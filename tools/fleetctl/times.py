"""The one reading of a time the operator types (`--from`, `--to`, `--since`)."""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import InputError


def parse_instant(text: str, flag: str) -> datetime:
    """ISO-8601 date or date-time (naive = UTC, `Z` accepted) -> aware UTC datetime; InputError names the flag."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, IndexError, OverflowError):
        raise InputError(f"invalid {flag} {text!r}: expected ISO-8601, e.g. 2025-05-01 or "
                         "2025-05-01T12:00:00Z") from None
