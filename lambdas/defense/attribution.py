"""Whom a refused connection belongs to, for both built-in detectors.

A refused `Connect` carries whatever client id the caller asked for: a claim. What AWS
authenticated is the certificate (the principal). The two sources say so:

* IoT Core's log line (AWSIotLogsV2) of a Connect names the `clientId` and the `principalId`
  ("145179c4...2167", the certificate id for an X.509 client); a failure adds `status: Failure`
  and `reason: AUTHORIZATION_FAILURE`
  (https://docs.aws.amazon.com/iot/latest/developerguide/cwl-format.html#log-mb-connect).
* The lifecycle event `$aws/events/presence/connect_failed/<clientId>` ("Connect attempt
  failure event") carries `clientId`, `timestamp`, `eventType: connect_failed`,
  `connectFailureReason: AUTHORIZATION_FAILED`, `principalIdentifier` ("For TLS mutual
  authentication certificates, this is the certificate ID. For other connections, this is IAM
  credentials."), `sessionIdentifier` and `ipAddress`
  (https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html#connect-authfailure-event).

So a refused Connect counts against its certificate. It counts against a thing only when that
certificate is attached to the thing it claimed to be (a device retrying as itself, e.g. after a
quarantine): then the certificate is that thing's own. Proving the attachment costs one
ListThingPrincipals call, so it is asked only when a certificate crosses a limit (once per
certificate and window), and remembered per container for a window. Anything else stays a
certificate violation, whose containment deactivates that certificate and touches no thing. A
principal that is not a certificate (IAM credentials, a custom authorizer) names no subject that
a violation can carry: the detectors count and log it, nothing more.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from shared.topics import THING_NAME

# UpdateCertificate: certificateId "Fixed length of 64. Pattern: (0x)?[a-fA-F0-9]+"
# (https://docs.aws.amazon.com/iot/latest/apireference/API_UpdateCertificate.html). IoT writes
# them in lowercase; one spelling per certificate keeps its counts and incidents together.
_CERTIFICATE_ID = re.compile(r"[0-9a-fA-F]{64}")
# The claim policy's client ids (identity.tokens.CLAIM_CLIENT_PREFIX; a test keeps them equal).
# Importing it would load `secrets` and `random` into the detector's cold start for one string.
CLAIM_CLIENT_PREFIX = "claim-"
CACHE_SIZE = 1024


def certificate_id(principal: Any) -> str | None:
    """The certificate id `principal` is (lowercase), or None if it is not one."""
    if type(principal) is not str or not _CERTIFICATE_ID.fullmatch(principal):
        return None
    return principal.lower()


class Attachments:
    """Whether a certificate is attached to a thing, from ListThingPrincipals (paginated; a thing
    that does not exist has nothing attached). `client()` builds the IoT client on first use.
    Answers are kept `ttl_seconds` (one detection window) for at most CACHE_SIZE pairs."""

    def __init__(self, client: Callable[[], Any], *, ttl_seconds: int,
                 clock: Callable[[], float] = time.monotonic):
        self._client_factory = client
        self._client: Any = None
        self.ttl = ttl_seconds
        self.clock = clock
        self.cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self.calls = 0  # ListThingPrincipals pages asked for (for metrics and tests)

    def attached(self, certificate: str, thing: str) -> bool:
        if not THING_NAME.fullmatch(thing):
            return False
        key = (certificate, thing)
        now = self.clock()
        hit = self.cache.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        answer = self._ask(certificate, thing)
        if len(self.cache) >= CACHE_SIZE:
            self.cache.clear()
        self.cache[key] = (now, answer)
        return answer

    def _ask(self, certificate: str, thing: str) -> bool:
        if self._client is None:
            self._client = self._client_factory()
        iot = self._client
        suffix = f":cert/{certificate}"
        try:
            for page in iot.get_paginator("list_thing_principals").paginate(thingName=thing):
                self.calls += 1
                principals = page.get("principals", [])
                if any(type(arn) is str and arn.lower().endswith(suffix) for arn in principals):
                    return True
        except iot.exceptions.ResourceNotFoundException:
            return False
        return False


def resolve(violation: dict[str, Any], attachments: Attachments, *, window: int) -> dict[str, Any]:
    """A certificate violation whose certificate is attached to the thing its `clientId` claimed
    becomes that thing's violation, in Defender's shape (same behaviour, values and time; the id
    is the thing's for this window). Any other violation is returned unchanged. Raises what the
    IoT client raises: the caller retries rather than guess."""
    certificate, claimed = violation.get("certificateId"), violation.get("clientId")
    if certificate is None or type(claimed) is not str or not attachments.attached(certificate, claimed):
        return violation
    from shared.violations import make_violation

    behavior = violation["behavior"]
    return make_violation(
        thing=claimed, profile=violation["securityProfileName"], behavior_name=behavior["name"],
        metric=behavior.get("metric"), criteria=behavior.get("criteria"),
        metric_value=violation.get("metricValue"), event_time_ms=violation["violationEventTime"],
        window=window,
    )
