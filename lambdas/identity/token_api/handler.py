"""Lambda entry point (identity.token_api.handler.lambda_handler): API Gateway REST proxy integration,
Cognito user-pool authoriser, one route: POST /provisioning-tokens (shared.api answers everything
else: 404, 405, the generic 500).

No Powertools Tracer: a subsegment per AWS call is not worth ~120 ms of cold start; Lambda's
active tracing still records every request.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from aws_lambda_powertools.event_handler import Response

from identity.token_api.issue import ERRORS, INVALID, NO_TOKEN, issue_token
from identity.tokens import serial_pattern
from shared.api import OperatorApi
from shared.runtime import handler_runtime, resource

runtime = handler_runtime("token-api")
logger = runtime.logger
api = OperatorApi(runtime, name="token", invalid=INVALID, failed=ERRORS, failed_message=NO_TOKEN)


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    ttl = int(os.environ.get("TOKEN_TTL_SECONDS", "900"))
    if ttl <= 0:
        raise ValueError("TOKEN_TTL_SECONDS must be positive")
    dynamodb = resource("dynamodb", synchronous=True)
    return {
        "tokens_table": dynamodb.Table(os.environ["TOKENS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "pattern": serial_pattern(),
        "ttl_seconds": ttl,
        "admin_group": os.environ.get("ADMIN_GROUP") or "admins",
    }


@api.post("/provisioning-tokens")
def post_provisioning_token() -> Response:
    body = issue_token(claims=api.claims, body=api.current_event.decoded_body, **_dependencies(),
                       now=time.time, logger=logger)
    return api.answer(201, body, "ProvisioningTokensIssued")


# Neither the event nor the response (it holds the token) goes to the logs.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@runtime.metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return api.resolve(event, context)
