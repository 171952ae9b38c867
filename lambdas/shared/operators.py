"""Who is calling an operator API: the Cognito user-pool authoriser's claims, as API Gateway
REST passes them. Shared by every function behind an operator API."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping


def authoriser_claims(event: Mapping[str, Any]) -> Any:
    """The claims the authoriser put in a REST proxy event. None without an authoriser context
    (a misconfigured API): no caller, so refused rather than a 500."""
    return ((event.get("requestContext") or {}).get("authorizer") or {}).get("claims")


def parse_groups(claim: Any) -> frozenset[str]:
    """cognito:groups as API Gateway REST passes it: "admins", "admins,ops", "[admins ops]",
    "admins ops", a JSON array string, or (other integrations) a real list."""
    if isinstance(claim, str):
        text = claim.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items: Iterable[Any] = re.split(r"[\s,]+", text)
    elif isinstance(claim, (list, tuple)):
        items = claim
    else:
        return frozenset()
    return frozenset(item.strip().strip("\"'") for item in items if isinstance(item, str)) - {""}


def caller(claims: Any) -> tuple[str | None, frozenset[str]]:
    """(username, groups) from the Cognito authoriser's claims; username falls back to sub."""
    if not isinstance(claims, dict):
        return None, frozenset()
    username = claims.get("cognito:username") or claims.get("sub")
    if not isinstance(username, str) or not username:
        username = None
    return username, parse_groups(claims.get("cognito:groups"))
