"""fleetctl login/logout and the token cache, against moto's Cognito.

What moto checks and what it does not (moto/cognitoidp/models.py, 5.2.5):
- USER_SRP_AUTH: moto returns a random SALT/SRP_B and accepts any PASSWORD_CLAIM_SIGNATURE. So the SRP proof
  is checked here, at the library boundary: `SrpCheckingCognito` plays the server side of SRP-6a for the real
  password (verifier v = g^x, B = kv + g^b, S = (A v^u)^b) and refuses a signature that does not match, as
  Cognito does. pycognito's helpers are used only for Cognito's encodings (padding, HKDF).
- NEW_PASSWORD_REQUIRED, MFA_SETUP (AssociateSoftwareToken/VerifySoftwareToken with Session),
  SOFTWARE_TOKEN_MFA, REFRESH_TOKEN_AUTH: implemented; with MOTO_COGNITO_IDP_USER_POOL_ENABLE_TOTP=true moto
  checks TOTP codes against its fixed secret, so the codes here are real RFC 6238 codes computed
  (cryptography's TOTP) from the secret in the printed otpauth URI (moto's secret is 60 bits, below pyotp's
  112-bit floor, hence not pyotp).
- RevokeToken: not implemented (NotImplementedError), so logout's call is checked with botocore's Stubber,
  which validates the request against the service model.
"""

import base64
import hashlib
import hmac
import io
import json
import os
import stat
import time
import types
import urllib.parse

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from moto import mock_aws
from pycognito.aws_srp import (G_HEX, N_HEX, calculate_u, compute_hkdf, hash_sha256, hex_hash, hex_to_long,
                               pad_hex)

from tools.fleetctl import session, settings
from tools.fleetctl.errors import AuthRequired, InputError, RemoteError
from tools.fleetctl.settings import Settings

REGION = "eu-west-1"
TEMPORARY = "Temporary-Pass-2026!"
NEW = "Correct-Horse-Battery-9"
FROZEN = 1_790_000_000  # the TOTP clock of moto and of the authenticator app, frozen: no timed test


# --- the server side of SRP, for the real password ----------------------------------------------------------

class SrpCheckingCognito:
    """moto's cognito-idp client, with the SRP proof of USER_SRP_AUTH checked as Cognito checks it."""

    N, g = hex_to_long(N_HEX), hex_to_long(G_HEX)
    k = hex_to_long(hex_hash("00" + N_HEX + "0" + G_HEX))

    def __init__(self, client, pool_id: str):
        self._client, self._pool_name = client, pool_id.split("_")[1]
        self.passwords: dict[str, str] = {}  # username -> the password the pool holds
        self.challenges: list[str] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def initiate_auth(self, **kwargs):
        reply = self._client.initiate_auth(**kwargs)
        if kwargs["AuthFlow"] == "USER_SRP_AUTH":
            params = reply["ChallengeParameters"]
            salt, user_id = "5a17" * 8, params["USER_ID_FOR_SRP"]
            secret = f"{self._pool_name}{user_id}:{self.passwords[kwargs['AuthParameters']['USERNAME']]}"
            x = hex_to_long(hex_hash(pad_hex(salt) + hash_sha256(secret.encode())))
            self._v, self._b = pow(self.g, x, self.N), int.from_bytes(os.urandom(32), "big")
            self._big_b = (self.k * self._v + pow(self.g, self._b, self.N)) % self.N
            self._big_a, self._user_id = hex_to_long(kwargs["AuthParameters"]["SRP_A"]), user_id
            params.update(SALT=salt, SRP_B=format(self._big_b, "x"))
        return reply

    def respond_to_auth_challenge(self, **kwargs):
        self.challenges.append(kwargs["ChallengeName"])
        responses = kwargs["ChallengeResponses"]
        if kwargs["ChallengeName"] == "PASSWORD_VERIFIER" and responses["PASSWORD_CLAIM_SIGNATURE"] != (
                self._expected_signature(responses["PASSWORD_CLAIM_SECRET_BLOCK"], responses["TIMESTAMP"])):
            raise ClientError({"Error": {"Code": "NotAuthorizedException",
                                         "Message": "Incorrect username or password."}},
                              "RespondToAuthChallenge")
        reply = self._client.respond_to_auth_challenge(**kwargs)
        if kwargs["ChallengeName"] == "NEW_PASSWORD_REQUIRED":
            self.passwords[responses["USERNAME"]] = responses["NEW_PASSWORD"]
        return reply

    def _expected_signature(self, secret_block: str, timestamp: str) -> str:
        u = calculate_u(self._big_a, self._big_b)
        shared = pow(self._big_a * pow(self._v, u, self.N), self._b, self.N)
        key = compute_hkdf(bytearray.fromhex(pad_hex(shared)), bytearray.fromhex(pad_hex(format(u, "x"))))
        message = ((self._pool_name + self._user_id).encode() + base64.b64decode(secret_block)
                   + timestamp.encode())
        return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


# --- fixtures -----------------------------------------------------------------------------------------------

@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.CONFIG_DIR_ENV, str(tmp_path / "cfg"))
    monkeypatch.delenv(settings.STAGE_ENV, raising=False)
    return tmp_path / "cfg"


def create_operator_pool(cognito) -> tuple[str, str]:
    """(pool id, app client id) of the operator pool as stacks/identity/token_api.py builds it: MFA required,
    TOTP only, SRP and refresh, no client secret."""
    pool_id = cognito.create_user_pool(PoolName="fleetwarden-dev-operators", Policies={
        "PasswordPolicy": session.PASSWORD_POLICY})["UserPool"]["Id"]
    cognito.set_user_pool_mfa_config(UserPoolId=pool_id, MfaConfiguration="ON",
                                     SoftwareTokenMfaConfiguration={"Enabled": True})
    client_id = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName="fleetwarden-dev-fleetctl", GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    return pool_id, client_id


def freeze_moto_totp_clock(monkeypatch) -> None:
    """moto checks TOTP codes (with this switch) at its own clock: frozen, like the authenticator's."""
    monkeypatch.setenv("MOTO_COGNITO_IDP_USER_POOL_ENABLE_TOTP", "true")
    import moto.cognitoidp.utils as moto_utils
    monkeypatch.setattr(moto_utils, "time", types.SimpleNamespace(time=lambda: FROZEN))


@pytest.fixture
def pool(config_home, monkeypatch):
    """The operator pool as stacks/identity/token_api.py builds it: MFA required, TOTP only, SRP, no
    client secret."""
    freeze_moto_totp_clock(monkeypatch)
    with mock_aws():
        raw = boto3.client("cognito-idp", region_name=REGION)
        pool_id, client_id = create_operator_pool(raw)
        raw.admin_create_user(UserPoolId=pool_id, Username="alice", TemporaryPassword=TEMPORARY,
                              MessageAction="SUPPRESS")
        client = SrpCheckingCognito(raw, pool_id)
        client.passwords["alice"] = TEMPORARY
        yield types.SimpleNamespace(
            client=client, raw=raw, pool_id=pool_id,
            settings=Settings(stage="dev", region=REGION,
                              outputs={"UserPoolId": pool_id, "FleetctlClientId": client_id}))


def totp_code(secret: str) -> str:
    """The code an authenticator app shows for `secret` (base32) at the frozen time."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    return TOTP(key, 6, SHA1(), 30, enforce_key_length=False).generate(FROZEN).decode()


class Operator:
    """The person at the keyboard: answers prompts, and reads the secret off the printed otpauth URI."""

    def __init__(self, password: str, new_password: str = NEW, repeat: str | None = None):
        self.out = io.StringIO()
        self.password, self.new_passwords = password, [new_password, repeat or new_password]
        self.asked: list[str] = []
        self.secret: str | None = None

    def password_prompt(self, label):
        self.asked.append(label)
        return self.password

    def new_password_prompt(self, label):
        self.asked.append(label)
        return self.new_passwords.pop(0)

    def code_prompt(self, label):
        self.asked.append(label)
        uris = [line for line in self.out.getvalue().splitlines() if line.startswith("otpauth://")]
        if uris:  # enrolment: the app is set up from the URI just printed
            self.secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uris[-1]).query)["secret"][0]
        return totp_code(self.secret)


def _login(pool, operator: Operator, username: str = "alice") -> bool:
    return session.login(pool.client, pool.settings, username, operator.password_prompt, operator.code_prompt,
                         operator.new_password_prompt, operator.out)


def _factory(pool):
    return lambda region: pool.raw


def _cached(config_home) -> dict:
    return json.loads((config_home / "dev" / "session.json").read_text())


@pytest.fixture
def enrolled(pool):
    """alice after her first sign-in: new password set, authenticator enrolled."""
    operator = Operator(TEMPORARY)
    assert _login(pool, operator) is True
    return operator


# --- sign-in ------------------------------------------------------------------------------------------------

def test_first_sign_in_replaces_the_password_enrols_totp_and_caches_the_tokens_privately(pool, config_home):
    operator = Operator(TEMPORARY)

    assert _login(pool, operator) is True

    assert pool.client.challenges == ["PASSWORD_VERIFIER", "NEW_PASSWORD_REQUIRED", "MFA_SETUP"]
    assert pool.raw.admin_get_user(UserPoolId=pool.pool_id, Username="alice")["UserStatus"] == "CONFIRMED"
    printed = operator.out.getvalue()
    uri = next(line for line in printed.splitlines() if line.startswith("otpauth://"))
    parts = urllib.parse.urlsplit(uri)
    assert (parts.netloc, urllib.parse.unquote(parts.path)) == ("totp", "/Fleetwarden-dev:alice")
    query = urllib.parse.parse_qs(parts.query)
    assert query["issuer"] == ["Fleetwarden-dev"] and query["secret"][0]
    assert "█" in printed or "▀" in printed  # the QR code, drawn in the terminal
    cached = _cached(config_home)
    assert stat.S_IMODE((config_home / "dev" / "session.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((config_home / "dev").stat().st_mode) == 0o700
    assert cached["username"] == "alice" and cached["client_id"] == pool.settings.get("FleetctlClientId")
    assert cached["id_token_expires_at"] > time.time() + 3000
    for token in ("id_token", "access_token", "refresh_token"):
        assert cached[token] and cached[token] not in printed  # bearer credentials are never shown
    assert not [p for p in (config_home / "dev").iterdir() if p.name.endswith(".tmp")]


def test_later_sign_in_asks_for_the_authenticator_code(pool, enrolled, config_home):
    (config_home / "dev" / "session.json").unlink()
    pool.client.challenges.clear()
    operator = Operator(NEW)
    operator.secret = enrolled.secret

    assert _login(pool, operator) is False

    assert pool.client.challenges == ["PASSWORD_VERIFIER", "SOFTWARE_TOKEN_MFA"]
    assert operator.asked == ["Password", "Code from your authenticator app"]
    assert "otpauth://" not in operator.out.getvalue()
    assert _cached(config_home)["id_token"]


def test_signing_in_again_revokes_the_session_it_replaces(pool, enrolled, config_home):
    """A replaced session must not stay usable by whoever copied its refresh token (moto has no RevokeToken:
    the call is recorded at the client boundary)."""
    old = _cached(config_home)
    revoked = []
    pool.client.revoke_token = lambda **kwargs: revoked.append(kwargs) or {}
    operator = Operator(NEW)
    operator.secret = enrolled.secret

    assert _login(pool, operator) is False

    assert revoked == [{"Token": old["refresh_token"], "ClientId": old["client_id"]}]
    assert _cached(config_home)["refresh_token"] != old["refresh_token"]


def test_a_wrong_authenticator_code_is_refused_and_nothing_is_cached(pool, enrolled, config_home):
    (config_home / "dev" / "session.json").unlink()
    operator = Operator(NEW)
    operator.secret = base64.b32encode(os.urandom(20)).decode()  # a different app's secret

    with pytest.raises(InputError, match="wrong code"):
        _login(pool, operator)
    assert not (config_home / "dev" / "session.json").exists()


def test_a_wrong_password_fails_the_srp_proof(pool, config_home):
    with pytest.raises(InputError, match="sign-in refused: Incorrect username or password"):
        _login(pool, Operator("Not-The-Password-1!"))
    assert not (config_home / "dev" / "session.json").exists()


def test_a_weak_new_password_is_refused_before_it_is_sent(pool):
    with pytest.raises(InputError, match="at least 14 characters; a symbol") as caught:
        _login(pool, Operator(TEMPORARY, new_password="Short1pass"))
    assert caught.value.exit_code == 2
    assert "NEW_PASSWORD_REQUIRED" not in pool.client.challenges
    user = pool.raw.admin_get_user(UserPoolId=pool.pool_id, Username="alice")
    assert user["UserStatus"] == "FORCE_CHANGE_PASSWORD"


def test_the_new_password_must_be_typed_twice_the_same(pool):
    with pytest.raises(InputError, match="differ"):
        _login(pool, Operator(TEMPORARY, new_password=NEW, repeat=NEW + "x"))
    assert "NEW_PASSWORD_REQUIRED" not in pool.client.challenges


@pytest.mark.parametrize(("password", "problem"), [
    ("Aa1!aaaaaaaaaaaaaaaa", None),
    ("Aa1! with spaces ok", None),
    ("Aa1!aaaa", "at least 14 characters"),
    ("AA1!AAAAAAAAAAAAAAAA", "a lowercase letter"),
    ("aa1!aaaaaaaaaaaaaaaa", "an uppercase letter"),
    ("Aab!aaaaaaaaaaaaaaaa", "a digit"),
    ("Aa1aaaaaaaaaaaaaaaaa", "a symbol"),
    (" Aa1!aaaaaaaaaaaaaaa", "no leading or trailing spaces"),
    ("Aa1!aaaaaaaaaaaaaaaé", "only Basic Latin letters"),
    ("Aa1!" + "a" * 253, "at most 256 characters"),
])
def test_password_policy(password, problem):
    problems = session.password_problems(password)
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith(problem) for p in problems), problems


def test_an_authenticator_code_must_be_six_digits(pool, enrolled, config_home):
    (config_home / "dev" / "session.json").unlink()
    operator = Operator(NEW)
    operator.code_prompt = lambda label: "12345"
    with pytest.raises(InputError, match="6 digits"):
        _login(pool, operator)


def test_setup_mfa_replaces_the_authenticator_of_a_signed_in_operator(pool, enrolled, config_home):
    new_app = Operator(NEW)

    session.setup_mfa(_factory(pool), pool.settings, new_app.code_prompt, new_app.out)

    assert "otpauth://totp/Fleetwarden-dev:alice?" in new_app.out.getvalue()
    assert pool.raw.admin_get_user(UserPoolId=pool.pool_id, Username="alice")["PreferredMfaSetting"] == (
        "SOFTWARE_TOKEN_MFA")


def test_otpauth_uri_keeps_an_email_username_readable():
    uri = session.otpauth_uri("prod", "ops@example.com", "JBSWY3DPEHPK3PXP")
    assert uri == ("otpauth://totp/Fleetwarden-prod:ops@example.com"
                   "?secret=JBSWY3DPEHPK3PXP&issuer=Fleetwarden-prod")
    assert urllib.parse.unquote(urllib.parse.urlsplit(uri).path) == "/Fleetwarden-prod:ops@example.com"


# --- the cached session -------------------------------------------------------------------------------------

def _never_called(region):
    raise AssertionError("Cognito must not be called while the cached ID token is fresh")


def test_a_fresh_cached_id_token_is_used_without_calling_cognito(pool, enrolled, config_home):
    assert session.id_token(_never_called, pool.settings) == _cached(config_home)["id_token"]


def test_an_expiring_id_token_is_refreshed_and_the_refresh_token_kept(pool, enrolled, config_home):
    before = _cached(config_home)
    before["id_token_expires_at"] = int(time.time()) + 30  # under the 60 s margin
    (config_home / "dev" / "session.json").write_text(json.dumps(before))

    token = session.id_token(_factory(pool), pool.settings)

    after = _cached(config_home)
    assert token == after["id_token"] != before["id_token"]
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] == before["refresh_token"]  # REFRESH_TOKEN_AUTH returns none: kept
    assert after["id_token_expires_at"] > time.time() + 3000
    assert stat.S_IMODE((config_home / "dev" / "session.json").stat().st_mode) == 0o600


def test_a_revoked_session_asks_to_sign_in_again(pool, enrolled, config_home):
    expired = _cached(config_home)
    expired["id_token_expires_at"] = int(time.time()) - 1
    (config_home / "dev" / "session.json").write_text(json.dumps(expired))
    pool.raw.admin_user_global_sign_out(UserPoolId=pool.pool_id, Username="alice")  # revokes refresh tokens

    with pytest.raises(AuthRequired, match="run fleetctl login") as caught:
        session.id_token(_factory(pool), pool.settings)
    assert caught.value.exit_code == 2


def test_no_session_asks_to_sign_in(pool):
    with pytest.raises(AuthRequired, match="not signed in or the session expired: run fleetctl login"):
        session.id_token(_never_called, pool.settings)


def test_a_session_file_others_can_read_is_refused(pool, enrolled, config_home):
    path = config_home / "dev" / "session.json"
    path.chmod(0o644)
    with pytest.raises(InputError, match="mode 0644") as caught:
        session.id_token(_never_called, pool.settings)
    assert caught.value.exit_code == 2 and "run fleetctl login" in str(caught.value)


def test_a_session_from_another_app_client_is_not_used(pool, enrolled, config_home):
    redeployed = Settings(stage="dev", region=REGION,
                          outputs={**pool.settings.outputs, "FleetctlClientId": "new"})
    with pytest.raises(AuthRequired):
        session.id_token(_never_called, redeployed)


# --- logout -------------------------------------------------------------------------------------------------

def _stubbed(expect_token: str | None, client_id: str, error: str | None = None):
    client = boto3.client("cognito-idp", region_name=REGION)
    stubber = Stubber(client)
    if error:
        stubber.add_client_error("revoke_token", service_error_code=error, service_message="throttled")
    else:
        stubber.add_response("revoke_token", {}, {"Token": expect_token, "ClientId": client_id})
    stubber.activate()
    return client, stubber


def test_logout_revokes_the_refresh_token_and_deletes_the_session(pool, enrolled, config_home):
    cached = _cached(config_home)
    client, stubber = _stubbed(cached["refresh_token"], cached["client_id"])
    out = io.StringIO()

    assert session.logout(lambda region: client, pool.settings, out) is True

    stubber.assert_no_pending_responses()
    assert not (config_home / "dev" / "session.json").exists()
    assert out.getvalue() == ""
    with pytest.raises(AuthRequired):
        session.id_token(_never_called, pool.settings)


def test_logout_still_deletes_the_session_when_revoking_fails(pool, enrolled, config_home):
    client, _ = _stubbed(None, "", error="TooManyRequestsException")
    out = io.StringIO()

    assert session.logout(lambda region: client, pool.settings, out) is True

    assert "could not revoke" in out.getvalue()
    assert not (config_home / "dev" / "session.json").exists()


def test_logout_revokes_even_a_session_file_others_could_read(pool, enrolled, config_home):
    (config_home / "dev" / "session.json").chmod(0o644)
    cached = _cached(config_home)
    client, stubber = _stubbed(cached["refresh_token"], cached["client_id"])

    assert session.logout(lambda region: client, pool.settings, io.StringIO()) is True
    stubber.assert_no_pending_responses()
    assert not (config_home / "dev" / "session.json").exists()


def test_logout_without_a_session_is_harmless(pool):
    assert session.logout(_never_called, pool.settings, io.StringIO()) is False


def test_cognito_outages_are_remote_errors_not_auth_errors(pool, enrolled, config_home):
    expired = _cached(config_home)
    expired["id_token_expires_at"] = 0
    (config_home / "dev" / "session.json").write_text(json.dumps(expired))
    client = boto3.client("cognito-idp", region_name=REGION)
    stubber = Stubber(client)
    stubber.add_client_error("initiate_auth", service_error_code="InternalErrorException",
                             http_status_code=500)
    stubber.activate()

    with pytest.raises(RemoteError, match="InternalErrorException") as caught:
        session.id_token(lambda region: client, pool.settings)
    assert caught.value.exit_code == 1


# --- the command line ---------------------------------------------------------------------------------------

from tests.tools.test_token_issue import REPLY, api, no_proxy_or_ambient_token  # noqa: E402,F401 (fixtures)
from tools.fleetctl import cli  # noqa: E402


@pytest.fixture
def configured(pool, api, monkeypatch):
    """`fleetctl configure --stage dev` done (the provisioning-token API is a local server), Cognito is moto's
    behind the SRP check."""
    settings.save(Settings(stage="dev", region=REGION,
                           outputs={**pool.settings.outputs, "ProvisioningTokenApiUrl": api.url + "/prod/"}))
    monkeypatch.setattr(cli, "_cognito", lambda region: pool.client)
    return pool


class Keyboard:
    """Answers the CLI's prompts; reads the otpauth URI off what the CLI printed so far."""

    def __init__(self, capsys, monkeypatch, secrets: list[str], secret: str | None = None):
        self.capsys, self.secrets, self.secret, self.seen, self.asked = capsys, list(secrets), secret, "", []
        self.hidden: list[str] = []
        monkeypatch.setattr(cli.click, "prompt", self.prompt)

    def prompt(self, label, type=str, hide_input=False):  # click.prompt, as the CLI calls it
        if hide_input:
            self.hidden.append(label)
            return self.ask_secret(label)
        return self.ask(label)

    def ask(self, label):
        self.asked.append(label)
        if label == "Username":
            return "alice"
        self.seen += self.capsys.readouterr().out
        uris = [line for line in self.seen.splitlines() if line.startswith("otpauth://")]
        if uris:
            self.secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uris[-1]).query)["secret"][0]
        return totp_code(self.secret)

    def ask_secret(self, label):
        self.asked.append(label)
        return self.secrets.pop(0)


def test_cli_first_login_then_token_issue_with_the_cached_session(run, configured, api, capsys, monkeypatch,
                                                                  config_home):
    keyboard = Keyboard(capsys, monkeypatch, [TEMPORARY, NEW, NEW])

    result = run("login")

    assert result.code == 0, result.err
    assert keyboard.asked == ["Username", "Password", "New password", "Repeat the new password",
                              "Code shown by the authenticator app"]
    assert keyboard.hidden == ["Password", "New password", "Repeat the new password"]  # never echoed
    assert "otpauth://totp/Fleetwarden-dev:alice?" in keyboard.seen
    assert "signed in to dev as alice" in result.out
    cached = _cached(config_home)

    # No --api-url, no --id-token: the stage's API URL and the session's ID token.
    issued = run("token", "issue", "--serial", "SN-000123")

    assert issued.code == 0, issued.err
    assert json.loads(issued.out) == REPLY
    assert api.requests[-1]["path"] == "/prod/provisioning-tokens"
    assert api.requests[-1]["headers"]["Authorization"] == cached["id_token"]
    # Scripts keep working: an exported token wins over the session.
    monkeypatch.setenv("FLEETWARDEN_ID_TOKEN", "scripted.token.value")
    assert run("token", "issue", "--serial", "SN-000123").code == 0
    assert api.requests[-1]["headers"]["Authorization"] == "scripted.token.value"


def test_cli_second_login_asks_for_the_code_and_setup_mfa_needs_no_password(run, configured, enrolled, capsys,
                                                                            monkeypatch, config_home):
    (config_home / "dev" / "session.json").unlink()
    keyboard = Keyboard(capsys, monkeypatch, [NEW], secret=enrolled.secret)
    assert run("login", "--username", "alice").code == 0
    assert keyboard.asked == ["Password", "Code from your authenticator app"]

    keyboard.asked.clear()
    result = run("login", "--setup-mfa")

    assert result.code == 0, result.err
    assert keyboard.asked == ["Code shown by the authenticator app"]  # signed in: no password asked again
    assert "otpauth://totp/Fleetwarden-dev:alice?" in keyboard.seen


def test_cli_has_no_password_flag(run, configured):
    run("login", "--password", "x").assert_one_error_line(2, "--password")


def test_cli_expired_and_revoked_session_says_run_fleetctl_login(run, configured, enrolled, api, config_home):
    expired = _cached(config_home)
    expired["id_token_expires_at"] = 0
    (config_home / "dev" / "session.json").write_text(json.dumps(expired))
    configured.raw.admin_user_global_sign_out(UserPoolId=configured.pool_id, Username="alice")

    run("token", "issue", "--serial", "SN-000123").assert_one_error_line(2, "run fleetctl login")
    assert api.requests == []


def test_cli_never_signed_in(run, configured, api):
    run("command", "list", "--api-url", api.url).assert_one_error_line(2, "not signed in",
                                                                        "run fleetctl login")


def test_cli_not_configured_says_configure_then_login(run, api, config_home):
    run("token", "issue", "--serial", "SN-000123", "--api-url", api.url).assert_one_error_line(
        2, "run fleetctl configure --stage STAGE, then fleetctl login", "FLEETWARDEN_ID_TOKEN")


def test_cli_refuses_a_session_file_others_can_read(run, configured, enrolled, api, config_home):
    (config_home / "dev" / "session.json").chmod(0o640)
    run("token", "issue", "--serial", "SN-000123").assert_one_error_line(2, "mode 0640")
    assert api.requests == []


def test_cli_logout(run, configured, enrolled, config_home, monkeypatch):
    cached = _cached(config_home)
    client, stubber = _stubbed(cached["refresh_token"], cached["client_id"])
    monkeypatch.setattr(cli, "_cognito", lambda region: client)

    result = run("logout")

    assert result.code == 0 and "signed out of dev" in result.out
    stubber.assert_no_pending_responses()
    assert not (config_home / "dev" / "session.json").exists()
    assert "not signed in to dev" in run("logout").out


@pytest.mark.parametrize("damage", [
    lambda cached: "not json{",
    lambda cached: json.dumps({**cached, "id_token_expires_at": "soon"}),
    lambda cached: json.dumps({k: v for k, v in cached.items() if k != "refresh_token"}),
])
def test_a_damaged_session_file_asks_to_sign_in_again(run, configured, enrolled, api, config_home, damage):
    path = config_home / "dev" / "session.json"
    path.write_text(damage(_cached(config_home)))
    run("token", "issue", "--serial", "SN-000123").assert_one_error_line(2, "run fleetctl login")
    assert api.requests == []


def test_the_qr_code_on_a_terminal_brings_its_own_colours():
    # On a dark terminal, glyphs drawn in the terminal's light text colour would invert the code.
    assert "\x1b[48;5;232m" in session.qr_text("otpauth://totp/x?secret=JBSWY3DP", terminal=True)
    assert "\x1b[" not in session.qr_text("otpauth://totp/x?secret=JBSWY3DP")
