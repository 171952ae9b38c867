"""The command issuer: plain logic over injected clients and a clock, behind the operator API.

Every route is for members of the admins group only; a refused privileged request is itself audited.
A command is validated completely (type, params as the device checks them, target exists, artifact
uploaded with the signed SHA-256 and size) before anything is written; then the audit record
(who, command, target, job id, nonce) is written BEFORE the job is created, so no job exists that the
audit trail does not name. A failure after the audit record is audited too (`command.send-failed`)
and the request can simply be repeated: nothing half-made is reused.

Remote access: OpenTunnel with `destinationConfig` {thingName, services: [SSH]} and
`timeoutConfig.maxLifetimeTimeoutMinutes` (https://docs.aws.amazon.com/iot/latest/apireference/
API_iot-secure-tunneling_OpenTunnel.html). Secure tunneling itself delivers the destination token to
the thing on `$aws/things/<thing>/tunnels/notify` ("Configuring a remote device and using IoT agent",
configure-remote-device.html); this code drops `destinationAccessToken` unread and returns the
source token only in the answer to the operator who asked: never in the job, the audit or a log.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from shared import audit, command_jobs, commands
from shared.api import ApiError
from shared.commands import CommandRefused
from shared.operators import caller
from shared.runtime import error_code
from shared.topics import THING_NAME

INVALID = "CommandRequestsInvalid"
FORBIDDEN = "CommandRequestsForbidden"
ERRORS = "CommandErrors"
MAX_BODY = 8192
MAX_REASON = 256
_NAME = THING_NAME
_JOB_ID = re.compile(r"^fw-[a-z-]{1,24}-[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_quiet = logging.getLogger(__name__)


class BadRequest(ApiError):
    def __init__(self, message: str):
        super().__init__(400, message, INVALID)


@dataclass(frozen=True)
class IssuerSettings:
    admin_group: str = "admins"
    default_lifetime_seconds: int = 7 * 24 * 3600
    max_lifetime_seconds: int = commands.MAX_LIFETIME_SECONDS
    max_artifact_bytes: int = 512 * 1024 * 1024
    upload_url_seconds: int = 900
    tunnel_lifetime_minutes: int = 60
    rotation_grace_seconds: int = 72 * 3600
    jobs: command_jobs.JobSettings = command_jobs.JobSettings()


class Issuer:
    def __init__(self, *, iot: Any, signer: command_jobs.KmsSigner, audit_table: Any, settings: IssuerSettings,
                 s3: Any = None, tunnels: Any = None, rotations_table: Any = None, now: Callable[[], float],
                 logger: Any = _quiet):
        self.iot, self.signer, self.audit_table, self.settings = iot, signer, audit_table, settings
        self.s3, self.tunnels, self.rotations, self.now, self.log = s3, tunnels, rotations_table, now, logger

    # ---- authorisation and audit ----------------------------------------------------------------

    def authorise(self, claims: Any, action: str, target: str) -> str:
        username, groups = caller(claims)
        if username is None or self.settings.admin_group not in groups:
            self._audit(f"{action}-refused", username or "unknown", target,
                        {"reason": f"caller is not in group {self.settings.admin_group}"}, quiet=True)
            raise ApiError(403, f"only members of {self.settings.admin_group} may use the command API", FORBIDDEN)
        return username

    def _audit(self, action: str, actor: str, target: str, details: Mapping[str, Any], *, quiet: bool = False) -> None:
        try:
            audit.record(self.audit_table, action=action, actor=actor, target=target, details=details,
                         now=self.now, logger=self.log)
        except Exception:  # noqa: BLE001
            if not quiet:
                raise
            self.log.exception("could not audit a refused command request")

    # ---- POST /commands --------------------------------------------------------------------------

    def send(self, claims: Any, body: str | None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Sign, audit and queue one command. With an `Idempotency-Key` (fleetctl sends one per request and
        re-sends it once after an indefinite answer) the job id is derived from the operator and the key, so a
        re-sent request finds its own job (CreateJob: ResourceAlreadyExistsException) instead of queuing a
        second: not for remote access, whose every request opens a tunnel."""
        # Authorise before validating: a non-admin learns nothing about the checks.
        username = self.authorise(claims, "command.send", _best_target(body))
        key = _idempotency_key(idempotency_key)
        request = _json_object(body)
        target = _target(request)
        command = request.get("command")
        if command not in commands.COMMANDS:
            raise BadRequest(f"command must be one of {', '.join(commands.COMMANDS)}")
        params = request.get("params", {})
        if not isinstance(params, dict):
            raise BadRequest("params must be an object")
        lifetime = request.get("lifetime_seconds", self.settings.default_lifetime_seconds)
        if type(lifetime) is not int or not 60 <= lifetime <= self.settings.max_lifetime_seconds:
            raise BadRequest(f"lifetime_seconds must be a whole number from 60 to {self.settings.max_lifetime_seconds}")
        unknown = set(request) - {"command", "params", "thing", "group", "lifetime_seconds"}
        if unknown:
            raise BadRequest(f"unexpected fields: {', '.join(sorted(unknown))}")

        if command == "remote-access":
            if "thing" not in target:
                raise BadRequest("remote access opens a tunnel to one thing, not a group")
            if params:
                raise BadRequest("remote-access takes no params: the tunnel is opened by the issuer")
            lifetime = min(lifetime, self.settings.tunnel_lifetime_minutes * 60)
        target_arn = self._target_arn(target)
        if command == "software-update":
            self._check_artifact(params)

        now = self.now()
        nonce = commands.new_nonce()
        job_id = command_jobs.new_job_id(
            command, seed=None if key is None or command == "remote-access" else f"{username}\n{key}")
        signed = None
        if command != "remote-access":  # sign first: a document the device would refuse is never audited as sent
            signed = self._sign(command, params, username, lifetime, now, target, nonce)
        self._audit("command.send", username, _target_text(target),
                    {"command": command, "job_id": job_id, "nonce": nonce, "lifetime_seconds": lifetime})
        answer: dict[str, Any] = {}
        try:
            if command == "remote-access":
                tunnel = self.tunnels.open_tunnel(
                    description=f"Fleetwarden remote access by {username}"[:2048],
                    destinationConfig={"thingName": target["thing"], "services": list(commands.TUNNEL_SERVICES)},
                    timeoutConfig={"maxLifetimeTimeoutMinutes": self.settings.tunnel_lifetime_minutes})
                answer = {"tunnel_id": tunnel["tunnelId"], "source_access_token": tunnel["sourceAccessToken"]}
                params = {"tunnel_id": tunnel["tunnelId"], "services": list(commands.TUNNEL_SERVICES),
                          "expires_at": int(now) + self.settings.tunnel_lifetime_minutes * 60}
                signed = self._sign(command, params, username, lifetime, now, target, nonce)
            assert signed is not None
            self.iot.create_job(**command_jobs.job_request(job_id=job_id, target_arn=target_arn, signed=signed,
                                                           settings=self.settings.jobs, now=now))
        except Exception as error:  # noqa: BLE001 - recorded, then answered
            code = error_code(error)
            queued = self._queued_anyway(job_id, code)
            if queued is not True:
                self.log.exception("command not queued", extra={"job_id": job_id, "code": code})
                self._audit("command.send-failed", username, _target_text(target),
                            {"command": command, "job_id": job_id, "error": code})
                if queued is None:
                    raise ApiError(502, f"it is not known whether the command was queued ({code}): check job "
                                        f"{job_id} before repeating the request", ERRORS) from None
                raise ApiError(502, f"the command was not queued ({code}); nothing was sent, repeat the request",
                               ERRORS) from None
            self.log.warning("CreateJob's answer was lost but the job exists: queued",
                             extra={"job_id": job_id, "code": code})
        return {"job_id": job_id, "command": command, "target": target, "not_after": signed["not_after"],
                "document": signed, **answer}

    def _queued_anyway(self, job_id: str, code: str) -> bool | None:
        """After a failed send: does the job exist after all? True when CreateJob was applied but its
        answer lost (a timeout; or botocore re-sent it and IoT answered ResourceAlreadyExistsException,
        which for this request's job id, random or derived from this operator's Idempotency-Key, can only be
        its own first attempt or the same request sent before: CreateJob Errors,
        https://docs.aws.amazon.com/iot/latest/apireference/API_CreateJob.html); False when it
        does not; None when that cannot be told (DescribeJob failed too). The fault sweep
        (tests/faults) found the first two answered "nothing was sent, repeat": a repeat queued the
        command twice."""
        if code == "ResourceAlreadyExistsException":
            return True
        try:
            self.iot.describe_job(jobId=job_id)
            return True
        except self.iot.exceptions.ResourceNotFoundException:
            return False
        except Exception:  # noqa: BLE001 - unknown: the answer says so
            self.log.exception("could not tell whether the command was queued", extra={"job_id": job_id})
            return None

    def _sign(self, command, params, username, lifetime, now, target, nonce) -> dict[str, Any]:
        try:
            return command_jobs.sign_command(self.signer, command=command, params=params, issuer=username,
                                             lifetime_seconds=lifetime, now=now, nonce=nonce, **target)
        except CommandRefused as refused:
            raise BadRequest(refused.detail) from None
        except ValueError as error:
            raise BadRequest(str(error)) from None

    def _target_arn(self, target: Mapping[str, str]) -> str:
        try:
            if "thing" in target:
                return self.iot.describe_thing(thingName=target["thing"])["thingArn"]
            return self.iot.describe_thing_group(thingGroupName=target["group"])["thingGroupArn"]
        except self.iot.exceptions.ResourceNotFoundException:
            raise ApiError(404, f"no such {_target_text(target)}", INVALID) from None

    def _check_artifact(self, params: Mapping[str, Any]) -> None:
        """The object the device will download is exactly what is signed: S3 checked its SHA-256 on
        upload (the upload URL carries x-amz-checksum-sha256), HeadObject with ChecksumMode ENABLED
        returns it ("ChecksumSHA256", https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html)."""
        try:
            commands.check_params("software-update", params)
        except CommandRefused as refused:
            raise BadRequest(refused.detail) from None
        if params["size"] > self.settings.max_artifact_bytes:
            raise BadRequest(f"artifacts are at most {self.settings.max_artifact_bytes} bytes")
        key = command_jobs.artifact_key(params["sha256"])
        try:
            head = self.s3.head_object(Bucket=self.settings.jobs.artifacts_bucket, Key=key, ChecksumMode="ENABLED")
        except self.s3.exceptions.ClientError as error:
            if error_code(error) in ("404", "NoSuchKey", "NotFound"):
                raise BadRequest(f"artifact {params['sha256']} has not been uploaded") from None
            raise
        if head.get("ContentLength") != params["size"]:
            raise BadRequest("the uploaded artifact's size differs from the signed size")
        if head.get("ChecksumSHA256") != _b64_sha256(params["sha256"]):
            raise BadRequest("the uploaded artifact's SHA-256 differs from the signed SHA-256")

    # ---- POST /artifacts ------------------------------------------------------------------------

    def upload_url(self, claims: Any, body: str | None) -> dict[str, Any]:
        username = self.authorise(claims, "artifact.upload", "artifact")
        request = _json_object(body)
        sha256, size = request.get("sha256"), request.get("size")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise BadRequest("sha256 must be 64 lowercase hex characters")
        if type(size) is not int or not 0 < size <= self.settings.max_artifact_bytes:
            raise BadRequest(f"size must be 1 to {self.settings.max_artifact_bytes} bytes")
        self._audit("artifact.upload", username, f"artifact:{sha256}", {"size": size})
        # The checksum is part of the signature: S3 refuses a body whose SHA-256 differs.
        url = self.s3.generate_presigned_url(
            "put_object", ExpiresIn=self.settings.upload_url_seconds,
            Params={"Bucket": self.settings.jobs.artifacts_bucket, "Key": command_jobs.artifact_key(sha256),
                    "ChecksumSHA256": _b64_sha256(sha256), "ContentLength": size})
        return {"upload_url": url, "headers": {"x-amz-checksum-sha256": _b64_sha256(sha256)},
                "expires_in": self.settings.upload_url_seconds}

    # ---- GET /commands, GET /commands/{job_id}, POST /commands/{job_id}/cancel -------------------

    def list(self, claims: Any, query: Mapping[str, str] | None) -> dict[str, Any]:
        query = query or {}
        thing, group = query.get("thing"), query.get("group")
        self.authorise(claims, "command.list", thing or group or "commands")
        if thing is not None:
            _name(thing, "thing")
            executions = self.iot.list_job_executions_for_thing(thingName=thing, maxResults=100)
            return {"commands": [{"job_id": e["jobId"], "status": e["jobExecutionSummary"]["status"]}
                                 for e in executions.get("executionSummaries", [])
                                 if e["jobId"].startswith(command_jobs.JOB_ID_PREFIX)]}
        kwargs = {"thingGroupName": _name(group, "group")} if group is not None else {}
        jobs = self.iot.list_jobs(maxResults=100, **kwargs)
        return {"commands": [{"job_id": j["jobId"], "status": j["status"]} for j in jobs.get("jobs", [])
                             if j["jobId"].startswith(command_jobs.JOB_ID_PREFIX)]}

    def status(self, claims: Any, job_id: str, query: Mapping[str, str] | None) -> dict[str, Any]:
        thing = (query or {}).get("thing")
        self.authorise(claims, "command.status", job_id)
        _job_id(job_id)
        try:
            job = self.iot.describe_job(jobId=job_id)["job"]
            answer = {"job_id": job_id, "status": job["status"],
                      "counts": job.get("jobProcessDetails", {})}
            if thing is not None:
                execution = self.iot.describe_job_execution(jobId=job_id, thingName=_name(thing, "thing"))
                answer["execution"] = {"thing": thing, "status": execution["execution"]["status"],
                                       "details": execution["execution"].get("statusDetails", {})}
        except self.iot.exceptions.ResourceNotFoundException:
            raise ApiError(404, f"no such command {job_id}", INVALID) from None
        return answer

    def cancel(self, claims: Any, job_id: str, body: str | None) -> dict[str, Any]:
        username = self.authorise(claims, "command.cancel", job_id)
        _job_id(job_id)
        request = _json_object(body) if body else {}
        reason = request.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise BadRequest(f"reason must be a string of at most {MAX_REASON} characters")
        self._audit("command.cancel", username, job_id, {"reason": reason or "-"})
        try:
            self.iot.cancel_job(jobId=job_id, reasonCode="OPERATOR", comment=(reason or f"cancelled by {username}")[:2028])
        except self.iot.exceptions.ResourceNotFoundException:
            raise ApiError(404, f"no such command {job_id}", INVALID) from None
        return {"job_id": job_id, "status": "CANCELED"}

    # ---- POST /rotations/{thing}/retire -----------------------------------------------------------

    def retire(self, claims: Any, thing: Any, body: str | None) -> dict[str, Any]:
        """An operator retires a rotated thing's OLD certificate: INACTIVE once the grace period has passed
        without the device's confirmation (it may have lost the answer, or be stuck), or REVOKED on request
        (also after a confirmation). The new certificate is never touched, so the device keeps the identity
        it was issued. Audited before UpdateCertificate."""
        target = f"thing:{thing}" if isinstance(thing, str) and _NAME.fullmatch(thing) else "rotations"
        username = self.authorise(claims, "certificate.retire", target)
        _name(thing, "thing")
        request = _json_object(body) if body else {}
        status = request.get("status", "INACTIVE")
        if status not in ("INACTIVE", "REVOKED") or set(request) - {"status"}:
            raise BadRequest('body is {"status": "INACTIVE" | "REVOKED"}')
        row = self.rotations.get_item(Key={"thing": thing}, ConsistentRead=True).get("Item")
        if row and row.get("status") == "issuing":  # the rotation function is minting the new certificate
            raise ApiError(409, f"the rotation of {thing} is still issuing its new certificate; retry once "
                                "the device has confirmed it", INVALID)
        if not row or row.get("status") not in ("issued", "confirmed", "retired"):
            raise ApiError(404, f"no rotation of {thing} is recorded", INVALID)
        if row["status"] == "issued":
            if not row.get("attached"):
                raise ApiError(409, "the new certificate is not attached yet; the rotation is still in progress",
                               INVALID)
            waited = self.now() - _epoch(row["issued_at"])
            if waited < self.settings.rotation_grace_seconds:
                hours = self.settings.rotation_grace_seconds // 3600
                raise ApiError(409, f"the device has not confirmed yet; retire the old certificate after the "
                                    f"{hours} h grace period ({int(waited // 3600)} h so far)", INVALID)
        old = row["old_certificate_id"]
        self._audit("certificate.retire", username, f"thing:{thing}",
                    {"certificate_id": old, "status": status, "rotation": row["status"]})
        try:
            self.iot.update_certificate(certificateId=old, newStatus=status)
        except self.iot.exceptions.CertificateStateException:
            pass  # already REVOKED (or being transferred): nothing connects with it
        self.rotations.update_item(Key={"thing": thing}, UpdateExpression="SET #s = :r, retired_by = :u",
                                   ExpressionAttributeNames={"#s": "status"},
                                   ExpressionAttributeValues={":r": "retired", ":u": username})
        return {"thing": thing, "certificate_id": old, "status": status,
                "kept": row["new_certificate_id"]}

    def public_key(self, claims: Any) -> dict[str, Any]:
        self.authorise(claims, "command.public-key", "public-key")
        return {"key_id": self.signer.key_id, "pem": self.signer.public_pem()}


# ---- parsing ---------------------------------------------------------------------------------------

def _json_object(body: str | None) -> dict[str, Any]:
    if not body:
        raise BadRequest("request body must be a JSON object")
    if len(body) > MAX_BODY:
        raise BadRequest("request body is too large")
    try:
        value = commands.parse(body)
    except CommandRefused as refused:
        raise BadRequest(f"request body: {refused.detail}") from None
    return value


def _name(value: Any, kind: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise BadRequest(f"{kind} must be a thing{' group' if kind == 'group' else ''} name")
    return value


def _target(request: Mapping[str, Any]) -> dict[str, str]:
    if ("thing" in request) == ("group" in request):
        raise BadRequest("name exactly one target: thing or group")
    kind = "thing" if "thing" in request else "group"
    return {kind: _name(request[kind], kind)}


def _target_text(target: Mapping[str, str]) -> str:
    kind, name = next(iter(target.items()))
    return f"{kind}:{name}"


_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _idempotency_key(value: Any) -> str | None:
    """The request's Idempotency-Key header: absent, or 16-64 of [A-Za-z0-9_-] (fleetctl sends 32 hex)."""
    if value is None:
        return None
    if not isinstance(value, str) or not _IDEMPOTENCY_KEY.fullmatch(value):
        raise BadRequest("Idempotency-Key must be 16 to 64 of A-Z a-z 0-9 _ -")
    return value


def _job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise BadRequest("not a Fleetwarden command id")
    return job_id


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _b64_sha256(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _best_target(body: str | None) -> str:
    """What a refused request asked for, for its audit record (caller-controlled: validated or dropped)."""
    try:
        return _target_text(_target(_json_object(body)))
    except ApiError:
        return "commands"
