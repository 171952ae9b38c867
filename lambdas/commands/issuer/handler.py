"""Lambda entry point (commands.issuer.handler.lambda_handler): API Gateway REST proxy integration, Cognito
user-pool authoriser, routes:

    POST /commands                      sign and queue a command (a job)
    GET  /commands                      ?thing=T or ?group=G: its commands
    GET  /commands/{job_id}             ?thing=T adds that thing's execution
    POST /commands/{job_id}/cancel      cancel a queued command
    POST /artifacts                     an upload URL for a software-update artifact
    POST /rotations/{thing}/retire      retire a rotated thing's old certificate (grace period / revoke)
    GET  /public-key                    the signing key's PEM and key id

shared.api answers everything else (404, 405, the generic 500). Neither events nor answers are logged:
an answer can carry a tunnel's source access token or an upload URL.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response

from commands.issuer.issue import ERRORS, INVALID, Issuer, IssuerSettings
from shared.api import OperatorApi
from shared.command_jobs import JobSettings, KmsSigner
from shared.runtime import boto_config, client, handler_runtime, resource

runtime = handler_runtime("command-issuer")
logger = runtime.logger
api = OperatorApi(runtime, name="commands", invalid=INVALID, failed=ERRORS)


@functools.cache
def _issuer() -> Issuer:
    """Built on first use, once per container (and after the env is set, in tests)."""
    env = os.environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    s3_config = boto_config(synchronous=True, signature_version="s3v4",
                            s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"})
    jobs = JobSettings(timeout_minutes=int(env["JOB_TIMEOUT_MINUTES"]), retry_attempts=int(env["JOB_RETRY_ATTEMPTS"]),
                       artifacts_bucket=env["ARTIFACTS_BUCKET"], presign_role_arn=env["PRESIGN_ROLE_ARN"],
                       presign_seconds=int(env["PRESIGN_SECONDS"]), region=region)
    settings = IssuerSettings(admin_group=env.get("ADMIN_GROUP") or "admins",
                              default_lifetime_seconds=int(env["DEFAULT_LIFETIME_SECONDS"]),
                              max_artifact_bytes=int(env["MAX_ARTIFACT_BYTES"]),
                              tunnel_lifetime_minutes=int(env["TUNNEL_LIFETIME_MINUTES"]),
                              rotation_grace_seconds=int(env["ROTATION_GRACE_SECONDS"]), jobs=jobs)
    dynamodb = resource("dynamodb", synchronous=True)
    return Issuer(iot=client("iot", synchronous=True),
                  signer=KmsSigner(client("kms", synchronous=True), env["SIGNING_KEY_ARN"], env.get("SIGNING_KEY_ID")),
                  audit_table=dynamodb.Table(env["AUDIT_TABLE"]), rotations_table=dynamodb.Table(env["ROTATIONS_TABLE"]),
                  s3=client("s3", region_name=region or None, config=s3_config),
                  tunnels=client("iotsecuretunneling", synchronous=True),
                  settings=settings, now=time.time, logger=logger)


@api.post("/commands")
def post_command() -> Response:
    event = api.current_event
    key = event.get_header_value("Idempotency-Key", case_sensitive=False)
    return api.answer(201, _issuer().send(api.claims, event.decoded_body, idempotency_key=key), "CommandsQueued")


@api.get("/commands")
def get_commands() -> Response:
    return api.answer(200, _issuer().list(api.claims, api.current_event.query_string_parameters), "CommandsListed")


@api.get("/commands/{job_id}")
def get_command() -> Response:
    event = api.current_event
    body = _issuer().status(api.claims, (event.path_parameters or {}).get("job_id"), event.query_string_parameters)
    return api.answer(200, body, "CommandsDescribed")


@api.post("/commands/{job_id}/cancel")
def cancel_command() -> Response:
    event = api.current_event
    body = _issuer().cancel(api.claims, (event.path_parameters or {}).get("job_id"), event.decoded_body)
    return api.answer(200, body, "CommandsCancelled")


@api.post("/artifacts")
def post_artifact() -> Response:
    return api.answer(201, _issuer().upload_url(api.claims, api.current_event.decoded_body), "ArtifactUploadUrls")


@api.post("/rotations/{thing}/retire")
def retire_certificate() -> Response:
    event = api.current_event
    body = _issuer().retire(api.claims, (event.path_parameters or {}).get("thing"), event.decoded_body)
    return api.answer(200, body, "CertificatesRetired")


@api.get("/public-key")
def get_public_key() -> Response:
    return api.answer(200, _issuer().public_key(api.claims), "PublicKeyRead")


@logger.inject_lambda_context(log_event=False, clear_state=True)
@runtime.metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return api.resolve(event, context)
