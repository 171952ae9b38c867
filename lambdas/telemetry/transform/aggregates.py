"""What the built-in detector needs from one Firehose batch of telemetry (pure: no AWS).

Instead of a second rule action copying every telemetry message to the observation stream, the
transform counts each batch per connection and sends ONE record per (client id, batch):

    {"kind": "telemetry-batch", "client_id": <the connection's client id>, "batch": <batch key>,
     "messages": n, "bytes": decoded payload bytes, "max_bytes": the largest one, "spoofed": n}

Every record whose envelope carries a client id and a payload counts, valid or not (a flood of
invalid messages is still a flood), against the client id (what AWS authenticated: the device
policy admits a connection only as its own thing), never against the topic's thing; `spoofed`
counts those whose topic named another thing. Client ids that are not thing names (the detector's
THING_ID) are not sent: the detector could not name them (counted in `unnamed`).

A Firehose retry must not count a batch twice. Firehose retries a failed invocation with the same
records ("Handle failure in data transformation", data-transformation-failure-handling.html), and
the transform may have put that batch's aggregates before failing. So the handler sends a batch's
aggregates at most once, through Powertools idempotency keyed on batch_id() (a digest of every
record in the batch that counted): a retry finds the batch done and sends nothing; a send that
failed removes its idempotency record, so the retry sends. The detector's state then needs no
memory of batches. Each aggregate still carries `batch` (2**32 + 32 bits of the same digests,
per connection) to trace it.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from typing import Any

KIND = "telemetry-batch"
BATCH_KEY_BASE = 1 << 32
# The detector's THING_ID (defense/detector/windows.py): the ids it can count and name.
THING_ID = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_safe_id = THING_ID.fullmatch
_MASK64 = (1 << 64) - 1


def decoded_length(payload: str) -> int:
    """The bytes base64 `payload` decodes to (3 per 4 characters, less the padding); for text that
    is not whole base64 quanta, 3/4 of its length (it is rejected anyway, but still sent)."""
    length = len(payload)
    nbytes = length // 4 * 3 if length & 3 == 0 else length * 3 // 4
    if length and not length & 3 and payload[-1] == "=":
        nbytes -= 2 if payload[-2] == "=" else 1
    return nbytes


class BatchAggregates:
    """Per-connection counts of one batch: add() per record, records() at the end."""

    __slots__ = ("_entries", "unnamed")

    def __init__(self) -> None:
        # client id -> [messages, bytes, max_bytes, spoofed, sum of record digests mod 2**64]
        self._entries: dict[str, list[int]] = {}
        self.unnamed = 0

    def add(self, client_id: str, payload: str, thing: Any, data: str) -> None:
        entry = self._entries.get(client_id)
        if entry is None:
            if not _safe_id(client_id):
                self.unnamed += 1
                return
            entry = self._entries[client_id] = [0, 0, 0, 0, 0]
        nbytes = decoded_length(payload)
        entry[0] += 1
        entry[1] += nbytes
        if nbytes > entry[2]:
            entry[2] = nbytes
        if thing != client_id:
            entry[3] += 1
        entry[4] = (entry[4] + int.from_bytes(blake2b(data.encode(), digest_size=8).digest(), "big")) & _MASK64

    def batch_id(self) -> str:
        """The batch's identity: the same records (in any order) give the same id."""
        total = sum(entry[4] for entry in self._entries.values()) & _MASK64
        count = sum(entry[0] for entry in self._entries.values())
        return blake2b(f"{count}:{total}".encode(), digest_size=16).hexdigest()

    def records(self) -> list[dict[str, Any]]:
        """One record per connection, in the order the connections first appeared."""
        return [{"kind": KIND, "client_id": client_id,
                 "batch": BATCH_KEY_BASE + int.from_bytes(
                     blake2b(digest.to_bytes(8, "big"), digest_size=4).digest(), "big"),
                 "messages": messages, "bytes": nbytes, "max_bytes": largest, "spoofed": spoofed}
                for client_id, (messages, nbytes, largest, spoofed, digest) in self._entries.items()]


PUT_RECORDS_MAX = 500  # records per PutRecords call ("PutRecords", Kinesis Data Streams API reference)
PUT_ATTEMPTS = 3


class SendError(RuntimeError):
    """Some aggregates were not accepted: the invocation must fail so Firehose retries the batch
    (and the retry sends them, idempotently)."""


def send(kinesis: Any, stream: str, records: list[dict[str, Any]], *, attempts: int = PUT_ATTEMPTS) -> int:
    """Put `records` on the observation stream, partition key = client id (so a connection's
    aggregates land on the shard, and the detector window, its presence and other messages use).
    PutRecords is not atomic: the records it reports failed (FailedRecordCount, ErrorCode per
    record) are sent again, up to `attempts` times; SendError if some still fail. Returns the
    number of PutRecords calls."""
    import json

    calls = 0
    for first in range(0, len(records), PUT_RECORDS_MAX):
        pending = [{"Data": json.dumps(r, separators=(",", ":")).encode(), "PartitionKey": r["client_id"]}
                   for r in records[first:first + PUT_RECORDS_MAX]]
        for _ in range(attempts):
            calls += 1
            response = kinesis.put_records(StreamName=stream, Records=pending)
            if not response.get("FailedRecordCount"):
                pending = []
                break
            pending = [entry for entry, result in zip(pending, response["Records"]) if result.get("ErrorCode")]
        if pending:
            raise SendError(f"{len(pending)} detector aggregates not accepted after {attempts} attempts")
    return calls
