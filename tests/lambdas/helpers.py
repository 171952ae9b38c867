"""Test helpers shared by the Lambda tests."""

from __future__ import annotations

import json
from typing import Any


class Counting:
    """Wraps a boto3 client: records every API call and raises queued errors first."""

    def __init__(self, client: Any, fail: dict[str, list[Exception]] | None = None):
        self._client = client
        self.calls: list[str] = []
        self.fail = fail or {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or name in ("meta", "exceptions") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            pending = self.fail.get(name)
            if pending:
                raise pending.pop(0)
            return attr(*args, **kwargs)

        return call


def drain_published(sqs: Any, queue_url: str) -> list[dict]:
    """Every JSON message an SNS topic delivered to this subscribed queue so far (drained)."""
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        for message in got:
            out.append(json.loads(json.loads(message["Body"])["Message"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
