"""Counting in the Fleetwarden namespace: a total to alarm on, and the same metric broken
down by a dimension (usually `reason`) for the dashboard. Shared by every handler."""

from __future__ import annotations

from typing import Callable

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "Fleetwarden"


def breakdown(name: str, service: str, value: float = 1, unit: str = MetricUnit.Count, **dimensions: str) -> None:
    """One data point of `name` with extra dimensions, flushed at once (single_metric)."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE,
                       default_dimensions={"service": service, **dimensions}):
        pass


def counter(metrics: Metrics, service: str) -> Callable[..., None]:
    """count(name, reason=None): the total on `metrics`, plus a by-reason point when given."""
    def count(name: str, reason: str | None = None) -> None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        if reason:
            breakdown(name, service, reason=reason)
    return count
