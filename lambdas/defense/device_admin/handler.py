"""Lambda entry point (defense.device_admin.handler.lambda_handler): operator actions from `fleetctl`.

Invoked synchronously with `aws lambda invoke`; the answer is always a JSON object with `ok`.
Who may invoke the function is decided by IAM (lambda:InvokeFunction), and CloudTrail records the
real caller; `actor` is the caller ARN the CLI read from sts get-caller-identity, kept in the audit
records next to the reason.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.config import Config
from defense.device_admin.admin import REJECTED, DeviceAdmin

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "device-admin")
NAMESPACE = "Fleetwarden"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

BOTO_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 3, "mode": "standard"})


def count(name: str, reason: str | None = None, value: int = 1) -> None:
    """The total (to alarm on) and, with a reason, the same metric broken down by reason."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if reason:
        with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE,
                           default_dimensions={"service": SERVICE, "reason": reason}):
            pass


@functools.cache
def _dependencies() -> DeviceAdmin:
    """Built on first use, once per container (and after the env is set, in tests)."""
    dynamodb = boto3.resource("dynamodb", config=BOTO_CONFIG)
    incidents = os.environ.get("INCIDENTS_TABLE")
    return DeviceAdmin(
        iot=boto3.client("iot", config=BOTO_CONFIG),
        audit_table=dynamodb.Table(os.environ["AUDIT_TABLE"]),
        incidents_table=dynamodb.Table(incidents) if incidents else None,
        quarantine_group=os.environ["QUARANTINE_GROUP"],
        count=count,
        logger=logger,
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        admin = _dependencies()
    except Exception as exc:  # noqa: BLE001 - e.g. missing env: still an answer
        logger.exception("device admin is misconfigured")
        count(REJECTED, "configuration-error")
        return {"ok": False, "error": f"configuration error: {type(exc).__name__}"}
    return admin.handle(event)
