"""Lambda entry point (commands.rotation.handler.lambda_handler): the rotation rule's Lambda action.

IoT invokes it asynchronously with the rule's SELECT result as the event (the device's JSON plus
`thing`, `step`, `principal`, `client_id`); rotate.Rotator does the rest. An AWS failure raises, so
Lambda retries the event (twice, then the on-failure destination): the rotation row makes the retry
resume rather than mint a second certificate (rotate.py says how). Neither events (a CSR) nor answers are logged.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from commands.rotation.rotate import Rotator
from shared.runtime import boto_config, client, handler_runtime, resource

runtime = handler_runtime("cert-rotation")
logger = runtime.logger


@functools.cache
def _rotator() -> Rotator:
    from botocore.config import Config

    env = os.environ
    dynamodb = resource("dynamodb")
    return Rotator(
        iot=client("iot"),
        # CreateCertificateFromCsr is not idempotent (the same CSR mints a distinct certificate): a client
        # that never re-sends it, so an answer lost is a timeout the next attempt resolves from the row
        # (botocore would re-send a timed-out request: "Retry behavior",
        # https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
        iot_create=client("iot", config=boto_config().merge(
            Config(retries={"total_max_attempts": 1, "mode": "standard"}))),
        # The account's own data endpoint (DescribeEndpoint iot:Data-ATS at deploy time), as the auto-response.
        iot_data=client("iot-data", endpoint_url=f"https://{env['IOT_DATA_ENDPOINT']}"),
        table=dynamodb.Table(env["ROTATIONS_TABLE"]),
        audit_table=dynamodb.Table(env["AUDIT_TABLE"]),
        policy_name=env["DEVICE_POLICY_NAME"],
        count=runtime.count, now=time.time, logger=logger)


@logger.inject_lambda_context(log_event=False, clear_state=True)
@runtime.metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        event = {}
    result = _rotator().handle(event)
    logger.info("rotation step handled", extra={"thing": event.get("thing"), "step": event.get("step"),
                                                "outcome": result.outcome, "reason": result.reason})
    return {"outcome": result.outcome, "reason": result.reason, "certificate_id": result.certificate_id}
