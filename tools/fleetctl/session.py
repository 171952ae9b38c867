"""Operator sign-in: Cognito SRP with the pool's TOTP MFA, a per-stage token cache, refresh and logout.

`login` drives the challenge loop with boto3 (InitiateAuth USER_SRP_AUTH, then RespondToAuthChallenge per
challenge); pycognito's AWSSRP does the SRP math. The ID, access and refresh tokens are bearer credentials:
they live only in <config dir>/<stage>/session.json (0600, replaced atomically, in a 0700 directory), and are
never printed, logged or put in an error message. A session file others can read is refused, as ssh refuses
a private key with loose permissions.

Challenge names and their ChallengeResponses keys (PASSWORD_VERIFIER, NEW_PASSWORD_REQUIRED, MFA_SETUP with
the Session from VerifySoftwareToken, SOFTWARE_TOKEN_MFA with SOFTWARE_TOKEN_MFA_CODE):
https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_RespondToAuthChallenge.html
"""

from __future__ import annotations

import json
import os
import stat
import string
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .errors import AuthRequired, InputError, RemoteError
from .files import write_private_text
from .settings import Settings, stage_dir

SESSION_FILE = "session.json"
# Refresh when the ID token has this little life left, so a request never leaves with a token about to expire.
MIN_REMAINING_SECONDS = 60
MFA_DEVICE_NAME = "fleetctl"
# The challenges a sign-in can go through on this pool; more steps than this means a loop: stop.
_MAX_CHALLENGES = 6

# The operator pool's policy (stacks/identity/token_api.py; tests/identity checks the template matches),
# checked before sending so a weak new password gets a clear message. Allowed symbols, 256 characters at most:
# https://docs.aws.amazon.com/cognito/latest/developerguide/user-pool-settings-policies.html
PASSWORD_POLICY = {"MinimumLength": 14, "RequireLowercase": True, "RequireUppercase": True,
                   "RequireNumbers": True, "RequireSymbols": True}
PASSWORD_MAX_LENGTH = 256
PASSWORD_SYMBOLS = set("^$*.[]{}()?\"!@#%&/\\,><':;|_~`=+- ")

# Cognito errors that mean the operator's input was refused (exit 2) rather than the service failing (exit 1).
# https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_RespondToAuthChallenge.html
_INPUT_ERRORS = {
    "NotAuthorizedException": "sign-in refused",
    "UserNotFoundException": "sign-in refused",
    "CodeMismatchException": "wrong code",
    "ExpiredCodeException": "the code expired",
    "EnableSoftwareTokenMFAException": "wrong code",
    "InvalidPasswordException": "the new password was refused",
    "PasswordResetRequiredException": "a password reset is required: ask an admin",
    "UserNotConfirmedException": "the account is not confirmed: ask an admin",
    "PasswordHistoryPolicyViolationException": "the new password was used before",
}

Prompt = Callable[[str], str]


# --- the token cache ----------------------------------------------------------------------------------------

def session_path(stage: str) -> Path:
    return stage_dir(stage) / SESSION_FILE


def _write(settings: Settings, record: dict[str, Any]) -> None:
    write_private_text(session_path(settings.stage), json.dumps(record, indent=2, sort_keys=True) + "\n")


def _read(settings: Settings, *, for_logout: bool = False) -> dict[str, Any]:
    """The cached session of the stage; AuthRequired if there is none, InputError if others can read it
    (logout still reads such a file: its refresh token may have leaked, so revoking it is the point)."""
    path = session_path(settings.stage)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise AuthRequired() from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not for_logout:
            if info.st_uid != os.getuid():
                raise InputError(f"{path} belongs to another user: refusing it; delete it and run "
                                 "fleetctl login")
            if info.st_mode & 0o077:
                raise InputError(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, readable by others: "
                                 "refusing it; delete it and run fleetctl login")
        try:
            record = json.loads(handle.read())
        except ValueError:
            record = None
    if not _well_formed(record) or record["client_id"] != settings.get("FleetctlClientId"):
        # Damaged, or issued by a client this stage no longer has (redeployed): sign in again.
        raise AuthRequired()
    return record


def _well_formed(record: Any) -> bool:
    return (isinstance(record, dict)
            and all(isinstance(record.get(k), str) and record[k]
                    for k in ("client_id", "id_token", "access_token", "refresh_token"))
            and all(type(record.get(k)) is int for k in ("id_token_expires_at", "access_token_expires_at")))


def _record(settings: Settings, username: str, result: dict[str, Any],
            refresh_token: str | None = None) -> dict[str, Any]:
    """The cache entry for a Cognito AuthenticationResult."""
    now = int(time.time())
    expires_in = int(result.get("ExpiresIn") or 0)
    return {
        "version": 1,
        "stage": settings.stage,
        "client_id": settings.get("FleetctlClientId"),
        "username": username,
        "id_token": result["IdToken"],
        "access_token": result["AccessToken"],
        # REFRESH_TOKEN_AUTH returns no refresh token (unless rotation is on, which the CLI client does not
        # use): keep the one from sign-in.
        # https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-refresh-token.html
        "refresh_token": result.get("RefreshToken") or refresh_token,
        "id_token_expires_at": _expiry(result["IdToken"], now + expires_in),
        "access_token_expires_at": _expiry(result["AccessToken"], now + expires_in),
        "updated_at": now,
    }


def _expiry(token: str, fallback: int) -> int:
    """The token's `exp` claim. Read without checking the signature: it only decides when to refresh; the API
    Gateway authoriser verifies the token itself."""
    import jwt  # PyJWT, a pycognito dependency

    try:
        return int(jwt.decode(token, options={"verify_signature": False})["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return fallback


def _fresh(client_factory: Callable[[str], Any], settings: Settings) -> dict[str, Any]:
    """The cached session, refreshed with the refresh token when its ID or access token is about to expire."""
    record = _read(settings)
    soonest = min(record["id_token_expires_at"], record["access_token_expires_at"])
    if soonest - time.time() > MIN_REMAINING_SECONDS:
        return record
    client = client_factory(settings.region)
    reply = _cognito(client.initiate_auth, AuthFlow="REFRESH_TOKEN_AUTH", ClientId=record["client_id"],
                     AuthParameters={"REFRESH_TOKEN": record["refresh_token"]}, refreshing=True)
    result = reply.get("AuthenticationResult")
    if not result:
        raise AuthRequired()
    record = _record(settings, record.get("username", ""), result, refresh_token=record["refresh_token"])
    _write(settings, record)
    return record


def signed_in(client_factory: Callable[[str], Any], settings: Settings) -> bool:
    """True if the stage has a usable session (refreshing it if need be)."""
    try:
        _fresh(client_factory, settings)
    except AuthRequired:
        return False
    return True


def id_token(client_factory: Callable[[str], Any], settings: Settings) -> str:
    """The signed-in operator's ID token for the stage's APIs (refreshed if needed), else AuthRequired."""
    return _fresh(client_factory, settings)["id_token"]


# --- sign-in ------------------------------------------------------------------------------------------------

def login(client, settings: Settings, username: str, password_prompt: Prompt, code_prompt: Prompt,
          new_password_prompt: Prompt, out: TextIO) -> bool:
    """Sign `username` in with SRP, answer the pool's challenges, cache the tokens.

    Returns True if this sign-in enrolled an authenticator app (first sign-in: MFA_SETUP).
    """
    from pycognito.aws_srp import AWSSRP  # imported here: only sign-in needs it

    pool_id, client_id = settings.get("UserPoolId"), settings.get("FleetctlClientId")
    username = username.strip()
    if not username:
        raise InputError("a username is required")
    password = password_prompt("Password")
    if not password:
        raise InputError("a password is required")
    srp = AWSSRP(username=username, password=password, pool_id=pool_id, client_id=client_id, client=client)
    auth_parameters = srp.get_auth_params()  # USERNAME, SRP_A
    reply = _cognito(client.initiate_auth, AuthFlow="USER_SRP_AUTH", ClientId=client_id,
                     AuthParameters=auth_parameters)
    # After PASSWORD_VERIFIER, Cognito's own name for the user (the sub when signing in with an email alias)
    # is the USERNAME of every later challenge response.
    cognito_username, enrolled = username, False
    for _ in range(_MAX_CHALLENGES):
        if reply.get("AuthenticationResult"):
            break
        challenge = reply.get("ChallengeName")
        parameters = reply.get("ChallengeParameters") or {}
        session = reply.get("Session")
        if challenge == "PASSWORD_VERIFIER":
            responses = srp.process_challenge(parameters, auth_parameters)
            cognito_username = responses["USERNAME"]
        elif challenge == "NEW_PASSWORD_REQUIRED":
            _refuse_required_attributes(parameters)
            out.write("First sign-in: replace the temporary password from your invitation.\n")
            responses = {"USERNAME": cognito_username, "NEW_PASSWORD": _new_password(new_password_prompt)}
        elif challenge == "MFA_SETUP":
            out.write("This pool requires an authenticator app (TOTP). Enrol it now.\n")
            session = _enrol(client, settings.stage, username, code_prompt, out, session=session)
            responses, enrolled = {"USERNAME": cognito_username}, True
        elif challenge == "SOFTWARE_TOKEN_MFA":
            responses = {"USERNAME": cognito_username,
                         "SOFTWARE_TOKEN_MFA_CODE": _code(code_prompt, "Code from your authenticator app")}
        else:
            raise RemoteError(f"Cognito asked for a {challenge} challenge, which fleetctl does not handle")
        request: dict[str, Any] = {"ClientId": client_id, "ChallengeName": challenge,
                                   "ChallengeResponses": responses}
        if session:
            request["Session"] = session
        reply = _cognito(client.respond_to_auth_challenge, **request)
    result = reply.get("AuthenticationResult")
    if not result:
        raise RemoteError("Cognito did not finish the sign-in (too many challenges)")
    previous = _previous(settings)
    _write(settings, _record(settings, username, result))
    if previous is not None:  # the replaced session must not stay usable by whoever copied it
        _revoke(client, previous, out)
    return enrolled


def _previous(settings: Settings) -> dict[str, Any] | None:
    try:
        return _read(settings, for_logout=True)
    except InputError:  # none, damaged, or from another client: nothing to revoke
        return None


def _revoke(client, record: dict[str, Any], out: TextIO) -> None:
    """RevokeToken invalidates the refresh token and the access tokens it issued (best effort):
    https://docs.aws.amazon.com/cognito/latest/developerguide/token-revocation.html"""
    try:
        _cognito(client.revoke_token, Token=record["refresh_token"], ClientId=record["client_id"])
    except (InputError, RemoteError) as exc:
        out.write(f"could not revoke the session at Cognito ({exc}); it expires on its own\n")


def setup_mfa(client_factory: Callable[[str], Any], settings: Settings, code_prompt: Prompt,
              out: TextIO) -> None:
    """Enrol a new authenticator app for the signed-in operator (replaces the old one once verified)."""
    record = _fresh(client_factory, settings)
    client = client_factory(settings.region)
    _enrol(client, settings.stage, record.get("username") or "operator", code_prompt, out,
           access_token=record["access_token"])
    # TOTP stays the user's (preferred) MFA with the new secret.
    # https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_SetUserMFAPreference.html
    _cognito(client.set_user_mfa_preference, AccessToken=record["access_token"],
             SoftwareTokenMfaSettings={"Enabled": True, "PreferredMfa": True})


def _enrol(client, stage: str, username: str, code_prompt: Prompt, out: TextIO, *, session: str | None = None,
           access_token: str | None = None) -> str | None:
    """AssociateSoftwareToken -> show the secret (otpauth URI + QR) -> VerifySoftwareToken with a code.

    Authorised by the MFA_SETUP challenge's Session, or by an access token; returns VerifySoftwareToken's
    Session (the one MFA_SETUP must be answered with).
    https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_AssociateSoftwareToken.html
    https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_VerifySoftwareToken.html
    """
    auth = {"Session": session} if session else {"AccessToken": access_token}
    associated = _cognito(client.associate_software_token, **auth)
    uri = otpauth_uri(stage, username, associated["SecretCode"])
    out.write("Scan this QR code with your authenticator app, or add the URI below by hand:\n")
    out.write(qr_text(uri, terminal=bool(getattr(out, "isatty", lambda: False)())))
    out.write(uri + "\n")
    code = _code(code_prompt, "Code shown by the authenticator app")
    if session:
        auth = {"Session": associated.get("Session") or session}
    verified = _cognito(client.verify_software_token, UserCode=code, FriendlyDeviceName=MFA_DEVICE_NAME,
                        **auth)
    if verified.get("Status") != "SUCCESS":
        raise InputError("the authenticator code was not accepted: run fleetctl login again")
    out.write("Authenticator enrolled.\n")
    return verified.get("Session")


def otpauth_uri(stage: str, username: str, secret: str) -> str:
    """Key URI format (https://github.com/google/google-authenticator/wiki/Key-Uri-Format): issuer:account."""
    issuer = f"Fleetwarden-{stage}"
    label = urllib.parse.quote(f"{issuer}:{username}", safe=":@")
    return f"otpauth://totp/{label}?" + urllib.parse.urlencode({"secret": secret, "issuer": issuer})


def qr_text(data: str, terminal: bool = False) -> str:
    """`data` as a QR code drawn with half-block characters. On a terminal, with explicit black-on-white ANSI
    colours so it scans whatever the terminal's own colours; otherwise dark modules are the glyphs."""
    import io

    import qrcode

    class Buffer(io.StringIO):
        def isatty(self) -> bool:  # qrcode writes the colour codes only to a terminal
            return terminal

    qr = qrcode.QRCode(border=2)
    qr.add_data(data)
    qr.make(fit=True)
    buffer = Buffer()
    qr.print_ascii(out=buffer, tty=terminal)
    return buffer.getvalue()


def _code(prompt: Prompt, label: str) -> str:
    code = "".join(prompt(label).split())
    if len(code) != 6 or not code.isdigit():
        raise InputError("an authenticator code is 6 digits")
    return code


def _new_password(prompt: Prompt) -> str:
    password = prompt("New password")
    problems = password_problems(password)
    if problems:
        raise InputError("the new password does not meet the pool's policy: " + "; ".join(problems))
    if prompt("Repeat the new password") != password:
        raise InputError("the two new passwords differ")
    return password


def password_problems(password: str) -> list[str]:
    """What the operator pool's password policy would refuse in `password` (empty if nothing)."""
    policy, problems = PASSWORD_POLICY, []
    if len(password) < policy["MinimumLength"]:
        problems.append(f"at least {policy['MinimumLength']} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(f"at most {PASSWORD_MAX_LENGTH} characters")
    if policy["RequireLowercase"] and not any(c in string.ascii_lowercase for c in password):
        problems.append("a lowercase letter")
    if policy["RequireUppercase"] and not any(c in string.ascii_uppercase for c in password):
        problems.append("an uppercase letter")
    if policy["RequireNumbers"] and not any(c in string.digits for c in password):
        problems.append("a digit")
    if policy["RequireSymbols"] and not any(c in PASSWORD_SYMBOLS - {" "} for c in password.strip()):
        problems.append("a symbol such as ! @ # % & * - _ +")
    if password != password.strip():
        # Unverified in the docs; refused in the worst case, so say so before Cognito does.
        problems.append("no leading or trailing spaces")
    allowed = set(string.ascii_letters + string.digits) | PASSWORD_SYMBOLS
    if any(c not in allowed for c in password):
        problems.append("only Basic Latin letters, digits and the symbols ^$*.[]{}()?\"!@#%&/\\,><':;|_~`=+-")
    return problems


def _refuse_required_attributes(parameters: dict[str, Any]) -> None:
    """The pool asks for no attributes at first sign-in; if it ever does, an admin must set them."""
    try:
        required = json.loads(parameters.get("requiredAttributes") or "[]")
    except (TypeError, ValueError):
        required = []
    if required:
        names = ", ".join(str(name).removeprefix("userAttributes.") for name in required)
        raise RemoteError(f"the pool requires attributes fleetctl does not set ({names}): "
                          "ask an admin to set them")


# --- logout -------------------------------------------------------------------------------------------------

def logout(client_factory: Callable[[str], Any], settings: Settings, out: TextIO) -> bool:
    """Revoke the refresh token (best effort) and delete the cached session. False if there was none."""
    path = session_path(settings.stage)
    record = _previous(settings)
    if record is not None:
        _revoke(client_factory(settings.region), record, out)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


# --- Cognito calls ------------------------------------------------------------------------------------------

def _cognito(operation, *, refreshing: bool = False, **kwargs) -> dict[str, Any]:
    """Call a Cognito operation; its errors become one clear line (never a token, never a traceback)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return operation(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), " ".join(str(error.get("Message", "")).split())[:200]
        if refreshing and code == "NotAuthorizedException":
            raise AuthRequired() from None  # refresh token expired or revoked
        if code in _INPUT_ERRORS:
            what = _INPUT_ERRORS[code]
            raise InputError(f"{what}: {message}" if message else what) from None
        raise RemoteError(f"Cognito {exc.operation_name} failed: {code}: {message}") from None
    except BotoCoreError as exc:
        raise RemoteError(f"cannot reach Cognito: {exc}") from None
