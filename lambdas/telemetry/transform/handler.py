"""Lambda entry point (telemetry.transform.handler.lambda_handler): the Firehose data-transformation
processor of the telemetry delivery stream.

Answers every record (see transform.py); never logs payload contents: per rejected record only
its recordId, reason, fixed detail text and the thing name if safe; per batch one line of counts.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from telemetry.transform.transform import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PROCESSING_FAILED,
    payload_limit,
    transform_batch,
)

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "telemetry-transform")
logger = Logger(service=SERVICE)
NAMESPACE = "Fleetwarden"
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# No powertools Tracer: it imports the X-Ray SDK (~200 ms of cold start, over the 150 ms budget)
# to trace a function that calls nothing. Lambda active tracing still records each invocation.


def _payload_limit() -> int:
    try:
        return payload_limit()
    except ValueError:
        # A bad setting must not stop delivery: say so loudly and keep the default.
        logger.error("MAX_PAYLOAD_BYTES is not a positive integer; using the default",
                     extra={"default": DEFAULT_MAX_PAYLOAD_BYTES})
        return DEFAULT_MAX_PAYLOAD_BYTES


def _report(record_id: Any, reason: str, thing: str | None, detail: str) -> None:
    fields = {"record_id": record_id, "reason": reason, "thing": thing, "detail": detail}
    if reason == PROCESSING_FAILED:
        logger.error("telemetry record processing failed", extra=fields)
    else:
        logger.warning("telemetry record rejected", extra=fields)


# Neither the event nor the response (device payloads) goes to the logs.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    records = event.get("records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        # Not from Firehose: there is no record to answer.
        logger.error("not a Firehose transformation event")
        metrics.add_metric(name="TelemetryBatchesMalformed", unit=MetricUnit.Count, value=1)
        return {"records": []}

    outputs, counts = transform_batch(records, max_payload_bytes=_payload_limit(), on_reject=_report)

    # Every batch reports all three, zeros included, so an alarm always has data.
    metrics.add_metric(name="TelemetryRecordsValid", unit=MetricUnit.Count, value=counts["valid"])
    metrics.add_metric(name="TelemetryRecordsRejected", unit=MetricUnit.Count, value=counts["rejected"])
    metrics.add_metric(name="TelemetryRecordsFailed", unit=MetricUnit.Count, value=counts["failed"])
    # The same rejections broken down by reason: one emission per reason per batch.
    for reason, count in sorted(counts["reasons"].items()):
        with single_metric(name="TelemetryRecordsRejected", unit=MetricUnit.Count, value=count,
                           namespace=NAMESPACE, default_dimensions={"service": SERVICE, "reason": reason}):
            pass
    invocation_id = event.get("invocationId")
    logger.info("telemetry batch transformed", extra={
        **counts, "invocation_id": invocation_id if isinstance(invocation_id, str) else None})
    return {"records": outputs}
