"""Client for the provisioning-token API (POST /provisioning-tokens, Cognito admins only)."""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

from .errors import InputError, RemoteError

DEFAULT_TIMEOUT = 10.0  # seconds; read at call time so tests can shorten it
ID_TOKEN_ENV = "FLEETWARDEN_ID_TOKEN"
NOT_AUTHORISED = "not authorised: you must be signed in as a member of the admins group"
# Plain http is accepted only to loopback (local API emulators, tests): the ID token is a bearer credential.
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_MAX_DETAIL = 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would re-send the Authorization header to wherever a redirect points; refuse instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # makes urllib raise HTTPError for the 3xx


def endpoint(api_url: str) -> str:
    """`{api_url}/provisioning-tokens`, after checking the URL is https (or http to loopback)."""
    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InputError(f"invalid --api-url {api_url!r}: expected https://host[/stage]")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise InputError(f"refusing to send the ID token over plain http to {parts.hostname}: use https")
    if parts.query or parts.fragment:
        raise InputError(f"invalid --api-url {api_url!r}: no query string or fragment expected")
    return api_url.rstrip("/") + "/provisioning-tokens"


def clean_id_token(id_token: str | None) -> str:
    """The Cognito ID token as a header value; stray newlines from `$(cat file)` are stripped."""
    token = (id_token or "").strip()
    if not token:
        raise InputError(f"no ID token: pass --id-token or set {ID_TOKEN_ENV}")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise InputError("the ID token contains whitespace or control characters")
    return token


def issue_token(api_url: str, serial: str, id_token: str, timeout: float | None = None) -> dict:
    """Ask the API for a one-time provisioning token for `serial`; return the decoded JSON reply."""
    url = endpoint(api_url)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    request = urllib.request.Request(
        url,
        data=json.dumps({"serial": serial}).encode(),
        method="POST",
        headers={"Authorization": clean_id_token(id_token), "Content-Type": "application/json",
                 "Accept": "application/json"},
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(exc) from None
    except urllib.error.URLError as exc:
        raise RemoteError(f"cannot reach {url}: {exc.reason}") from None
    except TimeoutError:
        raise RemoteError(f"no response from {url} within {timeout:g}s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise RemoteError(f"connection to {url} failed: {exc or type(exc).__name__}") from None
    return _parse_success(status, body)


def _http_error(exc: urllib.error.HTTPError) -> RemoteError:
    if exc.code in (401, 403):
        return RemoteError(NOT_AUTHORISED)
    return RemoteError(f"provisioning-token API returned HTTP {exc.code} {exc.reason}{_detail(exc)}")


def _detail(exc: urllib.error.HTTPError) -> str:
    """The API's own error message, if any, flattened to one short line."""
    try:
        payload = json.loads(exc.read(4096) or b"null")
    except (ValueError, OSError):
        return ""
    message = payload.get("message") or payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + " ".join(message.split())[:_MAX_DETAIL]


def _parse_success(status: int, body: bytes) -> dict:
    if status not in (200, 201):
        raise RemoteError(f"provisioning-token API returned unexpected HTTP {status}")
    try:
        payload = json.loads(body)
    except ValueError:
        raise RemoteError("provisioning-token API returned a response that is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("token"), str):
        raise RemoteError("provisioning-token API response has no token")
    return payload
