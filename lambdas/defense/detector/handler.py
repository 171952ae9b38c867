"""Lambda entry point (defense.detector.handler.lambda_handler): the device Kinesis stream's consumer, with
tumbling windows (event source mapping TumblingWindowInSeconds = WINDOW_SECONDS).

Each invocation folds its batch into the window's state (detector/windows.py) and publishes the
violations of devices that crossed a limit in this batch to VIOLATION_TOPIC_ARN, in Device
Defender's SNS alert format. Healthy traffic makes no AWS call at all: boto3 is imported and the
SNS client built on the first violation only. A certificate's violation (refused connections)
first asks the registry whether the certificate is attached to the thing it claimed: if so it
becomes that thing's violation (defense.attribution.resolve, one ListThingPrincipals call per
certificate crossing a limit, cached for the window); a registry error fails the invocation like
a publish error.

Failure policy: if publishing fails, the invocation RAISES (it does not return
batchItemFailures). Lambda then retries the same batch with the same previous state: fold is a
pure function of (state, records), so the retry counts nothing twice and produces the same
violations with the same violationIds (any that did get through are republished; the
auto-response is idempotent on violationId). batchItemFailures would make Lambda checkpoint the
records before the failed one and carry on from it with the state this invocation returned,
which already counts the records after it: they would be counted twice. Records themselves
never fail (malformed ones are counted and skipped: they are observations, nothing is lost).
The event source should therefore not bisect batches on error; its retry limits (maximum record
age / retry attempts, with an on-failure destination) bound how long a broken topic can hold a
shard back, and the iterator-age alarm shows it.

At the final invocation of a window (isFinalInvokeForWindow) the window is summarised in one log
line and an empty state is returned: the next window starts from nothing (fold would also
discard a state of another window).

The event is read through Powertools' KinesisStreamEvent (shardId, state, the tumbling-window
flags); its records go to fold as the plain dicts Lambda delivers: a data-class wrapper per record
costs ~0.5 us of fold's ~6 us per record, and data_as_json would add ~1 us and decode base64
leniently (fold checks it strictly). No Powertools Tracer: the X-Ray SDK (and boto3) on every cold
start of a function that calls nothing under healthy traffic is not worth a subsegment per publish.

Env: VIOLATION_TOPIC_ARN, PROFILE_NAME, WINDOW_SECONDS, MAX_MESSAGES, MAX_BYTES, MAX_CONNECTS,
MAX_DISCONNECTS, MAX_ESTABLISHED_TCP, optional MAX_AUTH_FAILURES (default 10) and
MAX_TRACKED_THINGS (default 10,000 per shard).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent

from defense.attribution import Attachments, resolve
from defense.detector.windows import FoldStats, Limits, alarmed_count, fold, limits_from_env
from shared.runtime import client, handler_runtime

runtime = handler_runtime("detector")
logger, metrics, count = runtime.logger, runtime.metrics, runtime.count

SNS_BATCH = 10  # PublishBatch takes at most 10 messages


class PublishError(RuntimeError):
    """Some violations were not accepted by SNS: the batch must be retried."""


@functools.cache
def _settings() -> tuple[Limits, tuple[str, ...]]:
    """Read once per container (and after the env is set, in tests)."""
    limits, problems = limits_from_env()
    for problem in problems:
        logger.error("detector setting missing or invalid; using the default",
                     extra={"problem": problem, "limits": limits.__dict__})
    return limits, tuple(problems)


@functools.cache
def _sns() -> Any:
    """The SNS client, built on the first violation (boto3 is not imported before)."""
    return client("sns")


@functools.cache
def _attachments() -> Attachments:
    """The registry's answers for this container; the IoT client is built on the first question."""
    return Attachments(lambda: client("iot"), ttl_seconds=_settings()[0].window_seconds)


def publish(violations: list[dict[str, Any]]) -> None:
    """Every violation to the violation topic; PublishError (or the client's error) if any fails."""
    from shared.violations import violation_json

    topic = os.environ.get("VIOLATION_TOPIC_ARN")
    if not topic:
        raise PublishError("VIOLATION_TOPIC_ARN is not set")
    sns = _sns()
    for first in range(0, len(violations), SNS_BATCH):
        chunk = violations[first:first + SNS_BATCH]
        response = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
            {"Id": str(i), "Message": violation_json(v)} for i, v in enumerate(chunk)])
        failed = response.get("Failed") or []
        if failed:
            codes = sorted({str(f.get("Code")) for f in failed})
            raise PublishError(
                f"SNS refused {len(failed)} of {len(chunk)} violations: {', '.join(codes)}"[:300])


def _emit(stats: FoldStats, published: list[dict[str, Any]]) -> None:
    # Every batch reports these, zeros included, so an alarm always has data.
    count("DetectorRecords", stats.records)
    count("DetectorRecordsMalformed", stats.malformed_total)
    count("DeviceReportsInvalid", stats.reports_invalid)
    count("DetectorSpoofedRecords", stats.spoofed)
    # Anomalies only (no alarm reads them): absent from a healthy batch's output.
    for name, n in (("DetectorDuplicateEvents", stats.duplicates),
                    ("DetectorConnectFailures", stats.connect_failed),
                    ("DetectorUnattributed", stats.unattributed)):
        if n:
            count(name, n)
    count("DetectorThingsEvicted", stats.evicted)
    count("DetectorTrackedThings", stats.tracked)
    count("DetectorStateBytes", stats.state_bytes, MetricUnit.Bytes)
    count("ViolationsPublished", len(published))
    for reason, n in sorted(stats.malformed.items()):
        runtime.breakdown("DetectorRecordsMalformed", n, reason=reason)
    by_behavior: dict[str, int] = {}
    for violation in published:
        name = violation["behavior"]["name"]
        by_behavior[name] = by_behavior.get(name, 0) + 1
    for name, n in sorted(by_behavior.items()):
        runtime.breakdown("ViolationsPublished", n, behavior=name)


# Neither the event (device records) nor the response (the state: per-device counts) is logged.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(raw_event: Any, context: Any) -> dict[str, Any]:
    if not isinstance(raw_event, dict):
        logger.error("not a Kinesis tumbling-window event")
        count("DetectorEventsMalformed")
        return {"state": {}, "batchItemFailures": []}
    event = KinesisStreamEvent(raw_event)
    limits, problems = _settings()
    if problems:
        count("DetectorConfigInvalid", len(problems))
    shard = event.shard_id if isinstance(event.shard_id, str) else None

    stats = FoldStats()
    # fold checks the shapes of these itself: the records and window as delivered (see above).
    state, violations = fold(event.state, event.get("Records"), limits, event.get("window"), stats=stats)
    if stats.window_missing:
        logger.error("event has no tumbling window: counting in the current aligned window",
                     extra={"shard": shard})
    if stats.state_reset:
        logger.warning("state of another window discarded",
                       extra={"shard": shard, "window_start": state["w"]})
    if stats.evicted:
        logger.warning("tracked things over the per-shard cap: the least active were dropped",
                       extra={"shard": shard, "evicted": stats.evicted, "tracked": stats.tracked,
                              "max_tracked": limits.max_tracked})
    for thing, reason in stats.invalid_reports:
        logger.warning("device metrics report invalid", extra={"thing": thing, "reason": reason})

    if violations:
        try:
            violations = [resolve(v, _attachments(), window=state["w"]) for v in violations]
            publish(violations)
        except Exception:
            logger.exception("violations not attributed or published; the batch will be retried with its "
                             "previous state",
                             extra={"shard": shard, "violations": len(violations)})
            _emit(stats, [])
            count("DetectorPublishFailures")
            raise
        for v in violations:
            logger.warning("violation published", extra={
                "thing": v.get("thingName"), "certificate": v.get("certificateId"),
                "client_id": v.get("clientId"),
                "behavior": v["behavior"]["name"], "violation_id": v["violationId"],
                "metric_value": v.get("metricValue"), "window_start": state["w"]})
    _emit(stats, violations)
    logger.info("detector batch folded", extra={
        "shard": shard, "window_start": state["w"], "records": stats.records, "telemetry": stats.telemetry,
        "messages": stats.messages, "alerts": stats.alerts, "presence": stats.presence, "connect_failed": stats.connect_failed,
        "duplicates": stats.duplicates, "reports": stats.reports, "malformed": stats.malformed,
        "violations": len(violations), "tracked": stats.tracked})

    if event.is_window_terminated_early is True:
        # Only when the state outgrew 1 MB: the next window starts early and counts restart.
        logger.error("window terminated early (state too large)", extra={"shard": shard})
        count("DetectorWindowsTerminatedEarly")
    if event.is_final_invoke_for_window is True:
        logger.info("window closed", extra={
            "shard": shard, "window_start": state["w"], "records": state["n"], "things": len(state["t"]),
            "violations": alarmed_count(state), "evicted": state["e"]})
        state = {}
    return {"state": state, "batchItemFailures": []}
