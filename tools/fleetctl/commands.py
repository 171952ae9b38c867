"""Client for the command API (Cognito admins only): send, list, status, cancel, software-update, public-key.

The ID token is a bearer credential: https only (http to loopback for tests), no redirects followed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .errors import InputError, RemoteError
from .tokens import NOT_AUTHORISED, _detail, _NoRedirect, clean_id_token, endpoint

DEFAULT_TIMEOUT = 10.0
UPLOAD_TIMEOUT = 300.0
COMMAND_TYPES = ("config", "reboot", "shutdown", "software-update", "remote-access", "rotate-certificate")
_CHUNK = 1 << 20


def _base(api_url: str) -> str:
    """The API's base URL, checked as the token client checks it."""
    return endpoint(api_url).removesuffix("/provisioning-tokens")


def call(api_url: str, id_token: str | None, method: str, path: str, *, body: Any = None,
         query: dict[str, str] | None = None, timeout: float | None = None, api_name: str = "command API",
         not_authorised: str = NOT_AUTHORISED) -> dict:
    """One JSON request to a Cognito-authorised REST API; the decoded JSON object it answers.

    `api_name` and `not_authorised` word the errors for the API being called (a 401/403 says who may)."""
    url = _base(api_url) + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": clean_id_token(id_token), "Content-Type": "application/json", "Accept": "application/json"})
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise RemoteError(not_authorised) from None
        raise RemoteError(f"{api_name} returned HTTP {exc.code} {exc.reason}{_detail(exc)}") from None
    except urllib.error.URLError as exc:
        raise RemoteError(f"cannot reach {url}: {exc.reason}") from None
    except TimeoutError:
        raise RemoteError(f"no response from {url} within {timeout:g}s") from None
    except (http.client.HTTPException, OSError) as exc:
        raise RemoteError(f"connection to {url} failed: {exc or type(exc).__name__}") from None
    try:
        answer = json.loads(payload)
    except ValueError:
        raise RemoteError(f"{api_name} returned a response that is not JSON") from None
    if not isinstance(answer, dict):
        raise RemoteError(f"{api_name} returned an unexpected response")
    return answer


def parse_params(pairs: list[str] | None, desired_file: str | None) -> dict[str, Any]:
    """`--param k=v` (v read as JSON when it is JSON, e.g. numbers; else a string) and `--desired-file`."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if isinstance(value, float):
            raise InputError(f"--param {key}: numbers must be whole (signed documents carry no floats)")
        params[key] = value
    if desired_file is not None:
        try:
            desired = json.loads(Path(desired_file).read_text())
        except ValueError as exc:
            raise InputError(f"--desired-file {desired_file}: not JSON ({exc})") from None
        if not isinstance(desired, dict) or not desired:
            raise InputError(f"--desired-file {desired_file}: must hold a non-empty JSON object")
        params["desired"] = desired
    return params


def target(thing: str | None, group: str | None) -> dict[str, str]:
    if (thing is None) == (group is None):
        raise InputError("name exactly one target: THING or --group GROUP")
    return {"thing": thing} if thing is not None else {"group": group}


def send(api_url: str, id_token: str | None, *, command: str, target_: dict[str, str], params: dict[str, Any],
         lifetime_seconds: int | None = None) -> dict:
    body: dict[str, Any] = {"command": command, "params": params, **target_}
    if lifetime_seconds is not None:
        body["lifetime_seconds"] = lifetime_seconds
    return call(api_url, id_token, "POST", "/commands", body=body)


def file_digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def software_update(api_url: str, id_token: str | None, *, file: str, version: str, target_: dict[str, str],
                    lifetime_seconds: int | None = None) -> dict:
    """Upload the artifact (the URL makes S3 check its SHA-256), then send the signed update command."""
    path = Path(file)
    if not path.is_file():
        raise InputError(f"--file {file}: no such file")
    sha256, size = file_digest(path)
    if size == 0:
        raise InputError(f"--file {file}: the artifact is empty")
    upload = call(api_url, id_token, "POST", "/artifacts", body={"sha256": sha256, "size": size})
    url, headers = upload.get("upload_url"), upload.get("headers") or {}
    if not isinstance(url, str) or not url.startswith("https://"):
        raise RemoteError("command API returned no https upload URL")
    with path.open("rb") as handle:
        request = urllib.request.Request(url, data=handle, method="PUT",
                                         headers={**headers, "Content-Length": str(size)})
        try:
            with urllib.request.build_opener(_NoRedirect).open(request, timeout=UPLOAD_TIMEOUT):
                pass
        except urllib.error.HTTPError as exc:
            raise RemoteError(f"artifact upload refused: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise RemoteError(f"artifact upload failed: {getattr(exc, 'reason', exc)}") from None
    return send(api_url, id_token, command="software-update", target_=target_,
                params={"version": version, "sha256": sha256, "size": size}, lifetime_seconds=lifetime_seconds)
