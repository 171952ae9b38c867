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

The batch key lets the detector count a batch once: Firehose retries a failed invocation with the
same records ("Handle failure in data transformation", data-transformation-failure-handling.html),
and the transform may have put its aggregates before failing. The key is 2**32 + a 32-bit digest
of the SUM of BLAKE2b digests of the connection's record data in the batch: the same records give
the same key in any order, and a device cannot aim a batch at an earlier key without knowing IoT's
millisecond timestamps of each of its messages and how Firehose will batch them. 2**32 + ... keeps
batch keys apart from the detector's presence fingerprints (CRC-32s, below 2**32) in the same lists.
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
    (the batch keys make the retry count once)."""


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
