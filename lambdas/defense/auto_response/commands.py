"""Containment's shutdown step: a signed `shutdown` command queued as an IoT job for the thing.

It runs after the quarantine (whose deny policy leaves the jobs topics open: see the identity
stack's quarantine policy) and before the certificates are deactivated and the session ended, so a
connected device is pushed `notify-next` while it can still receive it, and a device that kept its
certificate (revocation = quarantine-only) finds the job on its next connection.

The job id is derived from the violation id (`fw-shutdown-<32 hex of SHA-256>`): a retried
containment calls this again until the step is recorded as done, and CreateJob on an existing job id
raises ResourceAlreadyExistsException ("The resource already exists", CreateJob Errors,
https://docs.aws.amazon.com/iot/latest/apireference/API_CreateJob.html), read here as already queued.
Any other failure (KMS, IoT) is a ClientError that fails the step, so Lambda retries the invocation.
Cost: one KMS Sign and one CreateJob per contained thing (plus one GetPublicKey per container).
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from shared.command_jobs import JobSettings, KmsSigner, job_request, new_job_id, sign_command

QUEUED = "queued"
ISSUER = "auto-response"
_INCIDENT = re.compile(r"^[A-Za-z0-9:._-]{1,128}$")


class ShutdownQueue:
    """`queue(thing, iot, incident_id=...) -> QUEUED` (the Responder's `queue_shutdown`)."""

    def __init__(self, signer: KmsSigner, *, thing_arn_prefix: str, jobs: JobSettings, lifetime_seconds: int,
                 now: Callable[[], float] = time.time):
        self.signer, self.thing_arn_prefix, self.jobs = signer, thing_arn_prefix, jobs
        self.lifetime_seconds, self.now = lifetime_seconds, now

    def __call__(self, thing: str, iot: Any, *, incident_id: str | None = None) -> str:
        params: dict[str, Any] = {"reason": "containment"}
        if incident_id and _INCIDENT.match(incident_id):
            params["incident"] = incident_id
        now = self.now()
        signed = sign_command(self.signer, command="shutdown", params=params, issuer=ISSUER,
                              lifetime_seconds=self.lifetime_seconds, now=now, thing=thing)
        job_id = new_job_id("shutdown", seed=f"incident:{incident_id or thing}")
        try:
            iot.create_job(**job_request(job_id=job_id, target_arn=f"{self.thing_arn_prefix}{thing}",
                                         signed=signed, settings=self.jobs, now=now))
        except iot.exceptions.ResourceAlreadyExistsException:
            pass  # an earlier attempt of this containment queued it
        return QUEUED
