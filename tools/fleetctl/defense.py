"""Incident listing and manual containment: the operator side of the defence pipeline.

`list_incidents` reads the incidents table (partition key `violation_id`, GSI `by_thing` on
`thing` + `received_at`); `device_action` asks the device-admin Lambda function to quarantine or
reinstate one thing. Both take a `clients` factory (service name -> boto3 client) so tests can hand
in moto- or Stubber-backed clients; by default `client_factory(region)` makes real ones.
"""

from __future__ import annotations

import base64
import heapq
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from lambdas.shared.topics import THING_NAME

from .errors import InputError, RemoteError
from .times import parse_instant

Clients = Callable[[str], Any]

THING_PATTERN = THING_NAME  # the rule every backend function checks (lambdas/shared/topics.py)
MAX_REASON = 256
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
THING_INDEX = "by_thing"
ACTIONS = ("quarantine", "reinstate")
PAST_TENSE = {"quarantine": "quarantined", "reinstate": "reinstated"}
LAMBDA_READ_TIMEOUT = 300  # seconds; an admin action touches a handful of IoT APIs, far below this

_TABLE = re.compile(r"^(arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:\d{12}:table/)?[A-Za-z0-9_.-]{3,255}$")
# Name, partial ARN or full ARN, optionally with a version or alias (the Invoke API's own rule).
_FUNCTION = re.compile(r"^(arn:aws[a-zA-Z-]*:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d:)?(\d{12}:)?(function:)?"
                       r"[a-zA-Z0-9_.-]+(:(\$LATEST|[a-zA-Z0-9_-]+))?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
_BAD_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
                    "UnrecognizedClientException", "InvalidSignatureException", "SignatureDoesNotMatch"}
_MAX_DETAIL = 300


# --- AWS clients and errors --------------------------------------------------------------------------

def client_factory(region: str | None = None) -> Clients:
    """service name -> boto3 client, one session and one client per service, made on first use.

    The region is boto3's usual resolution (AWS_REGION, AWS_DEFAULT_REGION, profile) unless given.
    """
    validate_region(region)
    made: dict[str, Any] = {}

    def clients(service: str) -> Any:
        if service not in made:
            import boto3  # imported here: the PKI commands should not pay for boto3 on start-up
            from botocore.config import Config

            if "session" not in made:
                made["session"] = boto3.session.Session(region_name=region)
            config = Config(user_agent_extra="fleetctl", retries={"mode": "standard"})
            if service == "lambda":
                # Never re-send an admin action on our own: a timed-out call may still have run.
                config = config.merge(Config(read_timeout=LAMBDA_READ_TIMEOUT,
                                             retries={"mode": "standard", "total_max_attempts": 1}))
            made[service] = made["session"].client(service, config=config)
        return made[service]

    return clients


def _detail(text: Any) -> str:
    return " ".join(str(text).split())[:_MAX_DETAIL]


@contextmanager
def aws_errors(what: str, missing: str | None = None) -> Iterator[None]:
    """Turn boto3/botocore failures while doing `what` into InputError/RemoteError with one clear line."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), _detail(error.get("Message", ""))
        if code in _DENIED:
            raise RemoteError(f"not authorised to {what}: {message or code}") from None
        if code in _BAD_CREDENTIALS:
            raise RemoteError(f"AWS rejected your credentials ({code}) while trying to {what}: {message}"
                              " - refresh them (e.g. aws sso login) and retry") from None
        if code == "ResourceNotFoundException" and missing:
            raise RemoteError(f"{missing} not found: {message or code}") from None
        raise RemoteError(f"cannot {what}: {code}: {message}") from None
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise RemoteError(f"no usable AWS credentials ({_detail(exc)}): configure a profile (AWS_PROFILE) "
                          "or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
    except NoRegionError:
        raise InputError("no AWS region: pass --region or set AWS_REGION") from None
    except ProfileNotFound as exc:
        raise InputError(_detail(exc)) from None
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        raise RemoteError(f"cannot reach AWS to {what}: {_detail(exc)}") from None
    except ReadTimeoutError as exc:
        raise RemoteError(f"no answer from AWS in time to {what} (it may still have happened): "
                          f"{_detail(exc)}") from None
    except BotoCoreError as exc:
        raise RemoteError(f"cannot {what}: {_detail(exc)}") from None


# --- input checks --------------------------------------------------------------------------------------

def validate_thing(thing: str) -> str:
    if not isinstance(thing, str) or not THING_PATTERN.fullmatch(thing):
        raise InputError(f"invalid thing name {thing!r}: expected 1-128 of A-Z a-z 0-9 : _ -")
    return thing


def validate_region(region: str | None) -> str | None:
    if region is not None and not _REGION.match(region):
        raise InputError(f"invalid --region {region!r}: expected e.g. eu-west-1")
    return region


def validate_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def validate_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON:
        raise InputError(f"--reason is {len(reason)} characters; at most {MAX_REASON} are allowed")
    if any(not ch.isprintable() for ch in reason):
        raise InputError("--reason must be one line of printable text (no newlines or control characters)")
    return reason


def validate_table(table: str) -> str:
    if not _TABLE.match(table):
        raise InputError(f"invalid --table {table!r}: expected a DynamoDB table name or ARN")
    return table


def validate_function(function: str) -> str:
    if len(function) > 170 or not _FUNCTION.match(function):
        raise InputError(f"invalid --function {function!r}: expected a Lambda function name or ARN")
    return function


def since_key(since: str) -> str:
    """ISO-8601 (date, or date-time with or without an offset; naive means UTC) -> UTC comparison key.

    The key is `YYYY-MM-DDTHH:MM:SS[.ffffff]` with no zone suffix: it sorts at or before every
    stored `received_at` of the same instant whatever its suffix (`Z`, `.000Z`, `+00:00`).
    """
    moment = parse_instant(since, "--since")
    key = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
           f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}")
    return key + f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else key


# --- incidents list ------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A deserialised DynamoDB value as plain JSON-able Python."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=str)
    if isinstance(value, (bytes, bytearray)) or type(value).__name__ == "Binary":
        return base64.b64encode(bytes(value.value if hasattr(value, "value") else value)).decode()
    return value


def _newest_first(item: dict) -> tuple[str, str]:
    received, vid = item.get("received_at"), item.get("violation_id")
    return (received if isinstance(received, str) else "", vid if isinstance(vid, str) else "")


def list_incidents(table: str, *, thing: str | None = None, since: str | None = None,
                   limit: int = DEFAULT_LIMIT, region: str | None = None,
                   clients: Clients | None = None, page_size: int | None = None) -> list[dict]:
    """The `limit` newest incidents (all, or one thing's), newest first, optionally from `since` on.

    With a thing: a Query on the `by_thing` index, newest first, stopping once `limit` are read.
    Without: a Scan of the whole table (an arbitrary first page is not "the newest"), keeping only
    the `limit` newest in memory. `page_size` caps items per request (tests use it to force paging).
    """
    validate_table(table)
    validate_limit(limit)
    if thing is not None:
        validate_thing(thing)
    since = since_key(since) if since is not None else None
    validate_region(region)
    clients = clients or client_factory(region)
    with aws_errors(f"read table {table}", missing=f"table {table}"):
        dynamodb = clients("dynamodb")
        if thing is not None:
            raw = _query_thing(dynamodb, table, thing, since, limit, page_size)
        else:
            raw = heapq.nlargest(limit, _scan(dynamodb, table, since, page_size), key=_newest_first_raw)
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    items = [_plain({k: deserializer.deserialize(v) for k, v in item.items()}) for item in raw]
    return sorted(items, key=_newest_first, reverse=True)[:limit]


def _newest_first_raw(item: dict) -> tuple[str, str]:
    received, vid = item.get("received_at", {}), item.get("violation_id", {})
    return (received.get("S", ""), vid.get("S", ""))


def _scan(dynamodb, table: str, since: str | None, page_size: int | None) -> Iterator[dict]:
    request: dict[str, Any] = {"TableName": table}
    if since is not None:
        request.update(FilterExpression="received_at >= :since",
                       ExpressionAttributeValues={":since": {"S": since}})
    if page_size:
        request["Limit"] = page_size
    while True:
        page = dynamodb.scan(**request)
        yield from page.get("Items", [])
        if not page.get("LastEvaluatedKey"):
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _query_thing(dynamodb, table: str, thing: str, since: str | None, limit: int,
                 page_size: int | None) -> list[dict]:
    condition, values = "thing = :thing", {":thing": {"S": thing}}
    if since is not None:
        condition += " AND received_at >= :since"
        values[":since"] = {"S": since}
    request: dict[str, Any] = {"TableName": table, "IndexName": THING_INDEX, "ScanIndexForward": False,
                               "KeyConditionExpression": condition, "ExpressionAttributeValues": values}
    items: list[dict] = []
    while len(items) < limit:
        request["Limit"] = min(page_size or limit, limit - len(items))
        page = dynamodb.query(**request)
        items.extend(page.get("Items", []))
        if not page.get("LastEvaluatedKey"):
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items[:limit]


def steps_summary(steps: Any) -> str:
    """{"isolate": "done", "deactivate": "failed:..."} -> "1/2 done, 1 failed"."""
    if not isinstance(steps, dict) or not steps:
        return "-"
    outcomes = [str(v) for v in steps.values()]
    parts = [f"{sum(o == 'done' for o in outcomes)}/{len(outcomes)} done"]
    for kind in ("failed", "skipped"):
        count = sum(o.startswith(kind) for o in outcomes)
        if count:
            parts.append(f"{count} {kind}")
    return ", ".join(parts)


def _cell(value: Any) -> str:
    """One table cell: printable characters only (item text may come from a device's own reports)."""
    if value is None or value == "":
        return "-"
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


INCIDENT_COLUMNS = ("RECEIVED_AT", "THING", "BEHAVIOR", "EVENT_TYPE", "STATUS", "STEPS")


def incidents_table(items: list[dict]) -> str:
    if not items:
        return "no incidents"
    rows = [INCIDENT_COLUMNS] + [
        (_cell(i.get("received_at")), _cell(i.get("thing")), _cell(i.get("behavior")),
         _cell(i.get("event_type")), _cell(i.get("status")), steps_summary(i.get("steps")))
        for i in items
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(INCIDENT_COLUMNS) - 1)]
    return "\n".join(
        "  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]) for row in rows
    )


def incidents_json(items: list[dict]) -> str:
    return json.dumps(items, indent=2, sort_keys=True)


# --- device quarantine / reinstate -------------------------------------------------------------------

def device_action(action: str, thing: str, *, function: str, reason: str | None = None,
                  region: str | None = None, clients: Clients | None = None) -> dict:
    """Invoke the device-admin function for `action` on `thing`; its `{"ok": true, ...}` reply.

    Everything is validated before any AWS call. The actor sent is the caller's STS ARN: the
    function records it, while CloudTrail keeps the authoritative record of who invoked it.
    """
    if action not in ACTIONS:
        raise InputError(f"unknown device action {action!r}")
    validate_thing(thing)
    validate_function(function)
    reason = validate_reason(reason)
    validate_region(region)
    clients = clients or client_factory(region)
    with aws_errors("determine your identity (sts get-caller-identity)"):
        actor = clients("sts").get_caller_identity()["Arn"]
    payload = {"action": action, "thing": thing, "actor": actor, "reason": reason}
    with aws_errors(f"invoke {function}", missing=f"function {function}"):
        response = clients("lambda").invoke(FunctionName=function, InvocationType="RequestResponse",
                                            Payload=json.dumps(payload).encode())
        body = response["Payload"].read()
    return _device_reply(action, thing, function, response, body)


def _device_reply(action: str, thing: str, function: str, response: dict, body: bytes) -> dict:
    try:
        reply = json.loads(body or b"null")
    except ValueError:
        reply = None
    if response.get("FunctionError"):
        detail = ""
        if isinstance(reply, dict) and (reply.get("errorType") or reply.get("errorMessage")):
            parts = (reply.get("errorType"), reply.get("errorMessage"))
            detail = ": " + _detail(": ".join(str(p) for p in parts if p))
        raise RemoteError(f"{function} crashed ({response['FunctionError']}) during {action} of {thing}"
                          f"{detail}; the action may be partly done - check the thing and retry")
    if not isinstance(reply, dict):
        raise RemoteError(f"{function} returned a reply that is not a JSON object")
    if reply.get("ok") is not True:
        error = reply.get("error")
        message = f"{action} of {thing} failed: {_detail(error) if error else f'{function} gave no reason'}"
        if isinstance(reply.get("done"), dict) and reply["done"]:  # the function stopped part-way
            message += f"; done before it stopped: {_inline(reply['done'])}"
        if isinstance(reply.get("audit_event_ids"), list) and reply["audit_event_ids"]:
            message += f"; audit event ids: {_value(reply['audit_event_ids'])}"
        raise RemoteError(message)
    return reply


def _value(value: Any) -> str:
    """One summary value as short readable text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{_cell(k)}={_value(v)}" for k, v in value.items()) if value else "none"
    return _cell(value)


def _inline(summary: dict) -> str:
    parts = [f"{_cell(k)}={'[' + _value(v) + ']' if isinstance(v, (list, dict)) else _value(v)}"
             for k, v in summary.items() if k not in ("action", "thing")]
    return _detail(" ".join(parts)) or "nothing"


def _certificate_lines(label: str, ids: Any) -> list[str]:
    ids = ids if isinstance(ids, list) else ([] if ids is None else [ids])
    return [f"  {label}: {len(ids) if ids else 'none'}"] + [f"    {_cell(cert)}" for cert in ids]


def format_device_reply(action: str, thing: str, reply: dict) -> str:
    """The function's summary, one fact per line: certificate ids one per line, any warning last."""
    lines = [f"{PAST_TENSE.get(action, action)} {_cell(thing)}"]
    shown = {"ok", "thing", "action", "warning"}
    if action == "reinstate":
        lines += _certificate_lines("reactivated certificates", reply.get("reactivated"))
        lines += _certificate_lines("revoked certificates left alone (cannot be reactivated)",
                                    reply.get("revoked_left_alone"))
        shown |= {"reactivated", "revoked_left_alone"}
    lines += [f"  {_cell(key).replace('_', ' ')}: {_value(value)}"
              for key, value in reply.items() if key not in shown]
    if reply.get("warning"):
        lines.append(f"warning: {_value(reply['warning'])}")
    return "\n".join(lines)
