"""Alert processing: one SQS message (an S3 event notification) at a time, no Lambda needed.

For each object the notification names:
  * a key outside the alert layout, an object over MAX_ALERT_BYTES, a body that is not JSON or
    not an `Alert` -> copied to `quarantine/<reason>/<key>` (same version), the original tagged;
    never indexed, never forwarded, not retried;
  * a valid alert -> one index item (conditional put: a replay is harmless), then forwarded to the
    classifier; a delivery failure raises so SQS retries the message with the object untouched.
Each object runs at most once to completion per (bucket, key, version) when an idempotency
persistence layer is given, so a duplicate S3 event forwards and writes nothing twice: a replay
returns the first run's ObjectResult, marked `duplicate` by the idempotency config's response hook.

A message that is not an S3 notification names no object: it is counted, logged and treated as
processed (retrying it could never succeed).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from alerts.model import (
    MAX_ALERT_BYTES,
    QUARANTINE_PREFIX,
    InvalidAlertJSON,
    index_item,
    normalise_event_time,
    parse_alert,
    parse_alert_key,
    quarantine_key,
)
from alerts.processor.forwarder import ForwardError
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event, S3EventRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.serialization.dataclass import DataclassSerializer
from botocore.exceptions import ClientError
from shared.runtime import error_code

if TYPE_CHECKING:
    from alerts.model import AlertHeader
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from pydantic import ValidationError

_logger = Logger(child=True)

QUARANTINE_TAG = "fleetwarden-quarantine"
IDEMPOTENCY_KEY_JMESPATH = "[bucket, key, version]"
IDEMPOTENCY_KEY_PREFIX = "alert_processor.object"
MAX_COPY_BYTES = 5 * 1024**3  # CopyObject's limit; larger objects are only tagged
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404"})
REMAINING_TIME_MARGIN_SECONDS = 2.0
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
VERSION_ID = re.compile(r"[\x21-\x7e]{1,1024}", re.ASCII)

# Metric names (all Count).
FORWARDED = "AlertsForwarded"
QUARANTINED = "AlertsQuarantined"
REJECTED = "AlertsRejectedByClassifier"
FORWARD_FAILED = "AlertForwardFailures"
DUPLICATE = "AlertEventsDuplicate"
INVALID_MESSAGE = "AlertMessagesInvalid"
OBJECT_MISSING = "AlertObjectsMissing"
IGNORED = "AlertEventsIgnored"


class AlertProcessingError(Exception):
    """At least one object of the message must be retried (the message goes to batchItemFailures)."""


class ForwardFn(Protocol):
    def __call__(self, *, thing: str, alert_id: str, header: AlertHeader) -> Any: ...


# ---- reading a message ----------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """One S3 record of a notification: the idempotency key is (bucket, key, version)."""

    bucket: str
    key: str
    version: str | None
    size: int | None
    event_time: str  # normalised YYYY-MM-DDTHH:MM:SS.mmmZ


class MalformedRecord(ValueError):
    """An S3 record that names no object it could be about; the message says why."""


@dataclass
class ParsedMessage:
    """What one SQS body names: its distinct objects, in order, and what else it held."""

    objects: list[ObjectRef] = field(default_factory=list)
    test_event: bool = False  # S3's s3:TestEvent, sent when the notification is configured
    ignored: int = 0  # S3 records that are not ObjectCreated events
    invalid: list[str] = field(default_factory=list)  # why it, or some of its records, names no object


def object_ref(record: S3EventRecord) -> ObjectRef | None:
    """The object an ObjectCreated record names, or None for any other S3 event (e.g. a delete).
    Raises MalformedRecord for anything S3 would not have sent."""
    if not isinstance(record.raw_event, dict) or record.get("eventSource") != "aws:s3":
        raise MalformedRecord("record is not an S3 event")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise MalformedRecord("eventName missing")
    if not name.startswith("ObjectCreated:"):
        return None
    try:
        bucket_name = record.s3.bucket.name
        obj = record.s3.get_object
        raw_key = obj.key
    except (KeyError, TypeError):  # a part missing, or not an object
        raise MalformedRecord("bucket or key missing") from None
    if not (isinstance(bucket_name, str) and bucket_name and isinstance(raw_key, str) and raw_key):
        raise MalformedRecord("bucket or key missing")
    try:
        key = urllib.parse.unquote_plus(raw_key, errors="strict")  # event keys are URL-encoded, ' ' as '+'
        event_time = normalise_event_time(record.get("eventTime"))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise MalformedRecord("undecodable key or eventTime") from None
    version = obj.version_id
    size = obj.get("size")  # as sent: S3Object.size would turn "12", 1.5 or True into an int
    if (version is not None and not (isinstance(version, str) and VERSION_ID.fullmatch(version))) or (
        size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0)
    ):
        raise MalformedRecord("versionId or size malformed")
    if not BUCKET_NAME.fullmatch(bucket_name):
        raise MalformedRecord("bucket name malformed")
    try:
        encoded_key = key.encode("utf-8")  # a lone surrogate (from JSON escapes) is no S3 key
    except UnicodeEncodeError:
        encoded_key = b""
    if not encoded_key or len(encoded_key) > 1024:
        raise MalformedRecord("key empty, not UTF-8 or too long")
    return ObjectRef(bucket=bucket_name, key=key, version=version, size=size, event_time=event_time)


def parse_message(body: Any) -> ParsedMessage:
    """Read an SQS body as an S3 event notification (never raises)."""
    try:
        document = json.loads(body)
    except (TypeError, ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        return ParsedMessage(invalid=["body is not a JSON object"])
    if document.get("Event") == "s3:TestEvent":
        return ParsedMessage(test_event=True)
    if not isinstance(document.get("Records"), list) or not document["Records"]:
        return ParsedMessage(invalid=["no S3 Records"])
    parsed = ParsedMessage()
    for record in S3Event(document).records:
        try:
            ref = object_ref(record)
        except MalformedRecord as exc:
            parsed.invalid.append(str(exc))
            continue
        if ref is None:
            parsed.ignored += 1
        elif ref not in parsed.objects:
            parsed.objects.append(ref)
    return parsed


# ---- processing an object -------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectResult:
    """What became of one object; also the result an idempotency record stores (same field names
    as the dicts stored before, so a record written by the previous version still reads back)."""

    outcome: str  # forwarded | rejected | quarantined | missing | ignored
    alert_id: str | None = None  # forwarded, rejected
    status: int | None = None  # rejected: the classifier's answer
    reason: str | None = None  # quarantined, ignored
    quarantine_key: str | None = None  # quarantined ("" if too large to copy)
    duplicate: bool = False  # a replay: the stored result of an earlier run, nothing was done now


def _mark_duplicate(result: ObjectResult, record: DataRecord) -> ObjectResult:
    """Powertools calls this only when it returns a stored result instead of running the body."""
    return replace(result, duplicate=True)


def new_idempotency_config(**options: Any) -> IdempotencyConfig:
    """The idempotency configuration AlertProcessor needs (options: e.g. expires_after_seconds)."""
    return IdempotencyConfig(event_key_jmespath=IDEMPOTENCY_KEY_JMESPATH, raise_on_no_idempotency_key=True,
                             response_hook=_mark_duplicate, **options)


def _validation_summary(exc: ValidationError) -> list[str]:
    """Where and why, never the input (it could be the trace)."""
    errors = exc.errors(include_input=False, include_url=False)
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in errors][:10]


class _Missing(Exception):
    """The object version named by the event no longer exists."""


class AlertProcessor:
    def __init__(
        self,
        *,
        s3: Any,
        table: Any,
        forward: ForwardFn,
        persistence_store: BasePersistenceLayer | None = None,
        idempotency_config: IdempotencyConfig | None = None,
        count: Callable[..., None] | None = None,
        logger: Logger | None = None,
        forward_seconds: float = 0.0,
        allowed_buckets: frozenset[str] | None = None,
    ):
        """count(name, **dimensions) counts a metric (a `reason=` dimension breaks it down).
        With a persistence_store, each object version is processed at most once; the config (if
        given) must come from new_idempotency_config()."""
        self.s3 = s3
        self.table = table
        self.forward = forward
        self.count = count or (lambda name, **dimensions: None)
        self.logger = logger or _logger
        self.forward_seconds = forward_seconds  # worst case of one forward, for the time check
        self.allowed_buckets = allowed_buckets
        self._process_once = self._process
        if persistence_store is not None:
            config = idempotency_config or new_idempotency_config()
            if (config.event_key_jmespath != IDEMPOTENCY_KEY_JMESPATH
                    or config.response_hook is not _mark_duplicate):
                raise ValueError("the idempotency config must come from new_idempotency_config()")
            self._process_once = idempotent_function(
                self._process,
                data_keyword_argument="ref",
                persistence_store=persistence_store,
                config=config,
                output_serializer=DataclassSerializer(ObjectResult),
                key_prefix=IDEMPOTENCY_KEY_PREFIX,
            )

    # ---- one SQS message --------------------------------------------------------------------

    def process_message(
        self, body: Any, *, remaining_ms: Callable[[], int] | None = None
    ) -> list[ObjectResult]:
        """Every object of the message; raises AlertProcessingError if any must be retried."""
        parsed = parse_message(body)
        if parsed.test_event:
            self.logger.info("s3:TestEvent ignored")
            return []
        if parsed.invalid:
            self.count(INVALID_MESSAGE)
            self.logger.warning("message names no valid S3 object", extra={"problems": parsed.invalid[:10],
                                                                           "objects": len(parsed.objects)})
        if parsed.ignored:
            self.logger.info("non-creation S3 events ignored", extra={"ignored": parsed.ignored})
        results: list[ObjectResult] = []
        failures: list[Exception] = []
        for ref in parsed.objects:  # every object is tried, even after one fails
            try:
                results.append(self.process_object(ref, remaining_ms=remaining_ms))
            except Exception as exc:  # noqa: BLE001 - reported below, with the others
                failures.append(exc)
                self.logger.warning("alert object not processed; message will be retried",
                                    extra={"bucket": ref.bucket, "key": ref.key, "version_id": ref.version,
                                           "error": f"{type(exc).__name__}: {exc}"[:300]})
        if failures:
            message = f"{len(failures)} of {len(parsed.objects)} objects failed"
            raise AlertProcessingError(message) from failures[0]
        return results

    # ---- one object ---------------------------------------------------------------------------

    def process_object(
        self, ref: ObjectRef, *, remaining_ms: Callable[[], int] | None = None
    ) -> ObjectResult:
        if ref.key.startswith(QUARANTINE_PREFIX):
            # Our own quarantine copies (if the notification is not prefix-filtered): never loop.
            self.count(IGNORED, reason="quarantine-copy")
            return ObjectResult("ignored", reason="quarantine-copy")
        if self.allowed_buckets is not None and ref.bucket not in self.allowed_buckets:
            self.count(IGNORED, reason="foreign-bucket")
            self.logger.warning("event for another bucket ignored", extra={"bucket": ref.bucket})
            return ObjectResult("ignored", reason="foreign-bucket")
        needed_ms = (self.forward_seconds + REMAINING_TIME_MARGIN_SECONDS) * 1000
        if remaining_ms is not None and remaining_ms() < needed_ms:
            raise AlertProcessingError("not enough time left in this invocation")
        result = self._process_once(ref=ref)
        if result.duplicate:
            self.count(DUPLICATE)
            self.logger.info("duplicate S3 event: already processed",
                             extra={"bucket": ref.bucket, "key": ref.key, "version_id": ref.version})
        return result

    def _process(self, ref: ObjectRef) -> ObjectResult:
        """Quarantine the object, or index and forward it (run at most once per object version)."""
        try:
            return self._quarantine_or_forward(ref)
        except _Missing:
            self.count(OBJECT_MISSING)
            self.logger.warning("alert object no longer exists", extra={"bucket": ref.bucket, "key": ref.key,
                                                                         "version_id": ref.version})
            return ObjectResult("missing")

    def _quarantine_or_forward(self, ref: ObjectRef) -> ObjectResult:
        thing = parse_alert_key(ref.key)
        if thing is None:
            return self.quarantine(ref, "unexpected-key", "key does not match the alert layout")
        if ref.size is not None and ref.size > MAX_ALERT_BYTES:
            return self.quarantine(ref, "oversized", f"event size {ref.size}")
        raw = self._read(ref)
        if raw is None:
            return self.quarantine(ref, "oversized", "object larger than the limit")
        try:
            alert = parse_alert(raw)
        except InvalidAlertJSON as exc:
            return self.quarantine(ref, "invalid-json", str(exc))
        except ValueError as exc:  # pydantic's ValidationError (a ValueError; pydantic loads lazily)
            return self.quarantine(ref, "invalid-alert", "; ".join(_validation_summary(exc)))

        item = index_item(thing=thing, alert=alert, event_time=ref.event_time, bucket=ref.bucket,
                          key=ref.key, version=ref.version, size=len(raw))
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(alert_id)")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Indexed by an earlier attempt whose forward failed: carry on with the forward.

        log = {"thing": thing, "alert_id": item["alert_id"], "code": alert.header.code}
        try:
            result = self.forward(thing=thing, alert_id=item["alert_id"], header=alert.header)
        except ForwardError:
            self.count(FORWARD_FAILED)
            raise
        if getattr(result, "rejected", False):
            self.count(REJECTED)
            self.logger.warning("classifier rejected the alert", extra={**log, "status": result.status})
            return ObjectResult("rejected", alert_id=item["alert_id"], status=result.status)
        self.count(FORWARDED)
        self.logger.info("alert forwarded", extra={**log, "attempts": getattr(result, "attempts", None)})
        return ObjectResult("forwarded", alert_id=item["alert_id"])

    def _version_args(self, ref: ObjectRef) -> dict[str, str]:
        return {"VersionId": ref.version} if ref.version else {}

    def _read(self, ref: ObjectRef) -> bytes | None:
        """The object's bytes, or None if it is over the limit (never reads more than limit + 1)."""
        try:
            response = self.s3.get_object(Bucket=ref.bucket, Key=ref.key, **self._version_args(ref))
        except ClientError as exc:
            if error_code(exc) in MISSING_OBJECT_CODES:
                raise _Missing() from exc
            raise
        stream = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > MAX_ALERT_BYTES:
                return None
            raw = stream.read(MAX_ALERT_BYTES + 1)
            return None if len(raw) > MAX_ALERT_BYTES else raw
        finally:
            stream.close()

    def quarantine(self, ref: ObjectRef, reason: str, detail: str) -> ObjectResult:
        """Copy the object version under quarantine/<reason>/ and tag the original; not retried."""
        target = quarantine_key(reason, ref.key)
        source = {"Bucket": ref.bucket, "Key": ref.key, **self._version_args(ref)}
        try:
            if ref.size is None or ref.size <= MAX_COPY_BYTES:
                self.s3.copy_object(
                    Bucket=ref.bucket,
                    Key=target,
                    CopySource=source,
                    Metadata={"reason": reason},
                    MetadataDirective="REPLACE",
                    Tagging=urllib.parse.urlencode({QUARANTINE_TAG: reason}),
                    TaggingDirective="REPLACE",
                )
            else:
                target = ""  # too large to copy in one request: the tag on the original marks it
            self.s3.put_object_tagging(
                Bucket=ref.bucket,
                Key=ref.key,
                **self._version_args(ref),
                Tagging={"TagSet": [{"Key": QUARANTINE_TAG, "Value": reason}]},
            )
        except ClientError as exc:
            if error_code(exc) in MISSING_OBJECT_CODES:
                raise _Missing() from exc
            raise
        self.count(QUARANTINED, reason=reason)
        self.logger.warning("alert object quarantined", extra={
            "reason": reason, "detail": detail[:500], "bucket": ref.bucket, "key": ref.key,
            "version_id": ref.version, "quarantine_key": target})
        return ObjectResult("quarantined", reason=reason, quarantine_key=target)
