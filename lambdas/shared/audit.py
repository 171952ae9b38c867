"""Audit trail: every privileged human action (or one it enables) becomes one DynamoDB item in
the audit table AND one structured log line, so it survives the loss of either store."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

from aws_lambda_powertools import Logger

from shared.writes import put_new

_logger = Logger(child=True)


def iso_utc(epoch: float, timespec: str = "milliseconds") -> str:
    """Fixed-width ISO-8601 UTC, so the by_target index (sort key `at`) sorts by time."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def _clean_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """The contract allows strings and numbers only; DynamoDB wants Decimal, not float."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        number_or_text = isinstance(value, (str, int, float, Decimal)) and not isinstance(value, bool)
        if not isinstance(key, str) or not number_or_text:
            raise TypeError(f"audit detail {key!r} must be a string or a number")
        out[key] = Decimal(str(value)) if isinstance(value, float) else value
    return out


def record(
    table: Any,
    *,
    action: str,
    actor: str,
    target: str,
    details: Mapping[str, Any],
    now: Callable[[], float],
    logger: Logger | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Write one audit item and log it under the key `audit`; returns the record. With `event_id`
    (derived from what is recorded, e.g. a job id) the record is written once: if one with that id
    exists (an earlier attempt of the same work), that one is returned and nothing is written."""
    for name, value in (("action", action), ("actor", actor), ("target", target)):
        # `target` is the by_target index key: DynamoDB rejects empty key strings.
        if not isinstance(value, str) or not value:
            raise ValueError(f"audit {name} must be a non-empty string")
    item = {
        "event_id": event_id or uuid.uuid4().hex,
        "at": iso_utc(now()),
        "action": action,
        "actor": actor,
        "target": target,
        "details": _clean_details(details),
    }
    # A uuid4 collision is practically impossible; the condition makes overwriting one impossible,
    # and put_new tells this record's own write (botocore re-sent it) from such a collision.
    existing = put_new(table, item, "event_id")
    if existing is not None:
        if event_id is not None:
            return existing
        raise RuntimeError(f"audit event id {item['event_id']} already holds another record")
    (logger or _logger).info(f"audit: {action}", extra={"audit": item})
    return item
