"""Lambda entry point (identity.token_api.handler.lambda_handler): API Gateway REST proxy integration,
Cognito user-pool authoriser, one route: POST /provisioning-tokens."""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from botocore.config import Config

from identity.tokens import serial_pattern
from identity.token_api.issue import Result, issue_token

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "token-api")
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Fleetwarden", service=SERVICE)
tracer = Tracer(service=SERVICE)

BOTO_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"})
ROUTE = ("POST", "/provisioning-tokens")


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    dynamodb = boto3.resource("dynamodb", config=BOTO_CONFIG)
    ttl = int(os.environ.get("TOKEN_TTL_SECONDS", "900"))
    if ttl <= 0:
        raise ValueError("TOKEN_TTL_SECONDS must be positive")
    return {
        "tokens_table": dynamodb.Table(os.environ["TOKENS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "pattern": serial_pattern(),
        "ttl_seconds": ttl,
        "admin_group": os.environ.get("ADMIN_GROUP") or "admins",
    }


def _response(result: Result) -> dict[str, Any]:
    # no-store on every answer: a 201 carries a secret that no cache or proxy may keep.
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    return {"statusCode": result.status, "headers": headers, "body": json.dumps(result.body)}


# Neither the response (it holds the token) nor the event goes to the logs or to X-Ray.
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        request = APIGatewayProxyEvent(event)
        if (request.http_method, request.resource) != ROUTE:
            result = Result(404, {"message": "not found"}, "ProvisioningTokenRequestsInvalid")
        else:
            # No authoriser context at all (a misconfigured API) means no caller: refused, not a 500.
            authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
            result = issue_token(
                claims=authorizer.get("claims"),
                body=request.decoded_body,
                **_dependencies(),
                now=time.time,
                logger=logger,
            )
    except Exception:  # noqa: BLE001 - a generic 500, never a stack trace or a token
        logger.exception("token request failed")
        result = Result(500, {"message": "internal error; no token was issued"}, "ProvisioningTokenErrors")
    metrics.add_metric(name=result.outcome, unit=MetricUnit.Count, value=1)
    return _response(result)
