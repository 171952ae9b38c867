"""Forwarding one alert to the external classifier.

The classifier sees only `{"device_ref", "alert_id", "header"}`: `device_ref` is an HMAC of the
thing name under a key it never sees, so it can correlate a device's alerts without learning
which device it is. Never the trace, the thing name, the bucket or the key.

At most `attempts` tries inside one invocation with a short, bounded backoff; anything still
failing raises ForwardError so the SQS message is retried (and dead-lettered after 5 receives).
Delivery is at least once: every attempt carries the same `Idempotency-Key` (the alert id).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import json
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from alerts.model import AlertHeader

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_DEVICE_REF_KEY_CHARS = 16
REJECTED_STATUSES = frozenset({400, 422})  # the classifier refuses this alert: retrying won't help
AUTH_STATUSES = frozenset({401, 403})  # maybe a rotated API key: retried once with a fresh one
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 1.0
# Every POST of one alert carries its alert id here (stable per bucket/key/version); the README's
# vendor contract asks the classifier to act once per key. A POST whose answer is lost cannot be
# known to have arrived, so it is sent again: at least once, never silently dropped.
IDEMPOTENCY_HEADER = "Idempotency-Key"


class ForwardError(Exception):
    """The alert was not delivered; the SQS message must be retried."""


class ConfigurationError(ForwardError):
    """Bad URL or secret: nothing can be delivered until the configuration is fixed."""


class Secrets(Protocol):
    def get(self, name: str, *, refresh: bool = False) -> str: ...


# post(url, body, headers, timeout) -> HTTP status; raises OSError/HTTPException on transport errors.
PostFn = Callable[[str, bytes, Mapping[str, str], float], int]


@dataclass(frozen=True)
class ForwardResult:
    status: int
    attempts: int
    rejected: bool  # True: the classifier answered 400/422 and will never accept this alert


def validate_url(url: object) -> str:
    """https only; plain http only to the local host (tests). No credentials in the URL."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError("CLASSIFIER_URL is not set")
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise ConfigurationError("CLASSIFIER_URL must be a plain https URL")
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOCAL_HOSTS):
        return url
    raise ConfigurationError("CLASSIFIER_URL must use https")


def device_ref(key: str, thing: str) -> str:
    """Hex HMAC-SHA256 of the thing name: a stable pseudonym the classifier cannot reverse."""
    if not isinstance(key, str) or len(key) < MIN_DEVICE_REF_KEY_CHARS:
        raise ConfigurationError(f"device-ref key must be at least {MIN_DEVICE_REF_KEY_CHARS} characters")
    return hmac.new(key.encode("utf-8"), thing.encode("utf-8"), hashlib.sha256).hexdigest()


def classifier_body(ref: str, alert_id: str, header: AlertHeader) -> bytes:
    """Exactly {device_ref, alert_id, header{fw, code, fields}}: built field by field, not dumped."""
    payload = {
        "device_ref": ref,
        "alert_id": alert_id,
        "header": {"fw": header.fw, "code": header.code, "fields": dict(header.fields)},
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the API key to wherever it points: treat 3xx as an answer."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """Built on the first forward: loading the CA bundle takes ~20 ms that an import need not pay."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # no proxy from the environment sees the key
        _NoRedirects(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),  # certificate + host name checked
    )


def urllib_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST with the standard library; returns the status (3xx/4xx/5xx too), never follows redirects."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _opener().open(request, timeout=timeout) as response:
            response.read(65_536)  # drain a little; the answer's content is not used
            return response.status
    except urllib.error.HTTPError as exc:  # non-2xx
        status = exc.code
        exc.close()
        return status


class Forwarder:
    def __init__(
        self,
        url: str,
        *,
        secrets: Secrets,
        api_key_secret: str,
        device_ref_key_secret: str,
        timeout: float = 3.0,
        attempts: int = 2,
        backoff: float = 0.2,
        post: PostFn = urllib_post,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = validate_url(url)
        if not (0 < timeout <= 30):
            raise ConfigurationError("classifier timeout must be in (0, 30] seconds")
        self.secrets = secrets
        self.api_key_secret = api_key_secret
        self.device_ref_key_secret = device_ref_key_secret
        self.timeout = float(timeout)
        self.attempts = max(1, min(int(attempts), 3))
        self.backoff = min(max(0.0, backoff), MAX_BACKOFF_SECONDS)
        self.post = post
        self.sleep = sleep

    def worst_case_seconds(self) -> float:
        """An upper bound on one forward (every attempt timing out), for the remaining-time check."""
        return self.attempts * self.timeout + (self.attempts - 1) * 2 * self.backoff

    def device_ref(self, thing: str) -> str:
        return device_ref(self._secret(self.device_ref_key_secret), thing)

    def _secret(self, name: str, refresh: bool = False) -> str:
        try:
            value = self.secrets.get(name, refresh=refresh)
        except Exception as exc:
            raise ForwardError(f"secret unavailable: {type(exc).__name__}") from exc
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n\x00"):
            raise ConfigurationError("secret is empty, not a string, or has a line break")
        return value

    def forward(self, *, thing: str, alert_id: str, header: AlertHeader) -> ForwardResult:
        body = classifier_body(self.device_ref(thing), alert_id, header)
        refresh_key = False
        last = "no attempt"
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.sleep(self.backoff * (1 + random.random()))
            headers = {
                "Content-Type": "application/json",
                "x-api-key": self._secret(self.api_key_secret, refresh=refresh_key),
                # The same alert is POSTed again when an answer is lost (a timeout here, or a dead
                # invocation whose message SQS redelivers): the key lets the classifier act once.
                IDEMPOTENCY_HEADER: alert_id,
            }
            try:
                status = self.post(self.url, body, headers, self.timeout)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, TLS
                last = type(exc).__name__
                continue
            if 200 <= status < 300:
                return ForwardResult(status, attempt, rejected=False)
            if status in REJECTED_STATUSES:
                return ForwardResult(status, attempt, rejected=True)
            last = f"HTTP {status}"
            if status in AUTH_STATUSES:
                refresh_key = True
            elif status not in RETRYABLE_STATUSES:
                break  # e.g. 404 or a redirect: the same request again would fare no better
        raise ForwardError(f"classifier not reached: {last}")
