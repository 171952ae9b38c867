"""The alerts API's two reads, for members of the readers or admins group: plain functions over
an injected alerts table, audit table, S3 client and clock, so every rule is tested without AWS.
Each returns the body of its success and raises ApiError for anything else.

* `list_alerts`: one page of a thing's alerts, newest first, optionally between two instants.
  Only the index's summary fields leave the table; the object's bucket and key never do.
* `fetch_trace`: a presigned GET URL (at most 300 s) for one alert's stored object. The URL is
  a bearer credential for that object version, so it is audited before it is returned, and it
  is never logged.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Callable, Mapping

from alerts.api.parameters import UPPER_SUFFIX, encode_next, parse_alert_id, parse_list_query
from alerts.model import ALERT_ID_INDEX, ALERTS_TABLE_PARTITION_KEY, ALERTS_TABLE_SORT_KEY, parse_alert_key
from shared import audit
from shared.api import ApiError
from shared.operators import caller

ERRORS = "AlertApiErrors"  # the outcome metric of a 500
MAX_TRACE_URL_SECONDS = 300
# The only attributes a list query reads: the bucket, key and version stay in the table.
_PROJECTION = {"#t": "thing", "#a": "alert_id", "#r": "received_at", "#c": "code", "#f": "fw",
               "#n": "field_count"}
_quiet = logging.getLogger(__name__)  # the handler passes its Powertools logger


def no_url() -> ApiError:
    return ApiError(500, "internal error; no URL was issued", ERRORS)


def authorised_caller(claims: Any, reader_group: str, admin_group: str, logger: Any = _quiet) -> str:
    """The caller's username if they are in the readers or the admins group, else a 403."""
    username, groups = caller(claims)
    if username is not None and {reader_group, admin_group} & groups:
        return username
    logger.warning("alerts request refused", extra={
        "caller": username or "unknown",
        "groups": ",".join(sorted(groups))[:256],  # caller-controlled: bounded
    })
    raise ApiError(403, f"only members of {reader_group} or {admin_group} may read alerts",
                   "AlertRequestsForbidden")


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
    logger: Any = _quiet,
) -> dict[str, Any]:
    """One page. The page token is this API's own contract with its client (one Query per
    request, the client asks for the next), so there is no boto3 paginator here."""
    from boto3.dynamodb.conditions import Attr, Key  # boto3 loads with the first request's clients

    # Authorise before validating: outsiders learn nothing about parameters.
    username = authorised_caller(claims, reader_group, admin_group, logger)
    query = parse_list_query(params, multi_params)
    if query.lower is not None and query.upper is not None and query.lower > query.upper:
        return {"items": [], "next": None}  # DynamoDB would refuse the range

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
    if query.code is not None:
        # A filter, not a key: DynamoDB applies Limit before it, so a page may hold fewer than
        # `limit` items (even none) and still have a next token; the client follows it.
        request["FilterExpression"] = Attr("code").eq(query.code)
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
    logger.info("alerts listed", extra={
        "caller": username, "thing": query.thing, "from": query.lower,
        "to": query.upper.removesuffix(UPPER_SUFFIX) if query.upper else None,
        "code": query.code, "count": len(items), "more": next_token is not None,
    })
    return {"items": [public_alert(item) for item in items], "next": next_token}


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
    logger: Any = _quiet,
) -> dict[str, Any]:
    from boto3.dynamodb.conditions import Key

    username = authorised_caller(claims, reader_group, admin_group, logger)
    alert_id = parse_alert_id(alert_id)
    if not 1 <= expires_in <= MAX_TRACE_URL_SECONDS:
        raise ValueError(f"expires_in must be from 1 to {MAX_TRACE_URL_SECONDS} seconds")

    # The index is eventually consistent: an alert indexed a moment ago may still be a 404.
    items = alerts_table.query(
        IndexName=ALERT_ID_INDEX,
        KeyConditionExpression=Key(ALERTS_TABLE_SORT_KEY).eq(alert_id),
        Limit=2,
    ).get("Items", [])
    if not items:
        logger.info("alert not found", extra={"caller": username, "alert_id": alert_id})
        raise ApiError(404, "alert not found", "AlertTraceNotFound")
    if len(items) > 1:  # the id embeds a digest of bucket/key/version: this is a corrupt index
        logger.error("alert id is not unique", extra={"caller": username, "alert_id": alert_id})
        raise no_url()

    item = items[0]
    thing, bucket, key = item.get(ALERTS_TABLE_PARTITION_KEY), item.get("bucket"), item.get("key")
    version = item.get("version_id") or None
    # Sign only what this API is for: an alert object of this very thing in the data bucket,
    # whatever the index says (the role's policy is the second line: alerts/* only).
    if bucket != data_bucket or parse_alert_key(key) != thing or not isinstance(version, (str, type(None))):
        logger.error("index item does not point at an alert object",
                     extra={"caller": username, "alert_id": alert_id, "thing": thing})
        raise no_url()

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
    except Exception:  # noqa: BLE001 - whatever stopped the record, no URL leaves unaudited
        logger.exception("could not audit a trace URL; none was issued",
                         extra={"caller": username, "alert_id": alert_id})
        raise no_url() from None
    answer = {"id": alert_id, "url": url, "expires_in": expires_in}
    if isinstance(item.get("size"), (int, Decimal)) and not isinstance(item.get("size"), bool):
        answer["size"] = int(item["size"])  # the bytes the processor read: the download is checked against it
    return answer
