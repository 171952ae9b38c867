"""Lambda entry point (commands.expiring.handler.lambda_handler): a daily EventBridge schedule; starts a
signed rotate-certificate job for each device whose certificate the audit found expiring (start.py)."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from commands.expiring.start import RotationStarter
from shared.command_jobs import JobSettings, KmsSigner
from shared.runtime import client, handler_runtime, resource

runtime = handler_runtime("rotation-starter")
logger = runtime.logger


@functools.cache
def _starter() -> RotationStarter:
    env = os.environ
    return RotationStarter(
        iot=client("iot"), signer=KmsSigner(client("kms"), env["SIGNING_KEY_ARN"], env.get("SIGNING_KEY_ID")),
        audit_table=resource("dynamodb").Table(env["AUDIT_TABLE"]), device_policy_name=env["DEVICE_POLICY_NAME"],
        thing_arn_prefix=env["THING_ARN_PREFIX"],
        jobs=JobSettings(timeout_minutes=int(env["JOB_TIMEOUT_MINUTES"]), retry_attempts=0),
        lifetime_seconds=int(env["ROTATION_JOB_LIFETIME_SECONDS"]), now=time.time, count=runtime.count, logger=logger)


@logger.inject_lambda_context(log_event=False, clear_state=True)
@runtime.metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    result = _starter().run()
    logger.info("expiring certificates handled", extra={"started": len(result["started"]),
                                                        "skipped": len(result["skipped"])})
    return result
