"""Client for the command API (Cognito admins only): send, list, status, cancel, software-update, public-key.

The ID token is a bearer credential: https only (http to loopback for tests), no redirects followed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .api import NoRedirect, call
from .errors import InputError, RemoteError

UPLOAD_TIMEOUT = 300.0
COMMAND_TYPES = ("config", "reboot", "shutdown", "software-update", "remote-access", "rotate-certificate")
_CHUNK = 1 << 20


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
    # One key per operator request: fleetctl's own re-send after an indefinite answer queues no second job.
    # Not for remote access: each request opens a tunnel, which a key cannot make idempotent.
    key = None if command == "remote-access" else uuid.uuid4().hex
    return call(api_url, id_token, "POST", "/commands", body=body, idempotency_key=key)


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
            with urllib.request.build_opener(NoRedirect).open(request, timeout=UPLOAD_TIMEOUT):
                pass
        except urllib.error.HTTPError as exc:
            raise RemoteError(f"artifact upload refused: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise RemoteError(f"artifact upload failed: {getattr(exc, 'reason', exc)}") from None
    return send(api_url, id_token, command="software-update", target_=target_,
                params={"version": version, "sha256": sha256, "size": size}, lifetime_seconds=lifetime_seconds)
