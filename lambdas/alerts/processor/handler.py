"""Lambda entry point (alerts.processor.handler.lambda_handler): SQS batches of S3 notifications.

Partial batch responses: exactly the messages that must be retried are reported in
`batchItemFailures` (the event source mapping needs ReportBatchItemFailures); the rest of the
batch is deleted. A batch in which every message fails is reported the same way, not raised.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3
from alerts.processor.forwarder import Forwarder
from alerts.processor.process import IDEMPOTENCY_KEY_JMESPATH, AlertProcessingError, AlertProcessor
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.config import Config
from shared.metrics import counter

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "alert-processor")
NAMESPACE = "Fleetwarden"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

BOTO_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 3, "mode": "standard"})
SECRET_MAX_AGE_SECONDS = 300
DEFAULT_CLASSIFIER_TIMEOUT_SECONDS = 3.0
# Long enough to cover S3's duplicate deliveries and SQS redeliveries of a processed message.
IDEMPOTENCY_EXPIRY_SECONDS = 24 * 60 * 60

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
idempotency_config = IdempotencyConfig(
    event_key_jmespath=IDEMPOTENCY_KEY_JMESPATH,
    raise_on_no_idempotency_key=True,
    expires_after_seconds=IDEMPOTENCY_EXPIRY_SECONDS,
)


class PowertoolsSecrets:
    """Secrets Manager through Powertools parameters: cached for max_age, re-read on demand."""

    def __init__(self, provider: SecretsProvider, max_age: int = SECRET_MAX_AGE_SECONDS):
        self.provider = provider
        self.max_age = max_age

    def get(self, name: str, *, refresh: bool = False) -> str:
        value = self.provider.get(name, max_age=self.max_age, force_fetch=refresh)
        return value  # type: ignore[return-value]


# The total (to alarm on) and, with a reason, the same metric broken down by reason.
count = counter(metrics, SERVICE)


@functools.cache
def _dependencies() -> AlertProcessor:
    """Built on first use, once per container (and after the env is set, in tests)."""
    forwarder = Forwarder(
        os.environ["CLASSIFIER_URL"],
        # One boto3 session for every client: a session per provider would reload the service models.
        secrets=PowertoolsSecrets(
            SecretsProvider(boto3_client=boto3.client("secretsmanager", config=BOTO_CONFIG))),
        api_key_secret=os.environ["CLASSIFIER_API_KEY_SECRET"],
        device_ref_key_secret=os.environ["DEVICE_REF_KEY_SECRET"],
        timeout=float(os.environ.get("CLASSIFIER_TIMEOUT_SECONDS") or DEFAULT_CLASSIFIER_TIMEOUT_SECONDS),
    )
    bucket = os.environ.get("ALERTS_BUCKET")
    return AlertProcessor(
        s3=boto3.client("s3", config=BOTO_CONFIG),
        table=boto3.resource("dynamodb", config=BOTO_CONFIG).Table(os.environ["ALERTS_TABLE"]),
        forward=forwarder.forward,
        persistence_store=DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"],
                                                   boto3_client=boto3.client("dynamodb", config=BOTO_CONFIG)),
        idempotency_config=idempotency_config,
        count=count,
        logger=logger,
        forward_seconds=forwarder.worst_case_seconds(),
        allowed_buckets=frozenset({bucket}) if bucket else None,
    )


def record_handler(record: SQSRecord, lambda_context: Any = None) -> list[dict[str, Any]]:
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
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    records = event.get("Records") if isinstance(event, dict) else None
    metrics.add_metric(name="AlertMessagesReceived", unit=MetricUnit.Count,
                       value=len(records) if isinstance(records, list) else 0)
    try:
        return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)
    finally:
        logger.set_correlation_id(None)
