"""Alerts API: authorisation, listing (bounds, order, pages), trace URLs (what is signed, that it
works, what is audited), what is never returned or logged. All AWS calls go to moto; the
alerts are stored and indexed exactly as the alert processor does it (alerts.model)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import pytest
import requests
from moto import mock_aws

from alerts.api import handler, parameters, routes
from alerts.model import Alert, index_item
from shared.audit import iso_utc
from tests.helpers import (
    ALERTS_TABLE, AUDIT_TABLE, NOW, Clock, captured_logs, create_alerts_table, create_tables, scan,
)

DATA_BUCKET = "fleetwarden-test-data"
REGION = "eu-west-1"
THING, OTHER = "pump-7", "pump-8"

ANALYST = {"sub": "0b7e4a55-3f7d-4c6e-9a0f-1d2c3b4a5e6f", "cognito:username": "carol",
           "cognito:groups": "analysts", "email": "carol@example.com", "token_use": "id"}
ADMIN = {**ANALYST, "cognito:username": "alice", "cognito:groups": "admins"}
OPERATOR = {**ANALYST, "cognito:username": "mallory", "cognito:groups": "ops"}

# (thing, S3 event time); two alerts of THING share one millisecond.
SEED = [
    (THING, "2023-11-12T08:00:00.000Z"),
    (THING, "2023-11-13T09:30:00.250Z"),
    (THING, "2023-11-13T23:59:59.999Z"),
    (THING, "2023-11-14T00:00:00.000Z"),
    (THING, "2023-11-14T12:00:00.000Z"),
    (THING, "2023-11-14T12:00:00.000Z"),
    (THING, "2023-11-15T06:00:00.000Z"),
    (OTHER, "2023-11-13T10:00:00.000Z"),
    (OTHER, "2023-11-14T10:00:00.000Z"),
]
PUBLIC_FIELDS = {"id", "thing", "received_at", "code", "fw", "field_count"}


def store_alert(table, s3, thing: str, event_time: str, n: int, body: bytes | None = None) -> dict:
    """What the IoT rule and the alert processor do: the object in S3, its item in the index."""
    millis = event_time.replace("-", "").replace(":", "").replace(".", "")
    key = f"alerts/{thing}/{event_time[:4]}/{event_time[5:7]}/{event_time[8:10]}/{millis}-{n:04d}.json"
    fields = {str(i): i * 0.5 for i in range(n % 4)}
    document = {"header": {"fw": f"1.{n}.0", "code": 100 + n, "fields": fields},
                "trace": base64.b64encode(f"trace {n}".encode()).decode()}
    raw = body if body is not None else json.dumps(document).encode()
    version = s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=raw)["VersionId"]
    item = index_item(thing=thing, alert=Alert.model_validate(document), event_time=event_time,
                      bucket=DATA_BUCKET, key=key, version=version, size=len(raw))
    table.put_item(Item=item)
    return {**item, "raw": raw}


ENV = {
    "ALERTS_TABLE": ALERTS_TABLE,
    "AUDIT_TABLE": AUDIT_TABLE,
    "DATA_BUCKET": DATA_BUCKET,
    "TRACE_URL_SECONDS": "300",
    "ALERTS_READER_GROUP": "analysts",
    "ADMIN_GROUP": "admins",
    "AWS_REGION": REGION,
}


@pytest.fixture(scope="module")
def world():
    """moto with the alerts and audit tables, the versioned data bucket and SEED stored; built
    once per module (a fresh one per test made the suite 3x slower). Tests that change alerts
    do it to a thing of their own (`private_alert`)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        handler._dependencies.cache_clear()
        with mock_aws():
            dynamodb = boto3.resource("dynamodb")
            table = create_alerts_table(dynamodb)
            _, audit = create_tables(dynamodb)
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=DATA_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
            stored = [store_alert(table, s3, thing, at, n) for n, (thing, at) in enumerate(SEED)]
            yield SimpleNamespace(table=table, audit=audit, s3=s3, stored=stored)
        handler._dependencies.cache_clear()


@pytest.fixture
def aws(world):
    """The shared world with an empty audit trail."""
    for item in world.audit.scan(ConsistentRead=True)["Items"]:
        world.audit.delete_item(Key={"event_id": item["event_id"]})
    return world


@pytest.fixture
def reconfigure(monkeypatch):
    """Change the function's environment for one test (the handler rebuilds its clients)."""
    def apply(**env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        handler._dependencies.cache_clear()
    yield apply
    handler._dependencies.cache_clear()


def private_alert(aws, thing: str, n: int = 99) -> dict:
    """A fresh alert of a thing no other test reads: free to change."""
    return store_alert(aws.table, aws.s3, thing, "2023-11-14T20:00:00.000Z", n)


@pytest.fixture
def logs():
    with captured_logs(handler.logger) as buffer:
        yield buffer


def ids(aws, thing: str = THING) -> list[str]:
    """The seeded alert ids of a thing, newest first."""
    return sorted((s["alert_id"] for s in aws.stored if s["thing"] == thing), reverse=True)


def stored(aws, alert_id: str) -> dict:
    return next(s for s in aws.stored if s["alert_id"] == alert_id)


def api_event(resource: str = "/alerts", method: str = "GET", query: dict | None = None,
              alert_id: str | None = None, claims: dict | None = None) -> dict:
    """An API Gateway REST proxy event behind a Cognito user-pool authoriser."""
    path = resource.replace("{id}", quote(alert_id, safe="")) if alert_id is not None else resource
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Accept": "application/json", "Authorization": "eyJraWQiOi...",
                    "Host": "abc123.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"id": alert_id} if alert_id is not None else None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "FleetAnalyst/2.1"},
            "authorizer": {"claims": ANALYST if claims is None else claims},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def trace_event(alert_id: str, **kwargs) -> dict:
    return api_event(resource="/alerts/{id}/trace", alert_id=alert_id, **kwargs)


def call(event, context) -> tuple[int, dict, dict]:
    response = handler.lambda_handler(event, context)
    headers = {name: ", ".join(values) for name, values in response["multiValueHeaders"].items()}
    return response["statusCode"], headers, json.loads(response["body"])


def list_all(context, query: dict) -> tuple[list[dict], int]:
    """Follow `next` to the end; returns every item and the number of pages."""
    items, pages, token = [], 0, None
    while True:
        status, _, body = call(api_event(query={**query, **({"next": token} if token else {})}), context)
        assert status == 200, body
        items += body["items"]
        pages += 1
        token = body["next"]
        if token is None:
            return items, pages
        assert pages < 20


# --- authorisation ------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["list", "trace"])
def test_non_member_is_refused_without_audit_or_url(aws, context, capsys, route):
    if route == "list":
        event = api_event(query={"thing": THING}, claims=OPERATOR)
    else:  # a real id: a member would get a URL for it
        event = trace_event(ids(aws)[0], claims=OPERATOR)
    status, headers, body = call(event, context)
    assert status == 403 and set(body) == {"message"} and "analysts" in body["message"]
    assert headers["Cache-Control"] == "no-store"
    assert scan(aws.audit) == []
    assert '"AlertRequestsForbidden"' in capsys.readouterr().out


@pytest.mark.parametrize("claims", [{}, {"cognito:groups": "analysts"}, "not-claims"])
def test_caller_without_identity_is_refused(aws, context, claims):
    for event in (api_event(query={"thing": THING}, claims=claims), trace_event(ids(aws)[0], claims=claims)):
        assert call(event, context)[0] == 403
    assert scan(aws.audit) == []


def test_missing_authoriser_context_is_403(aws, context):
    for event in (api_event(query={"thing": THING}), trace_event(ids(aws)[0])):
        del event["requestContext"]["authorizer"]
        status, _, body = call(event, context)
        assert status == 403 and "url" not in body
    assert scan(aws.audit) == []


@pytest.mark.parametrize("groups,allowed", [
    ("analysts", True), ("admins", True), ("[ops analysts]", True), ("ops,admins", True),
    ("analysts-readonly", False), ("analyst", False), ("ops", False), ("", False),
])
def test_only_the_exact_groups_may_read(aws, context, groups, allowed):
    status = call(api_event(query={"thing": THING}, claims={**ANALYST, "cognito:groups": groups}), context)[0]
    assert (status == 200) is allowed and status in (200, 403)


def test_groups_come_from_the_environment(aws, context, reconfigure):
    reconfigure(ALERTS_READER_GROUP="fleet-analysts")
    assert call(api_event(query={"thing": THING}), context)[0] == 403
    assert call(api_event(query={"thing": THING}, claims={**ANALYST, "cognito:groups": "fleet-analysts"}),
                context)[0] == 200


# --- GET /alerts --------------------------------------------------------------------------------

def test_list_is_newest_first_for_one_thing_and_shows_only_the_summary(aws, context):
    status, headers, body = call(api_event(query={"thing": THING}), context)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert body["next"] is None
    assert [item["id"] for item in body["items"]] == ids(aws) and len(ids(aws)) == 7
    assert all(set(item) == PUBLIC_FIELDS and item["thing"] == THING for item in body["items"])
    newest = next(s for s in aws.stored if s["alert_id"] == ids(aws)[0])
    assert body["items"][0] == {
        "id": newest["alert_id"], "thing": THING, "received_at": "2023-11-15T06:00:00.000Z",
        "code": newest["code"], "fw": newest["fw"], "field_count": newest["field_count"],
    }
    text = json.dumps(body)
    assert DATA_BUCKET not in text and "alerts/" not in text and "version" not in text


@pytest.mark.parametrize("query,expected", [
    # both bounds inclusive, to the millisecond (and both alerts in the same millisecond)
    ({"from": "2023-11-13T09:30:00.250Z", "to": "2023-11-14T12:00:00.000Z"}, slice(1, 6)),
    # the same instants written with offsets and fewer digits
    ({"from": "2023-11-13T10:30:00.25+01:00", "to": "2023-11-14T07:00:00-05:00"}, slice(1, 6)),
    # one millisecond inside each end excludes the end alerts
    ({"from": "2023-11-13T09:30:00.251Z", "to": "2023-11-14T11:59:59.999Z"}, slice(2, 4)),
    # sub-millisecond bounds round inwards: .2501 starts after .250, .0009 ends at .000
    ({"from": "2023-11-13T09:30:00.2501Z", "to": "2023-11-14T00:00:00.0009Z"}, slice(2, 4)),
    ({"from": "2023-11-14T00:00:00Z"}, slice(3, 7)),
    ({"to": "2023-11-13T23:59:59.999Z"}, slice(0, 3)),
    ({"from": "2023-11-14T12:00:00Z", "to": "2023-11-14T12:00:00Z"}, slice(4, 6)),
    ({"from": "2023-11-16T00:00:00Z"}, slice(0, 0)),
    # a '+' offset that arrived as a space
    ({"from": "2023-11-13T09:30:00.250 00:00", "to": "2023-11-14T12:00:00 00:00"}, slice(1, 6)),
])
def test_list_between_from_and_to(aws, context, query, expected):
    oldest_first = sorted(ids(aws))
    status, _, body = call(api_event(query={"thing": THING, **query}), context)
    assert status == 200, body
    assert [item["id"] for item in body["items"]] == sorted(oldest_first[expected], reverse=True)


@pytest.mark.parametrize("query", [
    {"thing": THING},
    {"thing": THING, "from": "2023-11-13T00:00:00Z", "to": "2023-11-14T23:59:59Z"},
    {"thing": OTHER},
])
@pytest.mark.parametrize("limit", ["1", "2", "3", "7", "100"])
def test_pages_return_every_item_exactly_once_newest_first(aws, context, query, limit):
    _, _, whole = call(api_event(query=query), context)
    expected = [item["id"] for item in whole["items"]]
    items, pages = list_all(context, {**query, "limit": limit})
    assert [item["id"] for item in items] == expected
    assert pages == max(1, -(-len(expected) // int(limit)))  # no trailing empty page


def test_limit_3_pages(aws, context):
    status, _, first = call(api_event(query={"thing": THING, "limit": "3"}), context)
    assert status == 200 and len(first["items"]) == 3 and first["next"]
    second = call(api_event(query={"thing": THING, "limit": "3", "next": first["next"]}), context)[2]
    third = call(api_event(query={"thing": THING, "limit": "3", "next": second["next"]}), context)[2]
    assert [len(page["items"]) for page in (first, second, third)] == [3, 3, 1] and third["next"] is None
    assert [item["id"] for page in (first, second, third) for item in page["items"]] == ids(aws)
    assert set(first["next"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _token(payload) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_next_for_another_thing_or_outside_the_range_is_400(aws, context):
    other_page = call(api_event(query={"thing": OTHER, "limit": "1"}), context)[2]
    status, _, body = call(api_event(query={"thing": THING, "next": other_page["next"]}), context)
    assert status == 400 and "next" in body["message"]

    page = call(api_event(query={"thing": THING, "limit": "1"}), context)[2]  # points at the newest
    narrowed = {"thing": THING, "to": "2023-11-14T00:00:00Z", "next": page["next"]}
    assert call(api_event(query=narrowed), context)[0] == 400


@pytest.mark.parametrize("token", [
    "garbage!", "%%%", "a", "abc=", "eyJ0aGluZyI6", "x" * 600,
    _token(b"\xff\xfe not utf-8"),
    _token(b"not json"),
    _token([THING, "2023-11-14T12:00:00.000Z#0123456789ab"]),
    _token({"thing": THING}),
    _token({"thing": THING, "alert_id": "2023-11-14T12:00:00.000Z#0123456789ab", "extra": 1}),
    _token({"thing": OTHER, "alert_id": "2023-11-14T12:00:00.000Z#0123456789ab"}),
    _token({"thing": THING, "alert_id": 5}),
    _token({"thing": THING, "alert_id": "zzz"}),
    _token({"thing": THING, "alert_id": {"S": "2023-11-14T12:00:00.000Z#0123456789ab"}}),
    _token({"thing": THING, "alert_id": "2023-11-14T12:00:00.000Z#0123456789ab\n"}),
])
def test_tampered_or_garbage_next_is_400(aws, context, token):
    status, _, body = call(api_event(query={"thing": THING, "next": token}), context)
    assert status == 400 and set(body) == {"message"}


def test_a_forged_but_well_formed_next_only_skips_within_the_thing(aws, context):
    """The token is not signed: it can only name a start point inside the caller's own query."""
    forged = _token({"alert_id": ids(aws)[2], "thing": THING})
    status, _, body = call(api_event(query={"thing": THING, "next": forged}), context)
    assert status == 200 and [item["id"] for item in body["items"]] == ids(aws)[3:]


BAD_LIST_QUERIES = {
    "no query": None,
    "no thing": {"limit": "5"},
    "empty thing": {"thing": ""},
    "thing with space": {"thing": "pump 7"},
    "thing with slash": {"thing": "pump/7"},
    "thing with newline": {"thing": "pump-7\n"},
    "thing non-ascii": {"thing": "pümp-7"},
    "thing too long": {"thing": "p" * 129},
    "from not a date": {"thing": THING, "from": "yesterday"},
    "from date only": {"thing": THING, "from": "2023-11-14"},
    "from without offset": {"thing": THING, "from": "2023-11-14T10:00:00"},
    "from impossible": {"thing": THING, "from": "2023-02-30T10:00:00Z"},
    "to impossible hour": {"thing": THING, "to": "2023-11-14T25:00:00Z"},
    "to too long": {"thing": THING, "to": "2023-11-14T10:00:00" + "0" * 60 + "Z"},
    "from epoch": {"thing": THING, "from": "1700000000"},
    "from after to": {"thing": THING, "from": "2023-11-15T00:00:00Z", "to": "2023-11-14T00:00:00Z"},
    "from overflows": {"thing": THING, "from": "0001-01-01T00:30:00+01:00"},
    "limit zero": {"thing": THING, "limit": "0"},
    "limit 101": {"thing": THING, "limit": "101"},
    "limit negative": {"thing": THING, "limit": "-1"},
    "limit text": {"thing": THING, "limit": "ten"},
    "limit float": {"thing": THING, "limit": "5.0"},
    "limit padded": {"thing": THING, "limit": " 5"},
    "limit huge": {"thing": THING, "limit": "9" * 40},
    "unknown parameter": {"thing": THING, "form": "2023-11-14T00:00:00Z"},
    "code negative": {"thing": THING, "code": "-1"},
    "code text": {"thing": THING, "code": "E42"},
    "code above the schema's maximum": {"thing": THING, "code": str(2**31)},
    "code padded": {"thing": THING, "code": " 104"},
}


@pytest.mark.parametrize("query", BAD_LIST_QUERIES.values(), ids=BAD_LIST_QUERIES.keys())
def test_bad_list_query_is_400(aws, context, query):
    status, headers, body = call(api_event(query=query), context)
    assert status == 400 and set(body) == {"message"} and body["message"]
    assert headers["Cache-Control"] == "no-store"


def test_code_filter_returns_only_that_code_across_pages(aws, context):
    """`code` is a filter after the key condition: pages may come back short or empty, but
    following `next` yields exactly the alerts with that code, newest first."""
    wanted = [s for s in aws.stored if s["thing"] == THING and s["code"] == 104]
    assert len(wanted) == 1
    for limit in ("1", "2", "50"):
        items, pages = list_all(context, {"thing": THING, "code": "104", "limit": limit})
        assert [item["id"] for item in items] == [wanted[0]["alert_id"]]
        assert all(item["code"] == 104 for item in items)
    # Each request evaluates limit + 1 = 2 of THING's 7 alerts: 4 pages, most of them empty.
    assert list_all(context, {"thing": THING, "code": "104", "limit": "1"})[1] == 4
    assert list_all(context, {"thing": THING, "code": "999"})[0] == []
    other = list_all(context, {"thing": OTHER, "code": "104"})[0]
    assert other == []  # the code of one thing's alert never shows under another


def test_repeated_parameter_is_400(aws, context):
    event = api_event(query={"thing": THING})
    event["multiValueQueryStringParameters"] = {"thing": [OTHER, THING]}
    assert call(event, context)[0] == 400


# --- GET /alerts/{id}/trace ---------------------------------------------------------------------

def test_trace_url_is_signed_for_that_object_version_and_works(aws, context, logs, capsys):
    alert = private_alert(aws, "trace-versioned")
    # The object is overwritten later: the URL must still fetch the indexed version.
    aws.s3.put_object(Bucket=DATA_BUCKET, Key=alert["key"], Body=b"a later version")

    status, headers, body = call(trace_event(alert["alert_id"]), context)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert set(body) == {"id", "url", "expires_in", "size"}
    assert body["id"] == alert["alert_id"] and body["expires_in"] == 300
    assert body["size"] == len(alert["raw"])  # the indexed version's bytes, not the later version's

    url = urlsplit(body["url"])
    query = parse_qs(url.query)
    assert (url.scheme, url.hostname) == ("https", f"{DATA_BUCKET}.s3.{REGION}.amazonaws.com")
    assert url.path == "/" + quote(alert["key"])
    assert query["versionId"] == [alert["version_id"]]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["300"] and int(query["X-Amz-Expires"][0]) <= 300
    assert query["X-Amz-Credential"][0].endswith(f"/{REGION}/s3/aws4_request")

    # moto serves presigned URLs fetched with `requests` (urllib is not intercepted).
    fetched = requests.get(body["url"], timeout=5)
    assert fetched.status_code == 200 and fetched.content == alert["raw"]

    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == (
        "alert-trace.fetch", "carol", alert["thing"])
    assert record["details"] == {"alert_id": alert["alert_id"], "expires_in": 300}

    output = capsys.readouterr()
    captured = logs.getvalue() + output.out + output.err
    assert '"AlertTraceFetched"' in output.out  # the EMF metric
    assert '"caller":"carol"' in logs.getvalue().replace(" ", "")
    assert "X-Amz-Signature" not in captured and query["X-Amz-Signature"][0] not in captured
    assert body["url"] not in json.dumps(scan(aws.audit), default=str)


def test_trace_without_a_version_signs_the_key_only(aws, context):
    alert = private_alert(aws, "trace-unversioned")
    aws.table.update_item(Key={"thing": alert["thing"], "alert_id": alert["alert_id"]},
                          UpdateExpression="REMOVE version_id")
    status, _, body = call(trace_event(alert["alert_id"]), context)
    assert status == 200
    assert "versionId" not in parse_qs(urlsplit(body["url"]).query)
    assert requests.get(body["url"], timeout=5).content == alert["raw"]


def test_trace_for_an_admin_and_a_percent_encoded_id(aws, context):
    alert_id = ids(aws, OTHER)[0]
    status, _, body = call(trace_event(quote(alert_id, safe=""), claims=ADMIN), context)
    assert status == 200 and body["id"] == alert_id
    assert scan(aws.audit)[0]["actor"] == "alice" and scan(aws.audit)[0]["target"] == OTHER


def test_trace_lifetime_comes_from_the_environment(aws, context, reconfigure):
    reconfigure(TRACE_URL_SECONDS="60")
    _, _, body = call(trace_event(ids(aws)[0]), context)
    assert body["expires_in"] == 60 and parse_qs(urlsplit(body["url"]).query)["X-Amz-Expires"] == ["60"]


@pytest.mark.parametrize("seconds", ["0", "301", "3600", "-5", "five"])
def test_trace_lifetime_outside_1_to_300_is_a_500(aws, context, reconfigure, seconds):
    reconfigure(TRACE_URL_SECONDS=seconds)
    status, _, body = call(trace_event(ids(aws)[0]), context)
    assert status == 500 and "url" not in body
    assert scan(aws.audit) == []


def test_unknown_alert_is_404(aws, context):
    status, _, body = call(trace_event("2023-11-14T12:00:00.000Z#0123456789ab"), context)
    assert status == 404 and set(body) == {"message"}
    assert scan(aws.audit) == []


@pytest.mark.parametrize("alert_id", [
    "", "abc", "2023-11-14T12:00:00.000Z", "2023-11-14T12:00:00Z#0123456789ab",
    "2023-11-14T12:00:00.000Z#0123456789AB", "2023-11-14T12:00:00.000Z#0123456789abc",
    "2023-11-14T12:00:00.000Z#0123456789a", "2023-11-14T12:00:00.000Z#0123456789ab\n",
    "2023-11-14T12:00:00.000Z%230123456789zz", "2023-11-14T12:00:00.000Z%2523" + "0" * 12,
    "../../etc/passwd", "x" * 300,
])
def test_malformed_alert_id_is_400(aws, context, alert_id):
    status, _, body = call(trace_event(alert_id), context)
    assert status == 400 and set(body) == {"message"}
    assert scan(aws.audit) == []


def test_missing_path_parameter_is_400(aws, context):
    event = trace_event(ids(aws)[0])
    event["pathParameters"] = None
    assert call(event, context)[0] == 400


def test_audit_failure_is_500_and_no_url(aws, context, logs, capsys, reconfigure):
    reconfigure(AUDIT_TABLE="fleetwarden-test-no-such-audit-table")
    status, headers, body = call(trace_event(ids(aws)[0]), context)
    assert status == 500 and set(body) == {"message"} and "no URL" in body["message"]
    assert headers["Cache-Control"] == "no-store"
    output = capsys.readouterr()
    assert "could not audit" in logs.getvalue()
    assert "X-Amz-Signature" not in logs.getvalue() + output.out + output.err
    assert '"AlertApiErrors"' in output.out


@pytest.mark.parametrize("change", [
    {"bucket": "someone-elses-bucket"},
    {"key": "quarantine/invalid-alert/alerts/elsewhere/2023/11/14/x.json"},
    {"key": f"alerts/{OTHER}/2023/11/14/20231114T200000000Z-0099.json"},  # another thing's object
    {"key": "alerts/elsewhere/../secrets.json"},
    {"key": "alerts/elsewhere/2023/11/14/x.json\n"},
    {"version_id": 7},
])
def test_index_item_pointing_elsewhere_gets_no_url(aws, context, change):
    alert = private_alert(aws, "elsewhere")
    item = {k: v for k, v in alert.items() if k != "raw"}
    aws.table.put_item(Item={**item, **change})
    status, _, body = call(trace_event(alert["alert_id"]), context)
    assert status == 500 and "url" not in body
    assert scan(aws.audit) == []


def test_duplicate_alert_id_in_the_index_gets_no_url(aws, context):
    alert = private_alert(aws, "dup-a")
    aws.table.put_item(Item={**{k: v for k, v in alert.items() if k != "raw"}, "thing": "dup-b"})
    status, _, body = call(trace_event(alert["alert_id"]), context)
    assert status == 500 and "url" not in body


# --- routing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("resource", ["/alerts/{id}", "/things", "/", "/alerts/{id}/trace/x"])
def test_unknown_route_is_404(aws, context, resource):
    status, _, body = call(api_event(resource=resource), context)
    assert status == 404 and set(body) == {"message"}


@pytest.mark.parametrize("resource", ["/alerts", "/alerts/{id}/trace"])
@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_wrong_method_is_405(aws, context, resource, method):
    status, headers, _ = call(api_event(resource=resource, method=method), context)
    assert status == 405 and headers["Allow"] == "GET"
    assert scan(aws.audit) == []


def test_404_and_405_are_no_store_json_and_counted(aws, context, capsys):
    for event, status in ((api_event(resource="/things"), 404), (api_event(method="DELETE"), 405)):
        got, headers, body = call(event, context)
        assert got == status and set(body) == {"message"}
        assert headers["Cache-Control"] == "no-store" and headers["Content-Type"] == "application/json"
        assert '"AlertRequestsInvalid"' in capsys.readouterr().out


def test_routes_follow_the_resource_not_the_path(aws, context):
    """A custom domain's base path (and percent-escapes) are in `path`; the resource is what API
    Gateway matched."""
    event = api_event(query={"thing": THING})
    event["path"] = "/analytics/alerts"
    assert call(event, context)[0] == 200
    event = trace_event(ids(aws)[0])
    event["path"] = "/analytics" + event["path"]
    assert call(event, context)[0] == 200


def test_unexpected_error_is_a_generic_500(aws, context, logs, capsys, monkeypatch):
    secret = "https://fleetwarden-test-data.s3.amazonaws.com/x?X-Amz-Signature=deadbeef"

    def broken(**kwargs):
        raise RuntimeError(f"boom {secret}")

    monkeypatch.setattr(handler, "list_alerts", broken)
    status, headers, body = call(api_event(query={"thing": THING}), context)
    assert (status, body) == (500, {"message": "internal error"})
    assert headers["Cache-Control"] == "no-store"
    output = capsys.readouterr().out
    assert '"AlertApiErrors"' in output and secret not in json.dumps(body)
    assert "alerts request failed" in logs.getvalue()


def test_log_lines_carry_the_caller(aws, context, logs):
    call(api_event(query={"thing": THING}), context)
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    answered = [line for line in lines if line["message"] == "alerts request answered"]
    assert answered and answered[-1]["caller"] == "carol" and answered[-1]["status"] == 200
    assert answered[-1]["route"] == "GET /alerts"


# --- the logic, without the handler -------------------------------------------------------------

@pytest.mark.parametrize("text,round_up,expected", [
    ("2023-11-14T22:13:20Z", False, "2023-11-14T22:13:20.000Z"),
    ("2023-11-14T22:13:20.5+00:00", False, "2023-11-14T22:13:20.500Z"),
    ("2023-11-14T23:13:20.123456+01:00", False, "2023-11-14T22:13:20.123Z"),
    ("2023-11-14T23:13:20.123456+01:00", True, "2023-11-14T22:13:20.124Z"),
    ("2023-11-14T22:13:20.123Z", True, "2023-11-14T22:13:20.123Z"),
    ("2023-11-14t22:13:20z", False, "2023-11-14T22:13:20.000Z"),
    ("2023-11-14 22:13:20Z", False, "2023-11-14T22:13:20.000Z"),
    ("20231114T221320Z", False, "2023-11-14T22:13:20.000Z"),
    ("2023-11-14T17:13:20-05:00", False, "2023-11-14T22:13:20.000Z"),
    ("2023-11-14T22:13:20 01:00", False, "2023-11-14T21:13:20.000Z"),
    ("0999-01-01T00:00:00Z", False, "0999-01-01T00:00:00.000Z"),
])
def test_normalise_instant(text, round_up, expected):
    assert parameters.normalise_instant(text, "from", round_up=round_up) == expected


def test_page_tokens_round_trip():
    key = {"thing": THING, "alert_id": "2023-11-14T12:00:00.000Z#0123456789ab"}
    assert parameters.decode_next(parameters.encode_next(key), THING, None, None) == key
    assert parameters.decode_next(parameters.encode_next(key), THING, "2023-11-14T12:00:00.000Z",
                           "2023-11-14T12:00:00.000Z#~") == key


def test_fetch_trace_with_an_injected_clock(aws, context):
    deps = handler._dependencies()
    body = routes.fetch_trace(claims=ANALYST, alert_id=ids(aws)[0], alerts_table=aws.table,
                              audit_table=aws.audit, s3=deps["s3"], data_bucket=DATA_BUCKET, expires_in=120,
                              reader_group="analysts", admin_group="admins", now=Clock())
    assert (body["id"], body["expires_in"]) == (ids(aws)[0], 120)
    assert scan(aws.audit)[0]["at"] == iso_utc(NOW) == "2023-11-14T22:13:20.000Z"
