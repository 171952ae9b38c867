"""shared.runtime: the handler preamble every function uses."""

from __future__ import annotations

import json

from shared.runtime import boto_config, client, error_code, handler_runtime


def test_count_adds_to_the_total_and_breaks_down_by_reason(monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "svc")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Fleetwarden/dev")  # as the stack sets it
    runtime = handler_runtime("fallback")
    assert runtime.service == "svc"
    runtime.count("Things")
    runtime.count("Things", reason="bad")
    runtime.count("Things", reason=None)  # no breakdown without a value
    breakdown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(breakdown) == 1  # flushed at once; the total waits for the invocation's flush
    assert breakdown[0]["reason"] == "bad" and breakdown[0]["Things"] == [1.0]
    assert breakdown[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fleetwarden/dev"
    runtime.metrics.flush_metrics()
    total = json.loads(capsys.readouterr().out)
    assert total["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fleetwarden/dev"
    assert total["Things"] == [1.0, 1.0, 1.0] and total["service"] == "svc"


def test_synchronous_callers_get_short_timeouts_and_one_retry():
    fast, slow = boto_config(synchronous=True), boto_config()
    assert (fast.connect_timeout, fast.read_timeout, fast.retries["total_max_attempts"]) == (1, 2, 2)
    assert (slow.connect_timeout, slow.read_timeout, slow.retries["total_max_attempts"]) == (2, 5, 3)
    s3 = client("s3", synchronous=True, region_name="eu-west-1")
    assert s3.meta.config.read_timeout == 2


def test_error_code_is_the_service_code_or_the_exception_class():
    from botocore.exceptions import ClientError, ReadTimeoutError

    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")
    assert error_code(throttled) == "ThrottlingException"
    assert error_code(ClientError({}, "UpdateItem")) == "ClientError"
    assert error_code(ReadTimeoutError(endpoint_url="https://iot")) == "ReadTimeoutError"
