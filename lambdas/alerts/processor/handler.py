"""Lambda entry point (alerts.processor.handler.lambda_handler): SQS batches of S3 notifications.

Partial batch responses: exactly the messages that must be retried are reported in
`batchItemFailures` (the event source mapping needs ReportBatchItemFailures); the rest of the
batch is deleted. A batch in which every message fails is reported the same way, not raised.
No Powertools Tracer: a subsegment per S3/DynamoDB call is not worth its ~120 ms of cold start
here (Lambda's active tracing still records every invocation).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from alerts.processor.forwarder import Forwarder
from alerts.processor.process import AlertProcessingError, AlertProcessor, new_idempotency_config
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from shared.runtime import client, handler_runtime, resource

runtime = handler_runtime("alert-processor")
logger, metrics = runtime.logger, runtime.metrics

SECRET_MAX_AGE_SECONDS = 300
DEFAULT_CLASSIFIER_TIMEOUT_SECONDS = 3.0
# Long enough to cover S3's duplicate deliveries and SQS redeliveries of a processed message.
IDEMPOTENCY_EXPIRY_SECONDS = 24 * 60 * 60

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# Module level: each invocation registers its context on it (the in-progress expiry needs it).
idempotency_config = new_idempotency_config(expires_after_seconds=IDEMPOTENCY_EXPIRY_SECONDS)


class PowertoolsSecrets:
    """Secrets Manager through Powertools parameters: cached for max_age, re-read on demand."""

    def __init__(self, provider: SecretsProvider, max_age: int = SECRET_MAX_AGE_SECONDS):
        self.provider = provider
        self.max_age = max_age

    def get(self, name: str, *, refresh: bool = False) -> str:
        value = self.provider.get(name, max_age=self.max_age, force_fetch=refresh)
        return value  # type: ignore[return-value]


@functools.cache
def _dependencies() -> AlertProcessor:
    """Built on first use, once per container (and after the env is set, in tests)."""
    forwarder = Forwarder(
        os.environ["CLASSIFIER_URL"],
        secrets=PowertoolsSecrets(SecretsProvider(boto3_client=client("secretsmanager"))),
        api_key_secret=os.environ["CLASSIFIER_API_KEY_SECRET"],
        device_ref_key_secret=os.environ["DEVICE_REF_KEY_SECRET"],
        timeout=float(os.environ.get("CLASSIFIER_TIMEOUT_SECONDS") or DEFAULT_CLASSIFIER_TIMEOUT_SECONDS),
    )
    bucket = os.environ.get("ALERTS_BUCKET")
    return AlertProcessor(
        s3=client("s3"),
        table=resource("dynamodb").Table(os.environ["ALERTS_TABLE"]),
        forward=forwarder.forward,
        persistence_store=DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"],
                                                   boto3_client=client("dynamodb")),
        idempotency_config=idempotency_config,
        count=runtime.count,
        logger=logger,
        forward_seconds=forwarder.worst_case_seconds(),
        allowed_buckets=frozenset({bucket}) if bucket else None,
    )


def record_handler(record: SQSRecord, lambda_context: Any = None) -> list[Any]:
    """One message; raising puts it in batchItemFailures (SQS retries it, then dead-letters it)."""
    logger.set_correlation_id(record.message_id)
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    try:
        # A configuration error (missing env, bad URL) raises here: every message fails and is retried.
        return _dependencies().process_message(record.body, remaining_ms=remaining)
    except AlertProcessingError:
        raise  # each failed object is already logged
    except Exception:
        logger.exception("message not processed; it will be retried")
        raise


# log_event=False: object keys name devices; the logs carry what each step needs, no more.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    records = event.get("Records") if isinstance(event, dict) else None
    runtime.count("AlertMessagesReceived", value=len(records) if isinstance(records, list) else 0)
    try:
        return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)
    finally:
        logger.set_correlation_id(None)
