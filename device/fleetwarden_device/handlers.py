"""What the agent does with a verified command: pluggable handlers, one per command name.

A handler is `handler(fields, job_document, context) -> dict of status details`; it raises
`HandlerFailed(reason, detail)` for a FAILED job. `fields` are the signed fields `commands.verify` returned
(trust only these); `job_document` also holds the unsigned fields IoT Jobs rewrites (`artifact_url`), trusted
only as far as the signed params vouch for them (the artifact's SHA-256 and size). The defaults log and
report; a product replaces `reboot`, `shutdown` and `remote-access` with its own (`Agent(handlers={...})`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetwarden_contracts import topics

log = logging.getLogger("fleetwarden_device.handlers")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
DOWNLOAD_TIMEOUT_SECONDS = 60


class HandlerFailed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Context:
    thing: str
    state_dir: Path
    artifact_schemes: tuple[str, ...]
    publish: Callable[[str, dict], None]
    actions: list  # what the handlers did, in order (the demo and the tests read it)


def log_and_report(fields: dict, document: dict, context: Context) -> dict:
    """reboot, shutdown, remote-access by default: recorded, not performed (a product plugs in its own)."""
    log.info("command %s from %s: %s", fields["command"], fields["issuer"], json.dumps(fields["params"]))
    context.actions.append((fields["command"], fields["params"]))
    return {"action": "logged"}


def apply_config(fields: dict, document: dict, context: Context) -> dict:
    """`config` {"desired": {...}}: stored, then reported to the thing's `config` named shadow."""
    desired = fields["params"].get("desired")
    if not isinstance(desired, dict) or not desired:
        raise HandlerFailed("bad-params", "config needs a non-empty desired object")
    path = context.state_dir / "config.json"
    partial = path.with_name("config.json.partial")
    partial.write_text(json.dumps(desired, sort_keys=True))
    os.replace(partial, path)
    context.publish(f"{topics.shadow_prefix(context.thing)}/update", {"state": {"reported": desired}})
    context.actions.append(("config", desired))
    return {"applied": ",".join(sorted(desired))[:256]}


def software_update(fields: dict, document: dict, context: Context) -> dict:
    """`software-update` {"version", "sha256", "size"}: download `artifact_url`, refuse unless the size and
    the SHA-256 are exactly the signed ones, then install (here: keep it as firmware/<version>.bin)."""
    params = fields["params"]
    version, digest, size = params.get("version"), params.get("sha256"), params.get("size")
    if not (
        isinstance(version, str)
        and _VERSION.match(version)
        and isinstance(digest, str)
        and _SHA256.match(digest)
        and type(size) is int
        and 0 < size <= MAX_ARTIFACT_BYTES
    ):
        raise HandlerFailed("bad-params", "software-update needs version, sha256 (64 hex) and size")
    url = document.get("artifact_url")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in context.artifact_schemes:
        raise HandlerFailed("bad-artifact-url", f"artifact_url must be one of {context.artifact_schemes}")
    downloads = context.state_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    partial = downloads / f"{version}.partial"
    hasher, received = hashlib.sha256(), 0
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
            open(partial, "wb") as out,
        ):
            while chunk := response.read(65536):
                received += len(chunk)
                if received > size:
                    raise HandlerFailed(
                        "artifact-mismatch", f"artifact is larger than the signed {size} bytes"
                    )
                hasher.update(chunk)
                out.write(chunk)
    except OSError as error:  # URLError and HTTPError are OSErrors
        partial.unlink(missing_ok=True)
        raise HandlerFailed("download-failed", str(error)[:200]) from None
    except HandlerFailed:
        partial.unlink(missing_ok=True)
        raise
    if received != size or hasher.hexdigest() != digest:
        partial.unlink(missing_ok=True)
        raise HandlerFailed("artifact-mismatch", f"got {received} bytes, sha256 {hasher.hexdigest()[:16]}...")
    installed = context.state_dir / "firmware" / f"{version}.bin"
    installed.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, installed)
    context.actions.append(("software-update", {"version": version, "sha256": digest}))
    return {"version": version, "sha256": digest}


def defaults() -> dict[str, Callable]:
    return {
        "reboot": log_and_report,
        "shutdown": log_and_report,
        "remote-access": log_and_report,
        "config": apply_config,
        "software-update": software_update,
    }
