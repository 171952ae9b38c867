"""Lambda entry point (identity.provisioning_hook.handler.lambda_handler) for the IoT pre-provisioning hook.

IoT waits at most 5 seconds and treats an error as a denial; this handler still never raises,
so every denial is logged and counted with its reason.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.config import Config

from identity.provisioning_hook.hook import Decision, evaluate
from identity.tokens import serial_pattern

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "provisioning-hook")
logger = Logger(service=SERVICE)
NAMESPACE = "Fleetwarden"
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

# Short timeouts, one retry: a slow dependency must end in a denial inside IoT's 5-second budget.
BOTO_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"})


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    dynamodb = boto3.resource("dynamodb", config=BOTO_CONFIG)
    return {
        "tokens_table": dynamodb.Table(os.environ["TOKENS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "iot": boto3.client("iot", config=BOTO_CONFIG),
        "pattern": serial_pattern(),
    }


# log_event=False: the event carries the provisioning token.
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        decision = evaluate(event, **_dependencies(), now=time.time, logger=logger)
    except Exception as exc:  # noqa: BLE001 - e.g. missing env: still an answer, and it is no
        decision = Decision(False, "configuration-error", detail=f"{type(exc).__name__}: {exc}"[:300])

    fields = {"reason": decision.reason, "serial": decision.serial, "certificate_id": decision.certificate_id}
    if decision.allowed:
        logger.info("provisioning allowed", extra=fields)
        metrics.add_metric(name="ProvisioningAllowed", unit=MetricUnit.Count, value=1)
        return {"allowProvisioning": True, "parameterOverrides": {}}

    logger.warning("provisioning denied", extra={**fields, "detail": decision.detail})
    # The total per service (to alarm on), and the same metric broken down by reason.
    metrics.add_metric(name="ProvisioningDenied", unit=MetricUnit.Count, value=1)
    with single_metric(name="ProvisioningDenied", unit=MetricUnit.Count, value=1, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE, "reason": decision.reason}):
        pass
    return {"allowProvisioning": False}
