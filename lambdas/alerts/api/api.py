"""The alerts API's logic: plain functions over an injected alerts table, audit table, S3 client
and clock, so every rule here is tested without AWS.

Two reads for members of the readers or admins group:

* `list_alerts`: one page of a thing's alerts, newest first, optionally between two instants.
  Only the index's summary fields leave the table; the object's bucket and key never do.
* `fetch_trace`: a presigned GET URL (at most 300 s) for one alert's stored object. The URL is
  a bearer credential for that object version, so it is audited before it is returned, and it
  is never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping
from urllib.parse import unquote

from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from shared import audit
from alerts.model import (
    ALERT_ID_INDEX,
    ALERT_ID_PATTERN,
    ALERTS_TABLE_PARTITION_KEY,
    ALERTS_TABLE_SORT_KEY,
    THING_PATTERN,
    parse_alert_key,
)
from shared.operators import caller

# Not (yet) in alerts.model, which defines these rules only inside ALERT_KEY and alert_id_for.

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_TRACE_URL_SECONDS = 300
MAX_TIME_LENGTH = 64  # longer than any sensible ISO-8601 instant; refused before parsing
MAX_NEXT_LENGTH = 512  # a real token is ~130 characters
LIST_PARAMETERS = ("thing", "from", "to", "limit", "next")
UPPER_SUFFIX = "#~"  # '~' sorts after every hex digit: `<to>#~` is >= every alert id at <to>

# The only attributes a list query reads: the bucket, key and version stay in the table.
_PROJECTION = {"#t": "thing", "#a": "alert_id", "#r": "received_at", "#c": "code", "#f": "fw",
               "#n": "field_count"}


@dataclass(frozen=True)
class Result:
    status: int
    body: dict[str, Any]
    outcome: str  # the metric counted for this request


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class ListQuery:
    thing: str
    lower: str | None  # inclusive alert_id bounds, already in sort-key form
    upper: str | None
    # (lower > upper only for a window shorter than a millisecond between two: nothing in it)
    limit: int
    start_key: dict[str, str] | None


# --- authorisation ------------------------------------------------------------------------------

def authorised_caller(claims: Any, reader_group: str, admin_group: str) -> str | None:
    """The caller's username if they are in the readers or the admins group, else None."""
    username, groups = caller(claims)
    if username is None or not ({reader_group, admin_group} & groups):
        return None
    return username


def _forbidden(claims: Any, reader_group: str, admin_group: str, logger: Any) -> Result:
    username, groups = caller(claims)
    if logger is not None:
        logger.warning("alerts request refused", extra={
            "caller": username or "unknown",
            "groups": ",".join(sorted(groups))[:256],  # caller-controlled: bounded
        })
    message = f"only members of {reader_group} or {admin_group} may read alerts"
    return Result(403, {"message": message}, "AlertRequestsForbidden")


# --- validation ---------------------------------------------------------------------------------

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
    limit = parse_limit(params.get("limit"))
    start_key = decode_next(params["next"], thing, lower, upper) if params.get("next") is not None else None
    return ListQuery(thing, lower, upper, limit, start_key)


def parse_alert_id(value: Any) -> str:
    """The {id} path parameter. API Gateway hands it over percent-decoded; if a '%' is still
    there (it never is in an alert id) it is decoded once more, so either form works."""
    if isinstance(value, str) and "%" in value and len(value) <= 256:
        value = unquote(value)  # a bad escape decodes to U+FFFD, which the pattern refuses
    if not isinstance(value, str) or not ALERT_ID_PATTERN.fullmatch(value):
        raise BadRequest("id must be an alert id like 2024-01-05T10:00:00.000Z#0123456789ab")
    return value


# --- the routes ---------------------------------------------------------------------------------

def _number(value: Any) -> int | float | None:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def public_alert(item: Mapping[str, Any]) -> dict[str, Any]:
    """What an analyst sees of an index item: an allow-list, never bucket, key or version."""
    return {
        "id": item[ALERTS_TABLE_SORT_KEY],
        "thing": item[ALERTS_TABLE_PARTITION_KEY],
        "received_at": item.get("received_at"),
        "code": _number(item.get("code")),
        "fw": item.get("fw"),
        "field_count": _number(item.get("field_count")),
    }


def list_alerts(
    *,
    claims: Any,
    params: Mapping[str, Any] | None,
    multi_params: Mapping[str, Any] | None,
    alerts_table: Any,
    reader_group: str,
    admin_group: str,
    logger: Any = None,
) -> Result:
    username = authorised_caller(claims, reader_group, admin_group)
    # Authorise before validating: outsiders learn nothing about parameters.
    if username is None:
        return _forbidden(claims, reader_group, admin_group, logger)
    try:
        query = parse_list_query(params, multi_params)
    except BadRequest as bad:
        return Result(400, {"message": str(bad)}, "AlertRequestsInvalid")

    if query.lower is not None and query.upper is not None and query.lower > query.upper:
        return Result(200, {"items": [], "next": None}, "AlertsListed")  # DynamoDB would refuse it
    condition = Key(ALERTS_TABLE_PARTITION_KEY).eq(query.thing)
    sort_key = Key(ALERTS_TABLE_SORT_KEY)
    if query.lower is not None and query.upper is not None:
        condition &= sort_key.between(query.lower, query.upper)
    elif query.lower is not None:
        condition &= sort_key.gte(query.lower)
    elif query.upper is not None:
        condition &= sort_key.lte(query.upper)
    request: dict[str, Any] = {
        "KeyConditionExpression": condition,
        "ScanIndexForward": False,  # newest first
        # One more than a page: if it comes back, there is a next page, and its token points at
        # this page's last item (no trailing empty page when the items run out exactly).
        "Limit": query.limit + 1,
        "ProjectionExpression": ", ".join(_PROJECTION),
        "ExpressionAttributeNames": dict(_PROJECTION),
    }
    if query.start_key is not None:
        request["ExclusiveStartKey"] = query.start_key
    response = alerts_table.query(**request)
    items = response.get("Items", [])
    if len(items) > query.limit:
        items = items[:query.limit]
        next_token: str | None = encode_next(items[-1])
    elif response.get("LastEvaluatedKey"):  # the 1 MB page cap came first
        next_token = encode_next(response["LastEvaluatedKey"])
    else:
        next_token = None
    if logger is not None:
        logger.info("alerts listed", extra={
            "caller": username, "thing": query.thing, "from": query.lower,
            "to": query.upper.removesuffix(UPPER_SUFFIX) if query.upper else None,
            "count": len(items), "more": next_token is not None,
        })
    return Result(200, {"items": [public_alert(item) for item in items], "next": next_token}, "AlertsListed")


def fetch_trace(
    *,
    claims: Any,
    alert_id: Any,
    alerts_table: Any,
    audit_table: Any,
    s3: Any,
    data_bucket: str,
    expires_in: int,
    reader_group: str,
    admin_group: str,
    now: Callable[[], float],
    logger: Any = None,
) -> Result:
    username = authorised_caller(claims, reader_group, admin_group)
    if username is None:
        return _forbidden(claims, reader_group, admin_group, logger)
    try:
        alert_id = parse_alert_id(alert_id)
    except BadRequest as bad:
        return Result(400, {"message": str(bad)}, "AlertRequestsInvalid")
    if not 1 <= expires_in <= MAX_TRACE_URL_SECONDS:
        raise ValueError(f"expires_in must be from 1 to {MAX_TRACE_URL_SECONDS} seconds")

    # The index is eventually consistent: an alert indexed a moment ago may still be a 404.
    items = alerts_table.query(
        IndexName=ALERT_ID_INDEX,
        KeyConditionExpression=Key(ALERTS_TABLE_SORT_KEY).eq(alert_id),
        Limit=2,
    ).get("Items", [])
    if not items:
        if logger is not None:
            logger.info("alert not found", extra={"caller": username, "alert_id": alert_id})
        return Result(404, {"message": "alert not found"}, "AlertTraceNotFound")
    if len(items) > 1:  # the id embeds a digest of bucket/key/version: this is a corrupt index
        if logger is not None:
            logger.error("alert id is not unique", extra={"caller": username, "alert_id": alert_id})
        return Result(500, {"message": "internal error; no URL was issued"}, "AlertApiErrors")

    item = items[0]
    thing, bucket, key = item.get(ALERTS_TABLE_PARTITION_KEY), item.get("bucket"), item.get("key")
    version = item.get("version_id") or None
    # Sign only what this API is for: an alert object of this very thing in the data bucket,
    # whatever the index says (the role's policy is the second line: alerts/* only).
    if bucket != data_bucket or parse_alert_key(key) != thing or not isinstance(version, (str, type(None))):
        if logger is not None:
            logger.error("index item does not point at an alert object",
                         extra={"caller": username, "alert_id": alert_id, "thing": thing})
        return Result(500, {"message": "internal error; no URL was issued"}, "AlertApiErrors")

    object_params = {"Bucket": bucket, "Key": key}
    if version is not None:
        object_params["VersionId"] = version
    url = s3.generate_presigned_url("get_object", Params=object_params, ExpiresIn=expires_in)
    try:
        # Audited before it is returned: if the record cannot be written, the URL is dropped.
        audit.record(
            audit_table,
            action="alert-trace.fetch",
            actor=username,
            target=thing,
            details={"alert_id": alert_id, "expires_in": expires_in},
            now=now,
            logger=logger,
        )
    except (ClientError, BotoCoreError):
        if logger is not None:
            logger.exception("could not audit a trace URL; none was issued",
                             extra={"caller": username, "alert_id": alert_id})
        return Result(500, {"message": "internal error; no URL was issued"}, "AlertApiErrors")
    return Result(200, {"id": alert_id, "url": url, "expires_in": expires_in}, "AlertTraceFetched")
