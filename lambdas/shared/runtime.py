"""The preamble every handler shares: its service name, Powertools Logger and Metrics in the
stage's namespace (Fleetwarden/<stage>), counting (a total to alarm on, a breakdown for the dashboard), and boto3
clients with bounded timeouts and retries.

    from shared.runtime import handler_runtime, client
    runtime = handler_runtime("alert-processor")
    logger, metrics, count = runtime.logger, runtime.metrics, runtime.count

Only Logger and Metrics are imported here. boto3 is imported by `client()` / `resource()` when a
handler first asks for one, so a function that makes no AWS call on its path (the detector under
healthy traffic) never loads it; Powertools' Tracer (which loads the X-Ray SDK, ~100-150 ms) is
not used by default: Lambda's active tracing still records every invocation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "Fleetwarden"  # when POWERTOOLS_METRICS_NAMESPACE is unset (tests); the stack sets Fleetwarden/<stage>

# Callers that wait on the answer (API Gateway's 29 s, the provisioning hook's 5 s) get short
# timeouts and one retry; asynchronous functions (queues, streams, SNS) can afford more.
SYNCHRONOUS = {"connect_timeout": 1, "read_timeout": 2, "retries": {"total_max_attempts": 2, "mode": "standard"}}
ASYNCHRONOUS = {"connect_timeout": 2, "read_timeout": 5, "retries": {"total_max_attempts": 3, "mode": "standard"}}


@dataclass(frozen=True)
class Runtime:
    service: str
    logger: Logger
    metrics: Metrics
    namespace: str = NAMESPACE

    def count(self, name: str, value: float = 1, unit: str = MetricUnit.Count, **dimensions: str) -> None:
        """`value` on the total (flushed with the invocation's metrics); with dimensions (usually
        `reason=`), also one data point broken down by them. None-valued dimensions are dropped."""
        self.metrics.add_metric(name=name, unit=unit, value=value)
        self.breakdown(name, value, unit, **dimensions)

    def breakdown(self, name: str, value: float = 1, unit: str = MetricUnit.Count, **dimensions: str | None) -> None:
        """Only the broken-down point (for a total already counted elsewhere), flushed at once."""
        present = {k: v for k, v in dimensions.items() if v}
        if not present:
            return
        with single_metric(name=name, unit=unit, value=value, namespace=self.namespace,
                           default_dimensions={"service": self.service, **present}):
            pass


def handler_runtime(default_service: str) -> Runtime:
    """The function's Logger and Metrics; the service name comes from POWERTOOLS_SERVICE_NAME
    (the stack sets it) or `default_service`."""
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or default_service
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
    return Runtime(service=service, logger=Logger(service=service),
                   metrics=Metrics(namespace=namespace, service=service), namespace=namespace)


def boto_config(*, synchronous: bool = False, **extra: Any) -> Any:
    from botocore.config import Config

    return Config(**(SYNCHRONOUS if synchronous else ASYNCHRONOUS), **extra)


def client(service: str, *, synchronous: bool = False, **kwargs: Any) -> Any:
    """A boto3 client with bounded timeouts and retries (boto3 imported on first use)."""
    import boto3

    config = kwargs.pop("config", None) or boto_config(synchronous=synchronous)
    return boto3.client(service, config=config, **kwargs)


def resource(service: str, *, synchronous: bool = False) -> Any:
    import boto3

    return boto3.resource(service, config=boto_config(synchronous=synchronous))


def error_code(err: BaseException) -> str:
    """The short name of a failed AWS call, as audit and incident records keep it: the service's
    error code of a botocore ClientError (ThrottlingException, ...), else the exception's class
    name (ReadTimeoutError, EndpointConnectionError, ...). Catch specific errors with the
    client's modeled classes (`client.exceptions.X`); this is only for recording them."""
    response = getattr(err, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code or type(err).__name__)
