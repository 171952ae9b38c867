"""Signed commands as IoT jobs: the KMS signer and the one CreateJob every sender uses (the issuer API,
the auto-response's shutdown, the rotation starter), so every job has the same timeout, retry, abort
and expiry settings.

* Signing: KMS Sign, MessageType RAW, ECDSA_SHA_256 on the stage's ECC_NIST_P256 key. "Messages can
  be 0-4096 bytes. To sign a larger message, provide a message digest" (Sign, Request Parameters,
  https://docs.aws.amazon.com/kms/latest/APIReference/API_Sign.html): a signed document is at most
  4096 canonical bytes (MAX_SIGNED_BYTES), which the issuer checks before signing.
* The key id documents carry is the SHA-256 of GetPublicKey's DER SubjectPublicKeyInfo
  (API_GetPublicKey.html). The stack reads it at deploy time and passes it in (SIGNING_KEY_ID), so
  signing costs one KMS call; without it, it is computed once per container (one more call).
* Expiry: `schedulingConfig.endTime` with `endBehavior: CANCEL` ("Specifies the end behavior for all
  job executions after a job reaches the selected endTime"; endTime at least thirty minutes from now,
  YYYY-MM-DD and HH:MM, https://docs.aws.amazon.com/iot/latest/apireference/API_SchedulingConfig.html)
  is set when the document lives at least END_TIME_MIN_SECONDS; it is `not_after` rounded DOWN to the
  minute, so Jobs never hands out a document after it expired. Whether endTime is accepted without a
  startTime is not stated there (unverified); either way the device-side verifier refuses an expired
  document, which is what the design relies on.
* Timeout: `timeoutConfig.inProgressTimeoutInMinutes` ("the execution status is set to TIMED_OUT" when the
  device does not finish in time, API_TimeoutConfig.html); retry: `jobExecutionsRetryConfig` on
  TIMED_OUT (API_JobExecutionsRetryConfig.html); abort: `abortConfig` cancels a group job whose
  executions fail at scale (API_AbortConfig.html).
* Software updates: the job document's unsigned `artifact_url` is the placeholder
  `${aws:iot:s3-presigned-url:<https S3 URL>}`, which Jobs replaces with a presigned URL made with
  `presignedUrlConfig.roleArn`, "valid values are 60 - 3600" seconds, "generated when Jobs receives an
  MQTT request for the job document" (https://docs.aws.amazon.com/iot/latest/apireference/
  API_PresignedUrlConfig.html).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from . import commands  # relative: the stacks import this module as lambdas.shared.command_jobs

MAX_SIGNED_BYTES = 4096  # KMS Sign with MessageType RAW
END_TIME_MIN_SECONDS = 31 * 60  # endTime must be >= 30 min ahead; one minute of margin for the rounding
ARTIFACT_PREFIX = "artifacts/"
JOB_ID_PREFIX = "fw-"
ABORT_MIN_EXECUTED = 10
ABORT_FAILED_PERCENT = 50


class KmsSigner:
    """`signer(canonical bytes) -> DER signature` for `commands.sign`, and the key's id and PEM."""

    def __init__(self, kms: Any, key_arn: str, key_id: str | None = None):
        self.kms, self.key_arn, self._key_id = kms, key_arn, key_id or None
        self._public_der: bytes | None = None

    @property
    def public_der(self) -> bytes:
        if self._public_der is None:
            self._public_der = self.kms.get_public_key(KeyId=self.key_arn)["PublicKey"]
        return self._public_der

    @property
    def key_id(self) -> str:
        if self._key_id is None:
            self._key_id = commands.key_id(self.public_der)
        return self._key_id

    def public_pem(self) -> str:
        from base64 import encodebytes

        body = encodebytes(self.public_der).decode("ascii").replace("\n", "")
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return "\n".join(["-----BEGIN PUBLIC KEY-----", *lines, "-----END PUBLIC KEY-----"]) + "\n"

    def __call__(self, message: bytes) -> bytes:
        if len(message) > MAX_SIGNED_BYTES:
            raise ValueError(f"a signed document is at most {MAX_SIGNED_BYTES} bytes (KMS Sign RAW)")
        return self.kms.sign(KeyId=self.key_arn, Message=message, MessageType="RAW",
                             SigningAlgorithm=commands.SIGNING_ALGORITHM)["Signature"]


@dataclass(frozen=True)
class JobSettings:
    timeout_minutes: int = 60
    retry_attempts: int = 2
    artifacts_bucket: str = ""
    presign_role_arn: str = ""
    presign_seconds: int = 3600
    region: str = ""


def new_job_id(command: str, seed: str | None = None) -> str:
    """`fw-<command>-<32 hex>`: random, or derived from `seed` (the same seed, the same job: idempotent).
    Job ids are [a-zA-Z0-9_-]{1,64} (CreateJob, jobId)."""
    tail = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:32] if seed is not None else uuid.uuid4().hex
    return f"{JOB_ID_PREFIX}{command}-{tail}"


def artifact_key(sha256: str) -> str:
    return f"{ARTIFACT_PREFIX}{sha256}"


def artifact_url_placeholder(bucket: str, region: str, sha256: str) -> str:
    return f"${{aws:iot:s3-presigned-url:https://s3.{region}.amazonaws.com/{bucket}/{artifact_key(sha256)}}}"


def end_time(not_after: int) -> str:
    """`not_after` rounded down to the minute, as SchedulingConfig.endTime wants it (UTC)."""
    floor = math.floor(not_after / 60) * 60
    return datetime.fromtimestamp(floor, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M")


def job_request(*, job_id: str, target_arn: str, signed: Mapping[str, Any], settings: JobSettings,
                now: float) -> dict[str, Any]:
    """The CreateJob arguments for a signed document (pure: tests read exactly what is sent)."""
    unsigned: dict[str, Any] = {}
    request: dict[str, Any] = {
        "jobId": job_id,
        "targets": [target_arn],
        "description": f"Fleetwarden {signed['command']} by {signed['issuer']}"[:2028],
        "targetSelection": "SNAPSHOT",
        "timeoutConfig": {"inProgressTimeoutInMinutes": settings.timeout_minutes},
        "abortConfig": {"criteriaList": [{
            "failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": ABORT_FAILED_PERCENT,
            "minNumberOfExecutedThings": ABORT_MIN_EXECUTED}]},
    }
    if settings.retry_attempts:
        request["jobExecutionsRetryConfig"] = {"criteriaList": [
            {"failureType": "TIMED_OUT", "numberOfRetries": settings.retry_attempts}]}
    if signed["not_after"] - now >= END_TIME_MIN_SECONDS:
        request["schedulingConfig"] = {"endTime": end_time(signed["not_after"]), "endBehavior": "CANCEL"}
    if signed["command"] == "software-update":
        if not (settings.artifacts_bucket and settings.presign_role_arn and settings.region):
            raise ValueError("software updates need the artifacts bucket, presign role and region")
        unsigned["artifact_url"] = artifact_url_placeholder(settings.artifacts_bucket, settings.region,
                                                             signed["params"]["sha256"])
        request["presignedUrlConfig"] = {"roleArn": settings.presign_role_arn,
                                         "expiresInSec": settings.presign_seconds}
    request["document"] = json.dumps(commands.job_document(signed, **unsigned), sort_keys=True,
                                     separators=(",", ":"), ensure_ascii=False)
    return request


def sign_command(signer: KmsSigner, *, command: str, params: Mapping[str, Any], issuer: str,
                 lifetime_seconds: int, now: float, thing: str | None = None,
                 group: str | None = None, nonce: str | None = None) -> dict[str, Any]:
    """Check the params as the device will, build and sign the document (ValueError / CommandRefused
    for anything the device would refuse)."""
    commands.check_params(command, params)
    document = commands.unsigned_document(command=command, params=params, issuer=issuer, key=signer.key_id,
                                          issued_at=int(now), lifetime_seconds=lifetime_seconds,
                                          thing=thing, group=group, nonce=nonce)
    if len(commands.canonical_bytes(document)) > MAX_SIGNED_BYTES:
        raise ValueError(f"the signed document would exceed {MAX_SIGNED_BYTES} bytes")
    return commands.sign(document, signer)
