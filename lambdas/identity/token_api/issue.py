"""Issue a provisioning token to an admin. Plain functions over injected tables and clock;
`issue_token` returns the answer's body and raises ApiError for anything but a 201.

The token is returned once, to the caller, and exists nowhere else: the table holds its
SHA-256, the audit trail and logs hold the first 8 hex digits of that hash.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable

from identity.tokens import hash_token, new_token, validate_serial
from shared import audit
from shared.api import ApiError
from shared.operators import caller
from shared.writes import put_new

MAX_BODY = 4096  # the body is {"serial": "..."}; refuse to parse anything much larger
FALLBACK_TARGET = "provisioning-tokens"  # audit target when no valid serial was asked for
INVALID = "ProvisioningTokenRequestsInvalid"  # the outcome metric of a 400, 404 or 405
ERRORS = "ProvisioningTokenErrors"  # ... and of a 500
NO_TOKEN = "internal error; no token was issued"
_quiet = logging.getLogger(__name__)  # the handler passes its Powertools logger


class BadRequest(ApiError):
    def __init__(self, message: str):
        super().__init__(400, message, INVALID)


def parse_serial(body: str | None, pattern: re.Pattern[str]) -> str:
    if not body:
        raise BadRequest("request body must be a JSON object with a serial")
    if len(body) > MAX_BODY:
        raise BadRequest("request body is too large")
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object with a serial")
    if "serial" not in payload:
        raise BadRequest("serial is required")
    serial = payload["serial"]
    if not isinstance(serial, str):
        raise BadRequest("serial must be a string")
    if not validate_serial(serial, pattern):
        raise BadRequest(f"serial must match {pattern.pattern}")
    return serial


def issue_token(
    *,
    claims: Any,
    body: str | None,
    tokens_table: Any,
    audit_table: Any,
    pattern: re.Pattern[str],
    ttl_seconds: int,
    admin_group: str,
    now: Callable[[], float],
    logger: Any = _quiet,
) -> dict[str, Any]:
    username, groups = caller(claims)
    # Authorise before looking at the body: non-admins learn nothing about validation.
    if username is None or admin_group not in groups:
        _audit_refusal(username, groups, body, audit_table, pattern, admin_group, now, logger)
        raise ApiError(403, f"only members of {admin_group} may issue provisioning tokens",
                       "ProvisioningTokenRequestsForbidden")
    serial = parse_serial(body, pattern)

    token = new_token()
    token_hash = hash_token(token)
    issued_at = int(now())
    expires_at = issued_at + ttl_seconds
    try:
        item = {"token_hash": token_hash, "serial": serial, "issued_by": username,
                "issued_at": issued_at, "expires_at": expires_at}
        # Never overwrite an existing token, however unlikely a collision (put_new: an earlier
        # attempt of this very request, re-sent by botocore, is not one).
        if put_new(tokens_table, item, "token_hash") is not None:
            raise RuntimeError("token hash collision")
        # Audit after the write and before answering: if auditing fails, the token is never
        # shown to anyone, and its unusable hash simply expires.
        audit.record(
            audit_table,
            action="provisioning-token.issue",
            actor=username,
            target=serial,
            details={"expires_at": expires_at, "token_hash_prefix": token_hash[:8]},
            now=now,
            logger=logger,
        )
    except Exception:  # noqa: BLE001 - whatever failed, the token is never shown
        logger.exception("could not store or audit a provisioning token", extra={"serial": serial})
        raise ApiError(500, NO_TOKEN, ERRORS) from None
    return {"serial": serial, "token": token, "expires_at": audit.iso_utc(expires_at, "seconds")}


def _audit_refusal(username, groups, body, audit_table, pattern, admin_group, now, logger) -> None:
    """A refused privileged action is itself evidence: audited, with the serial it asked for."""
    try:
        target = parse_serial(body, pattern)
    except BadRequest:
        target = FALLBACK_TARGET
    try:
        audit.record(
            audit_table,
            action="provisioning-token.issue-refused",
            actor=username or "unknown",
            target=target,
            details={
                "reason": f"caller is not in group {admin_group}",
                "groups": ",".join(sorted(groups))[:256],  # caller-controlled: bounded
            },
            now=now,
            logger=logger,
        )
    except Exception:  # noqa: BLE001 - the refusal stands even if it cannot be audited
        logger.exception("could not audit a refused token request")
