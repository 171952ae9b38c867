"""Alerts for the analyst's desktop: list a thing's alerts and download one alert's stored object
(the trace) through the alerts API (GET /alerts, GET /alerts/{id}/trace; members of analysts or
admins only; the API audits every trace URL it hands out).

The ID token goes to the API only: the trace is fetched from the presigned S3 URL with no
Authorization header (the URL carries its own signature), over https, with no redirects.
The download lands in a 0600 temporary file next to the target and is renamed into place only
once its size matches what S3 declared and, when the API gives it, the size of the object the alert
processor read and indexed; on any failure neither file is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .api import LOOPBACK_HOSTS, NoRedirect, call
from .defense import _cell
from .errors import InputError, RemoteError
from .times import parse_instant

API_NAME = "alerts API"
NOT_AUTHORISED = ("not authorised: the alerts API is for members of the analysts or admins group "
                  "(or your sign-in has expired)")
# The API's own rules (lambdas/alerts/model.py, lambdas/alerts/api/parameters.py), checked here
# first so a typo is a clear local error rather than a round trip.
THING_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)
ALERT_ID_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z#[0-9a-f]{12}", re.ASCII)
MAX_CODE = 2**31 - 1
API_PAGE_LIMIT = 100  # the API's MAX_LIMIT per request
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
# A --code filter can return short or empty pages (the API filters after its key condition):
# this many requests at most, then the listing stops and says there is more.
MAX_PAGES = 50
# The alert processor indexes only objects up to MAX_ALERT_BYTES (256 KiB): a longer trace is
# not one the index can point at, so a larger download is refused before it starts.
MAX_TRACE_BYTES = 262_144
DOWNLOAD_TIMEOUT = 30.0
_CHUNK = 64 * 1024


# --- alerts list ------------------------------------------------------------------------------------

def _instant(value: str | None, flag: str) -> str | None:
    """ISO-8601 date or date-time (UTC if it has no offset) -> `...Z`, the form the API takes."""
    if value is None:
        return None
    return parse_instant(value, flag).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_thing(thing: str) -> str:
    if not isinstance(thing, str) or not THING_PATTERN.fullmatch(thing):
        raise InputError(f"invalid thing name {thing!r}: expected 1-128 of A-Z a-z 0-9 _ -")
    return thing


def list_alerts(api_url: str, id_token: str | None, thing: str, start: str | None = None,
                end: str | None = None, code: int | None = None, limit: int = DEFAULT_LIMIT) -> dict:
    """Up to `limit` of a thing's alerts, newest first: `{"items": [...], "more": bool}`.

    Follows the API's `next` token page after page (at most MAX_PAGES requests); `more` says
    that alerts remain beyond what was read."""
    validate_thing(thing)
    lower, upper = _instant(start, "--from"), _instant(end, "--to")
    if lower is not None and upper is not None and lower > upper:
        raise InputError("--from must not be later than --to")
    if code is not None and not 0 <= code <= MAX_CODE:
        raise InputError(f"--code must be from 0 to {MAX_CODE}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}")
    items: list[dict] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        query = {"thing": thing, "from": lower, "to": upper,
                 "code": None if code is None else str(code),
                 "limit": str(min(API_PAGE_LIMIT, limit - len(items))), "next": token}
        page = call(api_url, id_token, "GET", "/alerts", query=query, api_name=API_NAME,
                    not_authorised=NOT_AUTHORISED)
        page_items, token = page.get("items"), page.get("next")
        if not isinstance(page_items, list) or not isinstance(token, (str, type(None))):
            raise RemoteError(f"{API_NAME} returned a page without items")
        items.extend(item for item in page_items if isinstance(item, dict))
        if token is None or len(items) >= limit:
            break
    return {"items": items[:limit], "more": token is not None}


ALERT_COLUMNS = ("RECEIVED_AT", "CODE", "FW", "FIELDS", "ID")


def alerts_table(listing: dict) -> str:
    items = listing["items"]
    lines = []
    if not items:
        lines.append("no alerts")
    else:
        rows = [ALERT_COLUMNS] + [
            (_cell(i.get("received_at")), _cell(i.get("code")), _cell(i.get("fw")),
             _cell(i.get("field_count")), _cell(i.get("id"))) for i in items]
        widths = [max(len(row[c]) for row in rows) for c in range(len(ALERT_COLUMNS) - 1)]
        lines += ["  ".join([cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]) for row in rows]
    if listing["more"]:
        lines.append("(more alerts: narrow --from/--to or raise --limit)")
    return "\n".join(lines)


def alerts_json(listing: dict) -> str:
    return json.dumps(listing, indent=2, sort_keys=True)


# --- alerts trace -----------------------------------------------------------------------------------

def _download_url(url: Any) -> str:
    """The presigned URL: https (plain http only to loopback, for tests), no credentials in it."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or not parts.hostname or parts.username or parts.password:
        raise RemoteError(f"{API_NAME} returned no usable trace URL")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        raise RemoteError(f"{API_NAME} returned a trace URL that is not https; refusing to download")
    return url


def _target(out_path: str | os.PathLike, force: bool) -> Path:
    target = Path(out_path)
    if target.is_dir():
        raise InputError(f"--out {target} is a directory; name the file to write")
    if not target.parent.is_dir():
        raise InputError(f"--out {target}: directory {target.parent} does not exist")
    if (target.exists() or target.is_symlink()) and not force:
        raise InputError(f"{target} exists; pass --force to overwrite it")
    return target


class _Progress:
    """click's progress bar on stderr (click shows it only on a terminal), or nothing."""

    def __init__(self, enabled: bool, length: int, label: str):
        self._bar = None
        if enabled:
            import click

            self._bar = click.progressbar(length=length, label=label, file=sys.stderr)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _declared_length(response: Any) -> int:
    raw = response.headers.get("Content-Length")
    if raw is None or not raw.isdigit():
        raise RemoteError("the trace download declared no size (Content-Length); nothing written")
    size = int(raw)
    if size > MAX_TRACE_BYTES:
        raise RemoteError(f"the trace is {size} bytes, more than any alert can hold "
                          f"({MAX_TRACE_BYTES}); nothing written")
    return size


def _stream(response: Any, handle: Any, size: int, progress: _Progress) -> tuple[int, str]:
    """Copy at most size + 1 bytes (so a longer body is noticed); the count and SHA-256."""
    digest, received = hashlib.sha256(), 0
    while received <= size:
        chunk = response.read(min(_CHUNK, size + 1 - received))
        if not chunk:
            break
        handle.write(chunk)
        digest.update(chunk)
        received += len(chunk)
        progress.update(len(chunk))
    return received, digest.hexdigest()


def _place(temp: Path, target: Path, force: bool) -> None:
    """Move the finished download into place; without --force never over an existing file."""
    if force:
        os.replace(temp, target)
        return
    try:
        os.link(temp, target)  # atomic, and fails if the target appeared meanwhile
    except FileExistsError:
        raise InputError(f"{target} exists; pass --force to overwrite it") from None
    except OSError:  # a file system without hard links
        if target.exists():
            raise InputError(f"{target} exists; pass --force to overwrite it") from None
        os.replace(temp, target)
        return
    temp.unlink()


def fetch_trace(api_url: str, id_token: str | None, alert_id: str, out_path: str | os.PathLike,
                progress: bool = False, force: bool = False, timeout: float | None = None) -> dict:
    """Ask the API for the alert's trace URL, download the object to `out_path` (mode 0600).

    Returns `{"id", "path", "size", "sha256"}`. Raises InputError (bad id, existing file without
    `force`) or RemoteError (API refused, download failed or its size did not match); in every
    failure no file is left behind."""
    if not isinstance(alert_id, str) or not ALERT_ID_PATTERN.fullmatch(alert_id):
        raise InputError(f"invalid alert id {alert_id!r}: expected e.g. "
                         "2024-01-05T10:00:00.000Z#0123456789ab (from fleetctl alerts list)")
    target = _target(out_path, force)
    reply = call(api_url, id_token, "GET", f"/alerts/{urllib.parse.quote(alert_id, safe='')}/trace",
                 api_name=API_NAME, not_authorised=NOT_AUTHORISED)
    url = _download_url(reply.get("url"))
    stored = reply.get("size")  # the bytes the alert processor read and indexed (absent from older items)
    if stored is not None and (isinstance(stored, bool) or not isinstance(stored, int) or stored < 0):
        raise RemoteError("alerts API returned an invalid trace size")
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout

    # No Authorization header: the presigned URL is the credential, and S3 would refuse two.
    request = urllib.request.Request(url, method="GET", headers={"Accept": "*/*"})
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")  # 0600
    temp, placed = Path(temp_name), False
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                with urllib.request.build_opener(NoRedirect).open(request, timeout=timeout) as response:
                    size = _declared_length(response)
                    if stored is not None and size != stored:
                        raise RemoteError(f"the trace S3 served is {size} bytes but the alert indexed was "
                                          f"{stored}; nothing written")
                    with _Progress(progress, size, "trace") as bar:
                        received, sha256 = _stream(response, handle, size, bar)
            except urllib.error.HTTPError as exc:
                lasts = reply.get("expires_in", 300)
                raise RemoteError(f"trace download refused: HTTP {exc.code} {exc.reason} (the URL lasts "
                                  f"{lasts} s; run the command again); nothing written") from None
            except http.client.IncompleteRead:
                raise RemoteError("trace download incomplete: the connection closed before the declared "
                                  "size arrived; nothing written") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc or type(exc).__name__
                raise RemoteError(f"trace download failed: {reason}; nothing written") from None
            if received != size:
                raise RemoteError(f"trace download incomplete: received {received} bytes of the {size} "
                                  "declared; nothing written")
            handle.flush()
            os.fsync(handle.fileno())
        _place(temp, target, force)
        placed = True
    finally:
        if not placed:
            temp.unlink(missing_ok=True)
    return {"id": alert_id, "path": str(target), "size": size, "sha256": sha256}
