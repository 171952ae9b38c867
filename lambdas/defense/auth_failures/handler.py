"""Lambda entry point (defense.auth_failures.handler.lambda_handler): a CloudWatch Logs
subscription on IoT Core's log group, filtered to authorization failures, so it runs only when
something fails (a DynamoDB write per subject per delivery is acceptable: failures are anomalies;
one ListThingPrincipals call per certificate that crosses the limit, see defense.attribution).

Malformed deliveries and log lines are counted and skipped (retrying them cannot help). A
DynamoDB or SNS error raises after every other client of the delivery has been handled, so
Lambda retries the delivery (asynchronous invocation); the counters make the retry count
nothing twice (see counter.py).

The delivery is read through Powertools' CloudWatchLogsEvent (failures.decode_event). boto3 is
imported when the first data message needs its clients. No Powertools Tracer: its X-Ray SDK
import (~120 ms of cold start) is not worth a subsegment per UpdateItem of a function that runs
only when devices fail to authorize; Lambda's active tracing still records every invocation.

Env: COUNTERS_TABLE, VIOLATION_TOPIC_ARN, PROFILE_NAME, WINDOW_SECONDS, MAX_AUTH_FAILURES.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from defense.attribution import Attachments
from defense.auth_failures.counter import BEHAVIOR_NAME, FailureCounter, settings_from_env
from defense.auth_failures.failures import (
    BAD_MESSAGE_TYPE,
    CONTROL_MESSAGE,
    DATA_MESSAGE,
    MalformedEvent,
    decode_event,
    tally,
)
from shared.runtime import client, handler_runtime

runtime = handler_runtime("auth-failure-detector")
logger, metrics, count = runtime.logger, runtime.metrics, runtime.count


class CountingError(RuntimeError):
    """Some counters were not updated or some violations not published: retry the delivery."""


@functools.cache
def _dependencies() -> tuple[FailureCounter, tuple[str, ...]]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    settings, problems = settings_from_env()
    for problem in problems:
        logger.error("auth failure detector setting missing or invalid; using the default",
                     extra={"problem": problem})
    sns = client("sns")

    def publish(violation: dict[str, Any]) -> None:
        from shared.violations import violation_json

        if not settings.topic:
            raise CountingError("VIOLATION_TOPIC_ARN is not set")
        sns.publish(TopicArn=settings.topic, Message=violation_json(violation))

    attachments = Attachments(lambda: client("iot"), ttl_seconds=settings.window_seconds)
    counter = FailureCounter(client("dynamodb"), settings, publish, attachments=attachments,
                             now_ms=lambda: int(time.time() * 1000), logger=logger)
    return counter, tuple(problems)


# The event holds client ids, source IPs and principals: only counts, subjects and client ids are logged.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    summary = {"failures": 0, "clients": 0, "violations": 0, "malformed": 0}
    try:
        doc = decode_event(event)
    except MalformedEvent as exc:
        logger.error("not a CloudWatch Logs subscription delivery", extra={"reason": exc.reason})
        count("AuthEventsMalformed", reason=exc.reason)
        summary["malformed"] = 1
        return summary
    message_type = doc.message_type
    if message_type == CONTROL_MESSAGE:  # CloudWatch Logs checking the destination is reachable
        logger.info("control message ignored")
        count("AuthControlMessages")
        return summary
    if message_type != DATA_MESSAGE:
        logger.error("unknown subscription message type", extra={"message_type": message_type[:64]})
        count("AuthEventsMalformed", reason=BAD_MESSAGE_TYPE)
        summary["malformed"] = 1
        return summary

    counter, problems = _dependencies()
    if problems:
        count("AuthDetectorConfigInvalid", len(problems))
    failures = tally(doc, counter.settings.window_seconds)
    for reason, n in sorted(failures.malformed.items()):
        runtime.breakdown("AuthLogLinesMalformed", n, reason=reason)  # the total is counted below
    if failures.malformed:
        logger.warning("malformed log events skipped", extra={"reasons": failures.malformed})

    errors = 0
    violations = duplicates = skipped = unreportable = 0
    for key, event_ids in failures.failures.items():
        kind, subject, window_start = key
        try:
            outcome = counter.record(kind, subject, window_start, event_ids, failures.claimed.get(key))
        except Exception:
            errors += 1
            logger.exception("failures not counted; the delivery will be retried",
                             extra={"kind": kind, "subject": subject, "window_start": window_start})
            continue
        duplicates += not outcome.applied and not outcome.skipped
        skipped += outcome.skipped
        if outcome.unreportable:
            unreportable += 1
            logger.warning("principal over the authorization-failure limit is not a certificate: "
                           "not reported",
                           extra={"principal": subject, "window_start": window_start, "count": outcome.count})
        if outcome.violation is not None:
            violations += 1
            logger.warning("violation published", extra={
                "thing": outcome.violation.get("thingName"),
                "certificate": outcome.violation.get("certificateId"),
                "client_id": outcome.violation.get("clientId"),
                "behavior": outcome.violation["behavior"]["name"],
                "violation_id": outcome.violation["violationId"], "count": outcome.count,
                "window_start": window_start})

    count("AuthFailuresCounted", failures.counted)
    count("AuthLogLinesIgnored", failures.ignored)
    count("AuthLogLinesMalformed", failures.malformed_total)
    count("AuthCounterUpdates", len(failures.failures) - skipped)
    count("AuthDeliveriesRepeated", duplicates)
    count("AuthClientsUnreportable", unreportable)
    count("ViolationsPublished", violations, behavior=BEHAVIOR_NAME if violations else None)
    count("AuthCountingErrors", errors)
    summary.update(failures=failures.counted, clients=len(failures.failures), violations=violations,
                   malformed=failures.malformed_total)
    logger.info("authorization failures counted", extra={
        **summary, "lines": failures.lines, "ignored": failures.ignored, "repeated": duplicates})
    if errors:
        raise CountingError(f"{errors} of {len(failures.failures)} counters failed")
    return summary
