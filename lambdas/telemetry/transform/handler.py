"""Lambda entry point (telemetry.transform.handler.lambda_handler): the Firehose data-transformation
processor of the telemetry delivery stream.

Answers every record (see transform.py); never logs payload contents: per rejected record only
its recordId, reason, fixed detail text and the thing name if safe; per batch one line of counts.
When OBSERVATION_STREAM is set (the built-in detector is deployed), the batch's per-connection
aggregates (transform/aggregates.py) go to that Kinesis stream before the records are answered, at
most once per batch: Powertools idempotency on BATCH_TABLE, keyed on the batch's digest, so a
Firehose retry of a batch whose aggregates were sent sends nothing. If Kinesis will not take them
the invocation fails (the idempotency record is removed) and Firehose retries the batch. boto3
and the idempotency utility are imported on the first such batch only.
No Powertools Tracer: it would load the X-Ray SDK (~120 ms of cold start) to trace a function that
makes one call per batch at most (Lambda's active tracing still records each invocation).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from aws_lambda_powertools.utilities.data_classes.kinesis_firehose_event import KinesisFirehoseEvent
from shared.runtime import client, handler_runtime
from telemetry.layout import DEFAULT_SHARDS
from telemetry.transform.aggregates import BatchAggregates, open_shard_starts, send
from telemetry.transform.transform import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    PROCESSING_FAILED,
    payload_limit,
    shard_count,
    transform_batch,
)

runtime = handler_runtime("telemetry-transform")
SERVICE, logger, metrics = runtime.service, runtime.logger, runtime.metrics


def _payload_limit() -> int:
    try:
        return payload_limit()
    except ValueError:
        # A bad setting must not stop delivery: say so loudly and keep the default.
        logger.error("MAX_PAYLOAD_BYTES is not a positive integer; using the default",
                     extra={"default": DEFAULT_MAX_PAYLOAD_BYTES})
        return DEFAULT_MAX_PAYLOAD_BYTES


def _shard_count() -> int:
    try:
        return shard_count()
    except ValueError:
        # Keep delivering; the records land in the default layout, which the Glue projection of a
        # differently configured stack would not find: hence an error, not a warning.
        logger.error("TELEMETRY_SHARDS is not from 1 to 100; using the default", extra={"default": DEFAULT_SHARDS})
        return DEFAULT_SHARDS


# Firehose retries within minutes; an hour also covers the longest detection window (900 s).
BATCH_MEMORY_SECONDS = 3600


@functools.cache
def _kinesis() -> Any:
    return client("kinesis", synchronous=True)


SHARD_MAP_SECONDS = 60  # how long a container trusts the stream's shard map
_shard_map: dict[str, Any] = {"at": None, "starts": None}


def _shard_starts(stream: str) -> list[int] | None:
    """The stream's open shards (ListShards), refreshed every SHARD_MAP_SECONDS; None if it cannot
    be read (then each aggregate goes alone, keyed by client id: dearer, never wrong). After
    on-demand resharding a stale map sends some connections' counts to a neighbouring shard for at
    most SHARD_MAP_SECONDS (the windows of a resharded stream start over anyway)."""
    now = time.monotonic()
    if _shard_map["at"] is not None and now - _shard_map["at"] < SHARD_MAP_SECONDS:
        return _shard_map["starts"]
    try:
        shards, token = [], None
        while True:
            page = (_kinesis().list_shards(NextToken=token) if token
                    else _kinesis().list_shards(StreamName=stream))
            shards += page.get("Shards", [])
            token = page.get("NextToken")
            if not token:
                break
        starts = open_shard_starts(shards) or None
    except Exception:  # noqa: BLE001 - any failure: send unpacked, which is always correct
        logger.warning("observation stream shards not listed; aggregates sent one per record", exc_info=True)
        starts = None
    _shard_map.update(at=now, starts=starts)
    return starts


def _replayed(response: Any, record: Any) -> Any:
    return {**response, "replayed": True}


@functools.cache
def _send_once() -> tuple[Any, Any]:
    """(idempotency config, send_once(sent={"batch", "records"}) -> {"aggregates", "calls"[, "replayed"]})."""
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    config = IdempotencyConfig(event_key_jmespath="batch", raise_on_no_idempotency_key=True,
                               expires_after_seconds=BATCH_MEMORY_SECONDS, response_hook=_replayed)
    store = DynamoDBPersistenceLayer(table_name=os.environ["BATCH_TABLE"], boto3_client=client("dynamodb"))

    @idempotent_function(data_keyword_argument="sent", persistence_store=store, config=config)
    def send_once(sent: dict[str, Any]) -> dict[str, Any]:
        stream = os.environ["OBSERVATION_STREAM"]
        calls = send(_kinesis(), stream, sent["records"], shard_starts=_shard_starts(stream))
        return {"aggregates": len(sent["records"]), "calls": calls}

    return config, send_once


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
    firehose = KinesisFirehoseEvent(event) if isinstance(event, dict) else None
    if firehose is None or not isinstance(firehose.get("records"), list):
        # Not from Firehose: there is no record to answer.
        logger.error("not a Firehose transformation event")
        runtime.count("TelemetryBatchesMalformed")
        return {"records": []}

    # The records as Firehose sent them: transform_batch reads each through KinesisFirehoseRecord.
    stream = os.environ.get("OBSERVATION_STREAM")
    aggregates = BatchAggregates() if stream else None
    outputs, counts = transform_batch(firehose["records"], max_payload_bytes=_payload_limit(),
                                      shards=_shard_count(), on_reject=_report, aggregates=aggregates)
    if aggregates is not None:
        observed = aggregates.records()
        sent = 0
        if observed:
            config, send_once = _send_once()
            config.register_lambda_context(context)
            # Raises if Kinesis keeps refusing: Firehose retries the batch, which then sends.
            result = send_once(sent={"batch": aggregates.batch_id(), "records": observed})
            if result.get("replayed"):
                logger.warning("aggregates of this batch were sent before: a Firehose retry, not sent again",
                               extra={"aggregates": len(observed)})
                runtime.count("TelemetryBatchesReplayed")
            else:
                sent = len(observed)
        runtime.count("TelemetryAggregatesSent", value=sent)
        if aggregates.unnamed:
            runtime.count("TelemetryClientIdsUnnamed", value=aggregates.unnamed)

    # Every batch reports all three, zeros included, so an alarm always has data; the rejections
    # also broken down by reason (one emission per reason per batch).
    runtime.count("TelemetryRecordsValid", value=counts["valid"])
    runtime.count("TelemetryRecordsRejected", value=counts["rejected"])
    runtime.count("TelemetryRecordsFailed", value=counts["failed"])
    for reason, count in sorted(counts["reasons"].items()):
        runtime.breakdown("TelemetryRecordsRejected", count, reason=reason)
    invocation_id = firehose.get("invocationId")
    logger.info("telemetry batch transformed", extra={
        **counts, "invocation_id": invocation_id if isinstance(invocation_id, str) else None})
    # Not KinesisFirehoseDataTransformationResponse: its asdict() refuses an empty list, and the
    # records are already answered as dicts.
    return {"records": outputs}
