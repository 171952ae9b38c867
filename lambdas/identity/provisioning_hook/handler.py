"""Lambda entry point (identity.provisioning_hook.handler.lambda_handler) for the IoT pre-provisioning hook.

The budget. IoT fails the provisioning request unless the hook "finish[es] running and return[s]
within 5 seconds" ("Pre-provisioning hooks", AWS IoT developer guide,
https://docs.aws.amazon.com/iot/latest/developerguide/pre-provisioning-hook.html), and on an
on-demand cold start those 5 seconds include the init phase. So:
- boto3 and the clients are built at INIT (module import), which provisioned concurrency runs
  ahead of time ("Managing Lambda provisioned concurrency", Lambda developer guide: "initialization
  code runs during allocation");
- every AWS call gets ONE attempt (`total_max_attempts: 1`: no botocore retries) with
  connect/read timeouts of CONNECT_TIMEOUT + READ_TIMEOUT;
- each invocation gets a deadline: 5 s from its start, minus RESERVE (IoT's invoke, the runtime's
  own start, the reply), minus this module's measured init time when this is the first invocation
  of an on-demand environment (AWS_LAMBDA_INITIALIZATION_TYPE, documented on the same Lambda
  page), and never later than the function's own timeout. A call that would not fit is not
  started: the hook denies with reason "deadline" (log line + metric), failing closed.
bench/README.md ("Pre-provisioning hook") adds it up. No Powertools Tracer (the X-Ray SDK costs
~120 ms of import); Lambda's active tracing still records every invocation.

This handler never raises, so every denial is logged and counted with its reason.
"""

from __future__ import annotations

import time

INIT_STARTED = time.monotonic()  # first thing: the init phase this module can measure starts here

import functools  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402 - at init, not on the first request
from botocore.config import Config  # noqa: E402

from identity.provisioning_hook.hook import Budget, Decision, evaluate  # noqa: E402
from identity.tokens import serial_pattern  # noqa: E402
from shared.runtime import handler_runtime  # noqa: E402

IOT_DEADLINE = 5.0  # seconds, cold start included (pre-provisioning-hook.html)
RESERVE = 1.0  # IoT -> Lambda invoke, the runtime's start before this module, the reply to IoT (unmeasurable here)
CONNECT_TIMEOUT = 0.25
READ_TIMEOUT = 0.5
ONE_ATTEMPT = CONNECT_TIMEOUT + READ_TIMEOUT  # the longest one AWS call may take
TIMEOUT_MARGIN = 0.1  # answer this long before the function's own timeout would cut the reply
CLIENT_CONFIG = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                       retries={"total_max_attempts": 1})

runtime = handler_runtime("provisioning-hook")
logger, metrics, count = runtime.logger, runtime.metrics, runtime.count


@functools.cache
def _dependencies() -> dict[str, Any]:
    """Built once per environment: at init on Lambda (below), on first use in tests (after the
    environment is set and moto started). Not cached when it raises: the invocation retries."""
    dynamodb = boto3.resource("dynamodb", config=CLIENT_CONFIG)
    return {
        "tokens_table": dynamodb.Table(os.environ["TOKENS_TABLE"]),
        "audit_table": dynamodb.Table(os.environ["AUDIT_TABLE"]),
        "iot": boto3.client("iot", config=CLIENT_CONFIG),
        "pattern": serial_pattern(),
    }


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # on Lambda: at init, ahead of time under provisioned concurrency
    try:
        _dependencies()
    except Exception:  # noqa: BLE001 - reported as configuration-error by the invocation, which retries
        pass

INIT_SECONDS = time.monotonic() - INIT_STARTED
_first_invocation = True


def deadline(context: Any, started: float) -> float:
    """The instant (time.monotonic) by which the hook must have answered."""
    global _first_invocation
    spent = RESERVE
    if _first_invocation and os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != "provisioned-concurrency":
        spent += INIT_SECONDS  # IoT's clock ran through this environment's init
    _first_invocation = False
    function_timeout = started + context.get_remaining_time_in_millis() / 1000 - TIMEOUT_MARGIN
    return min(started + IOT_DEADLINE - spent, function_timeout)


# log_event=False: the event carries the provisioning token.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        budget = Budget(deadline(context, started), ONE_ATTEMPT)
        decision = evaluate(event, **_dependencies(), now=time.time, budget=budget, logger=logger)
    except Exception as exc:  # noqa: BLE001 - e.g. missing env: still an answer, and it is no
        decision = Decision(False, "configuration-error", detail=f"{type(exc).__name__}: {exc}"[:300])

    fields = {"reason": decision.reason, "serial": decision.serial, "certificate_id": decision.certificate_id,
              "elapsed_ms": round((time.monotonic() - started) * 1000)}
    if decision.allowed:
        logger.info("provisioning allowed", extra=fields)
        # The total, and a retry (same certificate, same token) broken down as such.
        count("ProvisioningAllowed", reason=decision.reason if decision.reason != "allowed" else None)
        return {"allowProvisioning": True, "parameterOverrides": {}}
    logger.warning("provisioning denied", extra={**fields, "detail": decision.detail})
    count("ProvisioningDenied", reason=decision.reason)  # the total to alarm on, and by reason
    return {"allowProvisioning": False}
