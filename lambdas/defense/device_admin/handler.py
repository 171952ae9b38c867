"""Lambda entry point (defense.device_admin.handler.lambda_handler): operator actions from `fleetctl`.

Invoked synchronously with `aws lambda invoke`; the answer is always a JSON object with `ok`.
Who may invoke the function is decided by IAM (lambda:InvokeFunction), and CloudTrail records the
real caller; `actor` is the caller ARN the CLI read from sts get-caller-identity, kept in the audit
records next to the reason.

No Powertools Tracer: ~120 ms of X-Ray SDK import is not worth a subsegment per AWS call of an
operator action; Lambda's active tracing still records every invocation.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from defense.device_admin.admin import REJECTED, DeviceAdmin
from shared.runtime import client, handler_runtime, resource

runtime = handler_runtime("device-admin")
logger, metrics, count = runtime.logger, runtime.metrics, runtime.count


@functools.cache
def _dependencies() -> DeviceAdmin:
    """Built on first use, once per container (and after the env is set, in tests)."""
    dynamodb = resource("dynamodb")
    incidents = os.environ.get("INCIDENTS_TABLE")
    return DeviceAdmin(
        iot=client("iot"),
        audit_table=dynamodb.Table(os.environ["AUDIT_TABLE"]),
        incidents_table=dynamodb.Table(incidents) if incidents else None,
        quarantine_group=os.environ["QUARANTINE_GROUP"],
        count=count,
        logger=logger,
    )


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        admin = _dependencies()
    except Exception as exc:  # noqa: BLE001 - e.g. missing env: still an answer
        logger.exception("device admin is misconfigured")
        count(REJECTED, reason="configuration-error")
        return {"ok": False, "error": f"configuration error: {type(exc).__name__}"}
    return admin.handle(event)
