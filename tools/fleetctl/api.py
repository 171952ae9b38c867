"""One client for fleetctl's Cognito-authorised REST APIs (provisioning tokens, commands, alerts).

The ID token is a bearer credential: https only (plain http to loopback only: local API emulators, tests),
no redirects followed (urllib would re-send the Authorization header wherever a redirect points).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import InputError, RemoteError

DEFAULT_TIMEOUT = 10.0  # seconds
ID_TOKEN_ENV = "FLEETWARDEN_ID_TOKEN"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_PAUSE_SECONDS = 2.0  # before the one re-send of a keyed request; tests set 0
NOT_AUTHORISED = "not authorised: you must be signed in as a member of the admins group"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_MAX_DETAIL = 200


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would re-send the Authorization header to wherever a redirect points; refuse instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # makes urllib raise HTTPError for the 3xx


def base_url(api_url: str) -> str:
    """The API's base URL without a trailing slash, after checking it is https (or http to loopback)."""
    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InputError(f"invalid --api-url {api_url!r}: expected https://host[/stage]")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise InputError(f"refusing to send the ID token over plain http to {parts.hostname}: use https")
    if parts.query or parts.fragment:
        raise InputError(f"invalid --api-url {api_url!r}: no query string or fragment expected")
    return api_url.rstrip("/")


def clean_id_token(id_token: str | None) -> str:
    """The Cognito ID token as a header value; stray newlines from `$(cat file)` are stripped."""
    token = (id_token or "").strip()
    if not token:
        raise InputError(f"no ID token: pass --id-token or set {ID_TOKEN_ENV}")
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise InputError("the ID token contains whitespace or control characters")
    return token


def detail(exc: urllib.error.HTTPError) -> str:
    """The API's own error message, if any, flattened to one short line."""
    try:
        payload = json.loads(exc.read(4096) or b"null")
    except (ValueError, OSError):
        return ""
    message = payload.get("message") or payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + " ".join(message.split())[:_MAX_DETAIL]


def call(api_url: str, id_token: str | None, method: str, path: str, *, body: Any = None,
         query: dict[str, str] | None = None, timeout: float | None = None, api_name: str = "command API",
         not_authorised: str = NOT_AUTHORISED, idempotency_key: str | None = None) -> dict:
    """One JSON request to a Cognito-authorised REST API; the decoded JSON object it answers.

    `api_name` and `not_authorised` word the errors for the API being called (a 401/403 says who may).
    With `idempotency_key` the request is one the API applies at most once per key (POST /commands derives the
    job id from it): sent with the `Idempotency-Key` header and, when the answer says nothing definite (a 5xx,
    no answer, a broken connection), sent once more with the same key, so an operator never has to repeat it
    by hand and risk a second job."""
    url = base_url(api_url) + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": clean_id_token(id_token), "Content-Type": "application/json",
               "Accept": "application/json"}
    if idempotency_key is not None:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    attempts = 2 if idempotency_key is not None else 1
    for attempt in range(1, attempts + 1):
        try:
            payload = _send(urllib.request.Request(url, data=data, method=method, headers=headers), url, timeout,
                            api_name, not_authorised)
            break
        except _Indefinite as failure:
            if attempt == attempts:
                raise RemoteError(str(failure)) from None
            time.sleep(RETRY_PAUSE_SECONDS)
    try:
        answer = json.loads(payload)
    except ValueError:
        raise RemoteError(f"{api_name} returned a response that is not JSON") from None
    if not isinstance(answer, dict):
        raise RemoteError(f"{api_name} returned an unexpected response")
    return answer


class _Indefinite(Exception):
    """The request may or may not have been applied: a 5xx, no answer, or a broken connection."""


def _send(request: urllib.request.Request, url: str, timeout: float, api_name: str, not_authorised: str) -> bytes:
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise RemoteError(not_authorised) from None
        message = f"{api_name} returned HTTP {exc.code} {exc.reason}{detail(exc)}"
        if exc.code >= 500:
            raise _Indefinite(message) from None
        raise RemoteError(message) from None
    except urllib.error.URLError as exc:
        raise _Indefinite(f"cannot reach {url}: {exc.reason}") from None
    except TimeoutError:
        raise _Indefinite(f"no response from {url} within {timeout:g}s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Indefinite(f"connection to {url} failed: {exc or type(exc).__name__}") from None
