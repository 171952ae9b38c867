"""Lambda entry point (identity.provisioning_hook.handler.lambda_handler) for the IoT pre-provisioning hook.

IoT waits at most 5 seconds, cold start included, and treats an error as a denial; this handler
still never raises, so every denial is logged and counted with its reason.

No Powertools Tracer: inside a 5-second budget, ~120 ms of X-Ray SDK import is not worth a
subsegment per AWS call; Lambda's active tracing still records every invocation.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from identity.provisioning_hook.hook import Decision, evaluate
from identity.tokens import serial_pattern
from shared.runtime import client, handler_runtime, resource

runtime = handler_runtime("provisioning-hook")
logger, metrics, count = runtime.logger, runtime.metrics, runtime.count


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built on first use, once per container (and after the env is set, in tests). Short
    timeouts, one retry: a slow dependency must end in a denial inside IoT's 5 seconds."""
    dynamodb = resource("dynamodb", synchronous=True)
    return {
        "tokens_table": dynamodb.Table(os.environ["TOKENS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "iot": client("iot", synchronous=True),
        "pattern": serial_pattern(),
    }


# log_event=False: the event carries the provisioning token.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        decision = evaluate(event, **_dependencies(), now=time.time, logger=logger)
    except Exception as exc:  # noqa: BLE001 - e.g. missing env: still an answer, and it is no
        decision = Decision(False, "configuration-error", detail=f"{type(exc).__name__}: {exc}"[:300])

    fields = {"reason": decision.reason, "serial": decision.serial, "certificate_id": decision.certificate_id}
    if decision.allowed:
        logger.info("provisioning allowed", extra=fields)
        count("ProvisioningAllowed")
        return {"allowProvisioning": True, "parameterOverrides": {}}
    logger.warning("provisioning denied", extra={**fields, "detail": decision.detail})
    count("ProvisioningDenied", reason=decision.reason)  # the total to alarm on, and by reason
    return {"allowProvisioning": False}
