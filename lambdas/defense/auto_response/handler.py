"""Lambda entry point (defense.auto_response.handler.lambda_handler): the violation topic's subscriber.

Invoked asynchronously by SNS with one record per notification, read through Powertools'
SNSEvent; each record's Message is a violation (shared.violations) that respond.Responder
validates, contains and records. A message that can never succeed (not SNS, not a violation) is
counted, logged and processed. A failed containment step raises, after every record of the event
has been tried, so Lambda retries the invocation (twice, then the on-failure destination); the
retry resumes each incident from its first step not done, and finished incidents are duplicates
that cost no AWS call.

respond (with pydantic and boto3) is imported on the first record, not at module load.
No Powertools Tracer: ~120 ms of X-Ray SDK import is not worth a subsegment per AWS call here;
Lambda's active tracing still records every invocation.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.data_classes import SNSEvent
from defense.auto_response.outcomes import MALFORMED, MALFORMED_METRIC, NOT_HANDLED, RECEIVED
from shared.runtime import client, handler_runtime, resource

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sns_event import SNSEventRecord, SNSMessage
    from defense.auto_response.respond import Responder

runtime = handler_runtime("auto-response")
logger, metrics, count = runtime.logger, runtime.metrics, runtime.count


@functools.cache
def _dependencies() -> Responder:
    """Built on first use, once per container (and after the env is set, in tests).
    A configuration error raises here: every invocation fails and is retried, loudly."""
    from defense.auto_response.commands import ShutdownQueue
    from defense.auto_response.respond import Responder, Settings
    from shared.command_jobs import JobSettings, KmsSigner

    settings = Settings.from_env(os.environ)
    shutdown = ShutdownQueue(KmsSigner(client("kms"), settings.signing_key_arn, settings.signing_key_id),
                             thing_arn_prefix=settings.thing_arn_prefix,
                             jobs=JobSettings(timeout_minutes=settings.job_timeout_minutes, retry_attempts=0),
                             lifetime_seconds=settings.shutdown_lifetime_seconds)
    return Responder(
        iot=client("iot"),
        sns=client("sns"),
        # The data plane on the account's own endpoint (the stack resolves it with DescribeEndpoint
        # iot:Data-ATS at deploy time): the SDK's regional default is "intended for testing purposes
        # only" (AWS CLI iot-data note; https://docs.aws.amazon.com/general/latest/gr/iot-core.html).
        iot_data=client("iot-data", endpoint_url=f"https://{settings.data_endpoint}"),
        table=resource("dynamodb").Table(settings.incidents_table),
        settings=settings,
        count=count,
        logger=logger,
        queue_shutdown=shutdown,
    )


def _notification(record: SNSEventRecord) -> SNSMessage | None:
    """The record's SNS notification, if it is one carrying a string Message."""
    if not isinstance(record.raw_event, dict) or record.get("EventSource") != "aws:sns":
        return None
    if not isinstance(record.get("Sns"), dict) or not isinstance(record.sns.get("Message"), str):
        return None
    return record.sns


# log_event=False: the logs carry the violation's keys, the raw message is in the incident.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list) or not event["Records"]:
        logger.warning("not an SNS event; ignored", extra={"reason": "not-sns"})
        count(MALFORMED_METRIC, reason="not-sns")
        return {"outcomes": [{"status": MALFORMED, "detail": "not an SNS event"}]}

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    outcomes: list[dict[str, Any]] = []
    failure: Exception | None = None
    for record in SNSEvent(event).records:
        notification = _notification(record)
        if notification is None:
            logger.warning("record is not an SNS notification; ignored", extra={"reason": "not-sns"})
            count(RECEIVED)
            count(MALFORMED_METRIC, reason="not-sns")
            outcomes.append({"status": MALFORMED, "detail": "not an SNS record"})
            continue
        logger.set_correlation_id(notification.get("MessageId"))
        try:
            outcome = _dependencies().handle(notification.message, remaining_ms=remaining)
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
