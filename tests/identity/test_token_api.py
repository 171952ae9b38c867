"""Token API: authorisation, validation, what is stored, what is returned, what is logged."""

from __future__ import annotations

import json

import pytest

from identity.provisioning_hook import handler as hook_handler
from identity.tokens import DEFAULT_SERIAL_PATTERN, hash_token, serial_pattern
from tests.helpers import NOW, scan
from tests.identity.test_provisioning_hook import hook_event
from identity.token_api import handler
from identity.token_api.issue import issue_token
from shared.api import ApiError
from shared.operators import caller, parse_groups

PATTERN = serial_pattern({"SERIAL_PATTERN": DEFAULT_SERIAL_PATTERN})
ADMIN = {"sub": "6f1c3c2e-0d4b-4a57-9a1e-6f9b1f0f2a11", "cognito:username": "alice",
         "cognito:groups": "admins", "email": "alice@example.com", "token_use": "id"}
OPERATOR = {**ADMIN, "cognito:username": "mallory", "cognito:groups": "ops"}


def api_event(body: str | None = '{"serial": "sensor-0001"}', claims: dict | None = None,
              method: str = "POST", resource: str = "/provisioning-tokens") -> dict:
    """An API Gateway REST proxy event behind a Cognito user-pool authoriser."""
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Authorization": "eyJraWQiOi..."},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/dev{resource}",
            "stage": "dev",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
            "authorizer": {"claims": ADMIN if claims is None else claims},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def call(event, context) -> tuple[int, dict, dict]:
    response = handler.lambda_handler(event, context)
    headers = {name: ", ".join(values) for name, values in response["multiValueHeaders"].items()}
    return response["statusCode"], headers, json.loads(response["body"])


def issue(aws, clock, claims=ADMIN, body='{"serial": "sensor-0001"}', ttl=900):
    return issue_token(claims=claims, body=body, tokens_table=aws.tokens, audit_table=aws.audit,
                       pattern=PATTERN, ttl_seconds=ttl, admin_group="admins", now=clock)


def refusal(aws, clock, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as refused:
        issue(aws, clock, **kwargs)
    return refused.value


# --- the logic, with a fixed clock -------------------------------------------------------------

def test_admin_gets_a_token_and_only_its_hash_is_stored(aws, clock):
    body = issue(aws, clock)
    token = body["token"]
    assert body == {"serial": "sensor-0001", "token": token, "expires_at": "2023-11-14T22:28:20Z"}

    [item] = scan(aws.tokens)
    assert item == {"token_hash": hash_token(token), "serial": "sensor-0001", "issued_by": "alice",
                    "issued_at": int(NOW), "expires_at": int(NOW) + 900}
    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == (
        "provisioning-token.issue", "alice", "sensor-0001")
    assert record["details"] == {"expires_at": int(NOW) + 900, "token_hash_prefix": hash_token(token)[:8]}
    assert token not in json.dumps(scan(aws.tokens) + scan(aws.audit), default=str)


def test_username_falls_back_to_sub(aws, clock):
    claims = {k: v for k, v in ADMIN.items() if k != "cognito:username"}
    assert issue(aws, clock, claims=claims)["token"]
    assert scan(aws.tokens)[0]["issued_by"] == ADMIN["sub"]


def test_non_admin_is_refused_and_the_attempt_audited(aws, clock):
    refused = refusal(aws, clock, claims=OPERATOR)
    assert (refused.status, refused.outcome) == (403, "ProvisioningTokenRequestsForbidden")
    assert refused.message
    assert scan(aws.tokens) == []
    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == (
        "provisioning-token.issue-refused", "mallory", "sensor-0001")
    assert record["details"]["groups"] == "ops"


@pytest.mark.parametrize("claims", [{}, {"cognito:groups": "admins"}, None])
def test_caller_without_identity_is_refused(aws, clock, claims):
    assert refusal(aws, clock, claims=claims).status == 403
    assert scan(aws.tokens) == []


# --- the real handler --------------------------------------------------------------------------

def test_handler_issues_a_token(aws, context, logs, capsys):
    before = int(handler.time.time())
    status, headers, body = call(api_event(), context)
    after = int(handler.time.time())
    assert status == 201
    assert headers["Cache-Control"] == "no-store" and headers["Content-Type"] == "application/json"
    token = body["token"]
    assert len(token) == 43

    [item] = scan(aws.tokens)
    assert item["token_hash"] == hash_token(token)
    assert before <= item["issued_at"] <= after and item["expires_at"] == item["issued_at"] + 900
    assert scan(aws.audit)[0]["actor"] == "alice"

    output = capsys.readouterr()
    captured = logs.getvalue() + output.out + output.err
    assert '"ProvisioningTokensIssued"' in output.out  # the EMF metric
    assert '"audit"' in logs.getvalue()
    assert token not in captured
    assert token not in json.dumps(scan(aws.tokens) + scan(aws.audit), default=str)


def test_handler_non_admin_gets_403_and_nothing_is_stored(aws, context, capsys):
    status, headers, body = call(api_event(claims=OPERATOR), context)
    assert status == 403 and set(body) == {"message"}
    assert headers["Cache-Control"] == "no-store"
    assert scan(aws.tokens) == []
    assert '"ProvisioningTokenRequestsForbidden"' in capsys.readouterr().out


def test_handler_without_authoriser_context_is_403(aws, context):
    event = api_event()
    del event["requestContext"]["authorizer"]
    assert call(event, context)[0] == 403
    assert scan(aws.tokens) == []


BAD_BODIES = {
    "no body": None,
    "empty body": "",
    "not json": "serial=sensor-0001",
    "json array": '["sensor-0001"]',
    "json string": '"sensor-0001"',
    "no serial": '{"device": "sensor-0001"}',
    "serial not a string": '{"serial": 1234}',
    "serial null": '{"serial": null}',
    "serial too short": '{"serial": "abc"}',
    "serial with spaces": '{"serial": "sensor 0001"}',
    "serial with newline": '{"serial": "sensor-0001\\n"}',
    "serial too long": json.dumps({"serial": "s" * 65}),
    "huge body": json.dumps({"serial": "sensor-0001", "pad": "x" * 10_000}),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_handler_bad_body_is_400(aws, context, body):
    status, _, response = call(api_event(body=body), context)
    assert status == 400 and set(response) == {"message"} and response["message"]
    assert scan(aws.tokens) == []


def test_handler_reports_the_serial_rule(aws, context):
    _, _, response = call(api_event(body='{"serial": "abc"}'), context)
    assert DEFAULT_SERIAL_PATTERN in response["message"]


@pytest.mark.parametrize("method,resource", [
    ("POST", "/things"), ("GET", "/"), ("POST", "/provisioning-tokens/x"),
])
def test_handler_other_routes_are_404(aws, context, capsys, method, resource):
    status, headers, body = call(api_event(method=method, resource=resource), context)
    assert status == 404 and set(body) == {"message"} and headers["Cache-Control"] == "no-store"
    assert '"ProvisioningTokenRequestsInvalid"' in capsys.readouterr().out
    assert scan(aws.tokens) == [] and scan(aws.audit) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_handler_other_methods_are_405_with_allow(aws, context, capsys, method):
    status, headers, body = call(api_event(method=method), context)
    assert status == 405 and headers["Allow"] == "POST" and set(body) == {"message"}
    assert headers["Cache-Control"] == "no-store"
    assert '"ProvisioningTokenRequestsInvalid"' in capsys.readouterr().out
    assert scan(aws.tokens) == [] and scan(aws.audit) == []


def test_handler_unexpected_error_is_a_generic_500(aws, context, logs, capsys, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom: token abc123 at https://example.com/x")

    monkeypatch.setattr(handler, "issue_token", broken)
    status, headers, body = call(api_event(), context)
    assert (status, body) == (500, {"message": "internal error; no token was issued"})
    assert headers["Cache-Control"] == "no-store"
    assert '"ProvisioningTokenErrors"' in capsys.readouterr().out
    assert "token request failed" in logs.getvalue()


@pytest.mark.parametrize("broken", ["tokens", "audit"])
def test_handler_dynamodb_failure_is_500_without_a_token(aws, context, logs, broken):
    getattr(aws, broken).delete()
    status, headers, body = call(api_event(), context)
    assert status == 500 and set(body) == {"message"}
    assert headers["Cache-Control"] == "no-store"
    assert "could not store or audit" in logs.getvalue()


def test_a_token_from_the_api_provisions_its_device_once(aws, context):
    """End to end: the token API and the hook agree on hashing, serials and the table contract."""
    _, _, body = call(api_event(), context)
    event = hook_event(serial="sensor-0001", token=body["token"])
    assert hook_handler.lambda_handler(event, context)["allowProvisioning"] is True
    assert hook_handler.lambda_handler(event, context) == {"allowProvisioning": False}
    actions = sorted((r["action"], r["actor"]) for r in scan(aws.audit))
    assert actions == [("provisioning-token.issue", "alice"), ("provisioning-token.use", "alice")]


# --- the groups claim --------------------------------------------------------------------------

@pytest.mark.parametrize("claim,expected", [
    ("admins", {"admins"}),
    ("admins,ops", {"admins", "ops"}),
    ("[admins ops]", {"admins", "ops"}),
    ("admins ops", {"admins", "ops"}),
    (["admins", "ops"], {"admins", "ops"}),
    ('["admins","ops"]', {"admins", "ops"}),
    ("[admins]", {"admins"}),
    (" admins , ops ", {"admins", "ops"}),
    ("[]", set()),
    ("", set()),
    (None, set()),
    (42, set()),
    ("superadmins", {"superadmins"}),
    ("admins-readonly", {"admins-readonly"}),
])
def test_parse_groups(claim, expected):
    assert parse_groups(claim) == expected


@pytest.mark.parametrize("groups,allowed", [("admins", True), ("ops,admins", True), ("[ops admins]", True),
                                            ("superadmins", False), ("admin", False), ("ops", False)])
def test_only_the_exact_admin_group_may_issue(aws, clock, groups, allowed):
    claims = {**ADMIN, "cognito:groups": groups}
    if allowed:
        assert issue(aws, clock, claims=claims)["token"]
    else:
        assert refusal(aws, clock, claims=claims).status == 403


def test_caller():
    assert caller(ADMIN) == ("alice", frozenset({"admins"}))
    assert caller({"sub": "s-1"}) == ("s-1", frozenset())
    assert caller("not claims") == (None, frozenset())
