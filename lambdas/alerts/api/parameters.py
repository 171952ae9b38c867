"""The alerts API's request parameters, checked and normalised: GET /alerts's query string
(thing, from/to instants in sort-key form, an optional alert code, limit, and the opaque page
token) and GET /alerts/{id}/trace's alert id. Anything wrong is a BadRequest (a 400) with a
message for the caller."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from urllib.parse import unquote

from alerts.model import (
    ALERT_ID_PATTERN, ALERTS_TABLE_PARTITION_KEY, ALERTS_TABLE_SORT_KEY, MAX_CODE, THING_PATTERN,
)
from shared.api import ApiError

INVALID = "AlertRequestsInvalid"  # the outcome metric of a refused request (400, 404, 405)
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_TIME_LENGTH = 64  # longer than any sensible ISO-8601 instant; refused before parsing
MAX_NEXT_LENGTH = 512  # a real token is ~130 characters
LIST_PARAMETERS = ("thing", "from", "to", "code", "limit", "next")
UPPER_SUFFIX = "#~"  # '~' sorts after every hex digit: `<to>#~` is >= every alert id at <to>


class BadRequest(ApiError):
    def __init__(self, message: str):
        super().__init__(400, message, INVALID)


@dataclass(frozen=True)
class ListQuery:
    thing: str
    lower: str | None  # inclusive alert_id bounds, already in sort-key form
    upper: str | None
    # (lower > upper only for a window shorter than a millisecond between two: nothing in it)
    limit: int
    start_key: dict[str, str] | None
    code: int | None = None  # only alerts with this header code


def validate_thing(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("thing is required")
    if not THING_PATTERN.fullmatch(value):
        raise BadRequest(f"thing must match ^{THING_PATTERN.pattern}$")
    return value


def _offset_plus(text: str) -> str:
    """A '+' offset that reached us as a space (an unencoded '+' in a query string): put it back."""
    match = re.fullmatch(r"(\d{4}-?\d{2}-?\d{2}[Tt][\d:.,]+) (\d{2}(?::?\d{2})?)", text, re.ASCII)
    return f"{match[1]}+{match[2]}" if match else text


def parse_instant(value: Any, name: str) -> datetime:
    """An ISO-8601 date-time with a UTC offset (or Z), as an aware UTC datetime.

    A date without a time, or a time without an offset, is refused: the server cannot know
    which local day or zone the caller meant.
    """
    example = "e.g. 2024-01-05T10:00:00Z"
    if not isinstance(value, str) or not value or len(value) > MAX_TIME_LENGTH:
        raise BadRequest(f"{name} must be an ISO-8601 date and time with a UTC offset, {example}")
    text = _offset_plus(value.strip().upper())  # 3.11 fromisoformat takes only "T" and "Z"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO-8601 date and time with a UTC offset, {example}") from None
    if not re.search(r"\d[T ]\d", text):  # fromisoformat also takes a bare date: midnight of which zone?
        raise BadRequest(f"{name} must include a time of day, {example}")
    if moment.tzinfo is None:
        raise BadRequest(f"{name} must include a UTC offset or Z, {example}")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise BadRequest(f"{name} is out of range") from None


def sort_key_time(moment: datetime, name: str, *, round_up: bool = False) -> str:
    """A UTC datetime in the sort key's `YYYY-MM-DDTHH:MM:SS.mmmZ`. Sub-millisecond instants are
    rounded inwards (`from` up, `to` down), so the bounds stay exact at the index's precision."""
    if round_up and moment.microsecond % 1000:
        try:
            moment += timedelta(microseconds=1000 - moment.microsecond % 1000)
        except OverflowError:
            raise BadRequest(f"{name} is out of range") from None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalise_instant(value: Any, name: str, *, round_up: bool = False) -> str:
    return sort_key_time(parse_instant(value, name), name, round_up=round_up)


def parse_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    # Digits only: int() would also take " 7", "+7", "0_7" and non-ASCII digits.
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,3}", value, re.ASCII) \
            or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(value)


def parse_code(value: Any) -> int | None:
    """An alert code as the schema allows it (0 to MAX_CODE), digits only."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,10}", value, re.ASCII) \
            or int(value) > MAX_CODE:
        raise BadRequest(f"code must be an integer from 0 to {MAX_CODE}")
    return int(value)


def encode_next(key: Mapping[str, Any]) -> str:
    """The opaque page token: unpadded urlsafe base64 of the LastEvaluatedKey's JSON."""
    only_the_key = {name: key[name] for name in (ALERTS_TABLE_PARTITION_KEY, ALERTS_TABLE_SORT_KEY)}
    raw = json.dumps(only_the_key, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_next(token: Any, thing: str, lower: str | None, upper: str | None) -> dict[str, str]:
    """A page token back to an ExclusiveStartKey, accepted only if it is exactly a key of this
    query: this thing, a well-formed alert id, inside the from/to bounds (DynamoDB would refuse
    a start key outside them with a ValidationException, i.e. a 500)."""
    invalid = BadRequest("next is not a valid page token for this query")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_NEXT_LENGTH \
            or not re.fullmatch(r"[A-Za-z0-9_-]+", token, re.ASCII):
        raise invalid
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError: ValueError
        raise invalid from None
    if not isinstance(key, dict) or set(key) != {ALERTS_TABLE_PARTITION_KEY, ALERTS_TABLE_SORT_KEY}:
        raise invalid
    alert_id = key[ALERTS_TABLE_SORT_KEY]
    if key[ALERTS_TABLE_PARTITION_KEY] != thing or not isinstance(alert_id, str) \
            or not ALERT_ID_PATTERN.fullmatch(alert_id):
        raise invalid
    if (lower is not None and alert_id < lower) or (upper is not None and alert_id > upper):
        raise invalid
    return {ALERTS_TABLE_PARTITION_KEY: thing, ALERTS_TABLE_SORT_KEY: alert_id}


def parse_list_query(params: Mapping[str, Any] | None,
                     multi_params: Mapping[str, Any] | None = None) -> ListQuery:
    """queryStringParameters (and multiValueQueryStringParameters, to refuse repeated names)."""
    params = params or {}
    if not isinstance(params, Mapping):
        raise BadRequest("query string is not valid")
    unknown = sorted(name for name in params if name not in LIST_PARAMETERS)
    if unknown:  # a typo ("form=") would otherwise silently widen the query
        raise BadRequest(f"unknown query parameter {str(unknown[0])[:40]!r}; "
                         f"allowed: {', '.join(LIST_PARAMETERS)}")
    for name, values in (multi_params or {}).items():
        if isinstance(values, list) and len(values) > 1:
            raise BadRequest(f"query parameter {str(name)[:40]!r} may appear only once")
    thing = validate_thing(params.get("thing"))
    start = parse_instant(params["from"], "from") if params.get("from") is not None else None
    end = parse_instant(params["to"], "to") if params.get("to") is not None else None
    if start is not None and end is not None and start > end:
        raise BadRequest("from must not be later than to")
    lower = sort_key_time(start, "from", round_up=True) if start is not None else None
    # `<to>#~` sorts after every alert id of that millisecond: `to` is inclusive.
    upper = sort_key_time(end, "to") + UPPER_SUFFIX if end is not None else None
    code = parse_code(params.get("code"))
    limit = parse_limit(params.get("limit"))
    start_key = decode_next(params["next"], thing, lower, upper) if params.get("next") is not None else None
    return ListQuery(thing, lower, upper, limit, start_key, code)


def parse_alert_id(value: Any) -> str:
    """The {id} path parameter. API Gateway hands it over percent-decoded; if a '%' is still
    there (it never is in an alert id) it is decoded once more, so either form works."""
    if isinstance(value, str) and "%" in value and len(value) <= 256:
        value = unquote(value)  # a bad escape decodes to U+FFFD, which the pattern refuses
    if not isinstance(value, str) or not ALERT_ID_PATTERN.fullmatch(value):
        raise BadRequest("id must be an alert id like 2024-01-05T10:00:00.000Z#0123456789ab")
    return value
