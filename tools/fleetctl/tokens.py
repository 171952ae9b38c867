"""Client for the provisioning-token API (POST /provisioning-tokens, Cognito admins only)."""

from .api import ID_TOKEN_ENV, NOT_AUTHORISED, call, clean_id_token  # noqa: F401 (the CLI's names)
from .errors import RemoteError

DEFAULT_TIMEOUT = 10.0  # seconds; read at call time so tests can shorten it


def issue_token(api_url: str, serial: str, id_token: str, timeout: float | None = None) -> dict:
    """Ask the API for a one-time provisioning token for `serial`; return the decoded JSON reply."""
    reply = call(api_url, id_token, "POST", "/provisioning-tokens", body={"serial": serial},
                 timeout=DEFAULT_TIMEOUT if timeout is None else timeout, api_name="provisioning-token API",
                 not_authorised=NOT_AUTHORISED)
    if not isinstance(reply.get("token"), str):
        raise RemoteError("provisioning-token API response has no token")
    return reply
