"""Issue 14's done-when, end to end: a new operator goes from the invitation to `fleetctl alerts trace` with
nothing but fleetctl commands.

One moto world holds what a deployed stage holds: the stage's stacks and their outputs (CloudFormation), the
operator pool (Cognito, behind the SRP check of test_session), and the alerts table and bucket the alerts API
reads (test_alerts' world: the real handler behind a local API Gateway, a local S3 for the presigned URL). The
API Gateway stand-in authorises as the Cognito authoriser does: from the ID token itself (its signature is
moto's, so it is decoded, not verified, here), passing the token's claims, `cognito:groups` included, to the
handler. Only the invitation is an administrator's AWS call (AdminCreateUser, AdminAddUserToGroup).
"""

from __future__ import annotations

import base64
import json
import stat
import types

import boto3
import pytest

from tests.tools import test_alerts
from tests.tools.test_alerts import THING, aws, newest_first, world  # noqa: F401 (aws, world: fixtures)
from tests.tools.test_session import (NEW, TEMPORARY, Keyboard, SrpCheckingCognito, create_operator_pool,
                                     freeze_moto_totp_clock)
from tools.fleetctl import cli

REGION = "eu-west-1"


class IdTokenClaims:
    """What the Cognito authoriser hands the function: the claims of a valid ID token of this pool's app client,
    group names comma-joined as API Gateway passes them; anything else is refused (401) before the handler."""

    def __init__(self, pool_id: str, client_id: str):
        self.issuer, self.client_id = f"https://cognito-idp.{REGION}.amazonaws.com/{pool_id}", client_id

    def get(self, authorization: str):
        try:
            payload = authorization.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):
            return None
        if claims.get("token_use") != "id" or claims.get("aud") != self.client_id or claims.get("iss") != self.issuer:
            return None
        groups = claims.get("cognito:groups") or []
        return {**claims, "cognito:groups": ",".join(groups) if isinstance(groups, list) else groups}


@pytest.fixture
def stage(aws, monkeypatch):  # noqa: F811 (the imported fixture)
    """A deployed `dev` stage in the alerts world's moto: pool, app client, stacks with their outputs."""
    freeze_moto_totp_clock(monkeypatch)
    cognito = boto3.client("cognito-idp", region_name=REGION)
    pool_id, client_id = create_operator_pool(cognito)
    cognito.create_group(GroupName="analysts", UserPoolId=pool_id)
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    for part, outputs in (("Identity", {"UserPoolId": pool_id, "FleetctlClientId": client_id}),
                          ("Ingest", {"AlertsApiUrl": aws.api_url + "/"})):
        cloudformation.create_stack(StackName=f"Fleetwarden-dev-{part}", TemplateBody=json.dumps({
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()}}))
    srp_checked = SrpCheckingCognito(cognito, pool_id)
    monkeypatch.setattr(cli, "_cognito", lambda region: srp_checked)
    monkeypatch.setattr(test_alerts, "TOKENS", IdTokenClaims(pool_id, client_id))
    yield types.SimpleNamespace(cognito=cognito, srp=srp_checked, pool_id=pool_id)
    for part in ("Identity", "Ingest"):
        cloudformation.delete_stack(StackName=f"Fleetwarden-dev-{part}")
    cognito.delete_user_pool(UserPoolId=pool_id)


def test_from_the_invitation_to_alerts_trace_with_fleetctl_alone(stage, aws, run, capsys, monkeypatch,  # noqa: F811
                                                                  tmp_path):
    # The invitation (an AWS administrator): the account, a temporary password emailed, the analysts group.
    stage.cognito.admin_create_user(UserPoolId=stage.pool_id, Username="carol", TemporaryPassword=TEMPORARY,
                                    MessageAction="SUPPRESS")
    stage.cognito.admin_add_user_to_group(UserPoolId=stage.pool_id, Username="carol", GroupName="analysts")
    stage.srp.passwords["carol"] = TEMPORARY

    # 1. configure: the stage's pool, client and API URLs from its stacks, never typed.
    assert run("configure", "--stage", "dev", "--region", REGION).code == 0

    # Before signing in, the alerts API is out of reach and says how to fix it.
    run("alerts", "list", "--thing", THING).assert_one_error_line(2, "run fleetctl login")

    # 2. login: new password, authenticator enrolment from the printed URI, the session cached 0600.
    keyboard = Keyboard(capsys, monkeypatch, [TEMPORARY, NEW, NEW])
    keyboard.ask = _as_user(keyboard.ask, "carol")
    signed_in = run("login")
    assert signed_in.code == 0, signed_in.err
    assert "otpauth://totp/Fleetwarden-dev:carol?" in keyboard.seen

    # 3. alerts list: the session's ID token reaches the API, which lets an analyst in.
    listed = run("alerts", "list", "--thing", THING, "--json")
    assert listed.code == 0, listed.err
    expected = newest_first(aws)
    assert [a["id"] for a in json.loads(listed.out)["items"]] == [s["alert_id"] for s in expected]

    # 4. alerts trace: the audited presigned URL, the bytes S3 holds, written 0600.
    out = tmp_path / "trace.json"
    fetched = run("alerts", "trace", expected[0]["alert_id"], "--out", out)
    assert fetched.code == 0, fetched.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes() == aws.s3.get_object(Bucket=test_alerts.DATA_BUCKET,
                                                   Key=expected[0]["key"])["Body"].read()
    audited = aws.audit.scan(ConsistentRead=True)["Items"]
    assert [(r["action"], r["actor"]) for r in audited] == [("alert-trace.fetch", "carol")]


def _as_user(ask, username: str):
    def answer(label):
        return username if label == "Username" else ask(label)
    return answer
