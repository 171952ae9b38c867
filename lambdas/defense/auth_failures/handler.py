"""Lambda entry point (defense.auth_failures.handler.lambda_handler): a CloudWatch Logs
subscription on IoT Core's log group, filtered to authorization failures, so it runs only when
something fails (a DynamoDB write per client per delivery is acceptable: failures are anomalies).

Malformed deliveries and log lines are counted and skipped (retrying them cannot help). A
DynamoDB or SNS error raises after every other client of the delivery has been handled, so
Lambda retries the delivery (asynchronous invocation); the counters make the retry count
nothing twice (see counter.py).

Env: COUNTERS_TABLE, VIOLATION_TOPIC_ARN, PROFILE_NAME, WINDOW_SECONDS, MAX_AUTH_FAILURES.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.config import Config

from defense.auth_failures.counter import FailureCounter, settings_from_env
from defense.auth_failures.failures import CONTROL_MESSAGE, DATA_MESSAGE, MalformedEvent, decode_event, tally

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "auth-failure-detector")
logger = Logger(service=SERVICE)
NAMESPACE = "Fleetwarden"
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

BOTO_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 3, "mode": "standard"})


class CountingError(RuntimeError):
    """Some counters were not updated or some violations not published: retry the delivery."""


@functools.cache
def _dependencies() -> tuple[FailureCounter, tuple[str, ...]]:
    """Built on first use, once per container (and after the env is set, in tests)."""
    settings, problems = settings_from_env()
    for problem in problems:
        logger.error("auth failure detector setting missing or invalid; using the default",
                     extra={"problem": problem})
    sns = boto3.client("sns", config=BOTO_CONFIG)

    def publish(violation: dict[str, Any]) -> None:
        from shared.violations import violation_json

        if not settings.topic:
            raise CountingError("VIOLATION_TOPIC_ARN is not set")
        sns.publish(TopicArn=settings.topic, Message=violation_json(violation))

    counter = FailureCounter(boto3.client("dynamodb", config=BOTO_CONFIG), settings, publish,
                             now_ms=lambda: int(time.time() * 1000), logger=logger)
    return counter, tuple(problems)


def _count(name: str, value: float, **dimensions: str) -> None:
    if not dimensions:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE,
                       default_dimensions={"service": SERVICE, **dimensions}):
        pass


# The event holds client ids, source IPs and principals: only counts and client ids are logged.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    summary = {"failures": 0, "clients": 0, "violations": 0, "malformed": 0}
    try:
        doc = decode_event(event)
    except MalformedEvent as exc:
        logger.error("not a CloudWatch Logs subscription delivery", extra={"reason": exc.reason})
        _count("AuthEventsMalformed", 1)
        _count("AuthEventsMalformed", 1, reason=exc.reason)
        summary["malformed"] = 1
        return summary
    message_type = doc["messageType"]
    if message_type == CONTROL_MESSAGE:  # CloudWatch Logs checking the destination is reachable
        logger.info("control message ignored")
        _count("AuthControlMessages", 1)
        return summary
    if message_type != DATA_MESSAGE:
        logger.error("unknown subscription message type", extra={"message_type": message_type[:64]})
        _count("AuthEventsMalformed", 1)
        _count("AuthEventsMalformed", 1, reason="bad-message-type")
        summary["malformed"] = 1
        return summary

    counter, problems = _dependencies()
    if problems:
        _count("AuthDetectorConfigInvalid", len(problems))
    failures = tally(doc, counter.settings.window_seconds)
    for reason, n in sorted(failures.malformed.items()):
        _count("AuthLogLinesMalformed", n, reason=reason)
    if failures.malformed:
        logger.warning("malformed log events skipped", extra={"reasons": failures.malformed})

    errors = 0
    violations = duplicates = skipped = unreportable = 0
    for (client_id, window_start), event_ids in failures.failures.items():
        try:
            outcome = counter.record(client_id, window_start, event_ids)
        except Exception:
            errors += 1
            logger.exception("failures not counted; the delivery will be retried",
                             extra={"client_id": client_id, "window_start": window_start})
            continue
        duplicates += not outcome.applied and not outcome.skipped
        skipped += outcome.skipped
        if outcome.unreportable:
            unreportable += 1
            logger.warning("client over the authorization-failure limit is not a thing name: not reported",
                           extra={"client_id": client_id, "window_start": window_start,
                                  "count": outcome.count})
        if outcome.violation is not None:
            violations += 1
            logger.warning("violation published", extra={
                "thing": client_id, "behavior": outcome.violation["behavior"]["name"],
                "violation_id": outcome.violation["violationId"], "count": outcome.count,
                "window_start": window_start})

    _count("AuthFailuresCounted", failures.counted)
    _count("AuthLogLinesIgnored", failures.ignored)
    _count("AuthLogLinesMalformed", failures.malformed_total)
    _count("AuthCounterUpdates", len(failures.failures) - skipped)
    _count("AuthDeliveriesRepeated", duplicates)
    _count("AuthClientsUnreportable", unreportable)
    _count("ViolationsPublished", violations)
    if violations:
        _count("ViolationsPublished", violations, behavior="AuthorizationFailures")
    _count("AuthCountingErrors", errors)
    summary.update(failures=failures.counted, clients=len(failures.failures), violations=violations,
                   malformed=failures.malformed_total)
    logger.info("authorization failures counted", extra={
        **summary, "lines": failures.lines, "ignored": failures.ignored, "repeated": duplicates})
    if errors:
        raise CountingError(f"{errors} of {len(failures.failures)} counters failed")
    return summary
