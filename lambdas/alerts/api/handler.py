"""Lambda entry point (alerts.api.handler.lambda_handler): API Gateway REST proxy integration,
Cognito user-pool authoriser, two routes: GET /alerts and GET /alerts/{id}/trace (shared.api
answers everything else: 404, 405, the generic 500).

No Powertools Tracer: a subsegment per AWS call is not worth ~120 ms of cold start; Lambda's
active tracing still records every request.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response

from alerts.api.parameters import INVALID
from alerts.api.routes import ERRORS, MAX_TRACE_URL_SECONDS, fetch_trace, list_alerts
from shared.api import OperatorApi
from shared.runtime import boto_config, client, handler_runtime, resource

runtime = handler_runtime("alerts-api")
logger = runtime.logger
api = OperatorApi(runtime, name="alerts", invalid=INVALID, failed=ERRORS)


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    expires_in = int(os.environ.get("TRACE_URL_SECONDS") or "300")
    if not 1 <= expires_in <= MAX_TRACE_URL_SECONDS:
        raise ValueError(f"TRACE_URL_SECONDS must be from 1 to {MAX_TRACE_URL_SECONDS}")
    dynamodb = resource("dynamodb", synchronous=True)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    # SigV4 on the regional virtual-hosted endpoint (botocore would otherwise presign against the
    # global s3.amazonaws.com, which redirects for buckets outside us-east-1).
    s3_config = boto_config(synchronous=True, signature_version="s3v4",
                            s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"})
    return {
        "alerts_table": dynamodb.Table(os.environ["ALERTS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "s3": client("s3", region_name=region, config=s3_config),
        "data_bucket": os.environ["DATA_BUCKET"],
        "expires_in": expires_in,
        "reader_group": os.environ.get("ALERTS_READER_GROUP") or "analysts",
        "admin_group": os.environ.get("ADMIN_GROUP") or "admins",
    }


@api.get("/alerts")
def get_alerts() -> Response:
    deps, event = _dependencies(), api.current_event
    body = list_alerts(claims=api.claims, params=event.query_string_parameters,
                       multi_params=event.multi_value_query_string_parameters,
                       alerts_table=deps["alerts_table"], reader_group=deps["reader_group"],
                       admin_group=deps["admin_group"], logger=logger)
    return api.answer(200, body, "AlertsListed")


@api.get("/alerts/{id}/trace")
def get_trace() -> Response:
    deps = _dependencies()
    body = fetch_trace(claims=api.claims, alert_id=api.current_event.path_parameters.get("id"),
                       alerts_table=deps["alerts_table"], audit_table=deps["audit_table"], s3=deps["s3"],
                       data_bucket=deps["data_bucket"], expires_in=deps["expires_in"],
                       reader_group=deps["reader_group"], admin_group=deps["admin_group"],
                       now=time.time, logger=logger)
    return api.answer(200, body, "AlertTraceFetched")


# Neither the event nor the response (a trace URL) goes to the logs.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@runtime.metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return api.resolve(event, context)
