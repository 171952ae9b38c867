"""Lambda entry point (alerts.api.handler.lambda_handler): API Gateway REST proxy integration,
Cognito user-pool authoriser, two routes: GET /alerts and GET /alerts/{id}/trace.

Dispatch is on the event's `resource` (the route template), not its path: an unknown resource
is a 404, a known one with another method a 405 (API Gateway itself only forwards the methods
the stack declares, so that answer is for a misconfigured API).
"""

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

from alerts.api.api import MAX_TRACE_URL_SECONDS, Result, fetch_trace, list_alerts
from identity.token_api.issue import caller

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "alerts-api")
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Fleetwarden", service=SERVICE)
tracer = Tracer(service=SERVICE)

BOTO_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"})
# SigV4 on the regional virtual-hosted endpoint (botocore would otherwise presign against the
# global s3.amazonaws.com, which redirects for buckets outside us-east-1).
S3_CONFIG = Config(signature_version="s3v4",
                   s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"})
LIST, TRACE = "/alerts", "/alerts/{id}/trace"
ROUTES = {LIST: "GET", TRACE: "GET"}


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    expires_in = int(os.environ.get("TRACE_URL_SECONDS") or "300")
    if not 1 <= expires_in <= MAX_TRACE_URL_SECONDS:
        raise ValueError(f"TRACE_URL_SECONDS must be from 1 to {MAX_TRACE_URL_SECONDS}")
    dynamodb = boto3.resource("dynamodb", config=BOTO_CONFIG)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return {
        "alerts_table": dynamodb.Table(os.environ["ALERTS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "s3": boto3.client("s3", region_name=region, config=S3_CONFIG),
        "data_bucket": os.environ["DATA_BUCKET"],
        "expires_in": expires_in,
        "reader_group": os.environ.get("ALERTS_READER_GROUP") or "analysts",
        "admin_group": os.environ.get("ADMIN_GROUP") or "admins",
    }


def _response(result: Result, headers: dict[str, str] | None = None) -> dict[str, Any]:
    # no-store on every answer: a trace URL is a bearer credential, and alert lists are private.
    return {
        "statusCode": result.status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
        "body": json.dumps(result.body),
    }


def _route(event: dict[str, Any]) -> tuple[Result, dict[str, str]]:
    request = APIGatewayProxyEvent(event)
    resource, method = request.resource, request.http_method
    if resource not in ROUTES:
        return Result(404, {"message": "not found"}, "AlertRequestsInvalid"), {}
    if method != ROUTES[resource]:
        refused = Result(405, {"message": "method not allowed"}, "AlertRequestsInvalid")
        return refused, {"Allow": ROUTES[resource]}
    deps = _dependencies()
    # No authoriser context at all (a misconfigured API) means no caller: refused, not a 500.
    claims = ((event.get("requestContext") or {}).get("authorizer") or {}).get("claims")
    common = {"claims": claims, "alerts_table": deps["alerts_table"], "reader_group": deps["reader_group"],
              "admin_group": deps["admin_group"], "logger": logger}
    if resource == LIST:
        return list_alerts(params=event.get("queryStringParameters"),
                           multi_params=event.get("multiValueQueryStringParameters"), **common), {}
    return fetch_trace(
        alert_id=(event.get("pathParameters") or {}).get("id"),
        audit_table=deps["audit_table"],
        s3=deps["s3"],
        data_bucket=deps["data_bucket"],
        expires_in=deps["expires_in"],
        now=time.time,
        **common,
    ), {}


# Neither the event nor the response (a trace URL) goes to the logs or to X-Ray.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
        username, _ = caller(authorizer.get("claims"))
        route = f"{event.get('httpMethod')} {event.get('resource')}"
        logger.append_keys(caller=username or "unknown", route=route)
        result, headers = _route(event)
    except Exception:  # noqa: BLE001 - a generic 500, never a stack trace or a URL
        logger.exception("alerts request failed")
        result, headers = Result(500, {"message": "internal error"}, "AlertApiErrors"), {}
    metrics.add_metric(name=result.outcome, unit=MetricUnit.Count, value=1)
    logger.info("alerts request answered", extra={"status": result.status, "outcome": result.outcome})
    return _response(result, headers)
