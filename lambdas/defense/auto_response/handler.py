"""Lambda entry point (defense.auto_response.handler.lambda_handler): the violation topic's subscriber.

Invoked asynchronously by SNS with one record per notification. Each record's Message is a
violation (shared.violations); respond.Responder contains the device and records the incident.
A message that can never succeed (not SNS, not a violation) is counted, logged and processed.
A failed containment step raises, after every record of the event has been tried, so Lambda
retries the invocation (twice, then the on-failure destination); the retry resumes each incident
from its first step that is not done, and finished incidents are duplicates that cost no AWS call.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from defense.auto_response.respond import MALFORMED, MALFORMED_METRIC, RECEIVED, Responder, Settings
from aws_lambda_powertools import Logger, Metrics, Tracer
from botocore.config import Config
from shared.metrics import counter

# The invocation raises: Lambda retries it, then sends it to the on-failure destination.
NOT_HANDLED = "ViolationsNotHandled"

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "auto-response")
NAMESPACE = "Fleetwarden"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

# Standard retries back off on throttling inside the SDK; the handler itself never sleeps.
BOTO_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 3, "mode": "standard"})


# The total (to alarm on) and, with a reason, the same metric broken down by reason.
count = counter(metrics, SERVICE)


@functools.cache
def _dependencies() -> Responder:
    """Built on first use, once per container (and after the env is set, in tests).
    A configuration error raises here: every invocation fails and is retried, loudly."""
    settings = Settings.from_env(os.environ)
    return Responder(
        iot=boto3.client("iot", config=BOTO_CONFIG),
        sns=boto3.client("sns", config=BOTO_CONFIG),
        table=boto3.resource("dynamodb", config=BOTO_CONFIG).Table(settings.incidents_table),
        settings=settings,
        count=count,
        logger=logger,
    )


def _sns_message(record: Any) -> str | None:
    if not isinstance(record, dict) or record.get("EventSource") != "aws:sns":
        return None
    sns = record.get("Sns")
    if not isinstance(sns, dict) or not isinstance(sns.get("Message"), str):
        return None
    return sns["Message"]


# log_event=False: the logs carry the violation's keys, the raw message is in the incident.
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        logger.warning("not an SNS event; ignored", extra={"reason": "not-sns"})
        count(MALFORMED_METRIC, "not-sns")
        return {"outcomes": [{"status": MALFORMED, "detail": "not an SNS event"}]}

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    outcomes: list[dict[str, Any]] = []
    failure: Exception | None = None
    for record in records:
        message = _sns_message(record)
        if message is None:
            logger.warning("record is not an SNS notification; ignored", extra={"reason": "not-sns"})
            count(RECEIVED)
            count(MALFORMED_METRIC, "not-sns")
            outcomes.append({"status": MALFORMED, "detail": "not an SNS record"})
            continue
        logger.set_correlation_id(record["Sns"].get("MessageId"))
        try:
            outcome = _dependencies().handle(message, remaining_ms=remaining)
            outcomes.append({"status": outcome.status, "violation_id": outcome.violation_id,
                             "thing": outcome.thing, "steps": outcome.steps, "detail": outcome.detail})
        except Exception as exc:  # noqa: BLE001 - try every record, then fail the invocation
            logger.exception("violation not handled; the invocation will be retried")
            count(NOT_HANDLED)
            failure = failure or exc
        finally:
            logger.set_correlation_id(None)
    if failure is not None:
        raise failure
    return {"outcomes": outcomes}
