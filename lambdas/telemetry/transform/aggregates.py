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

import json
from bisect import bisect_right
from hashlib import blake2b, md5
from typing import Any

from shared.topics import THING_NAME

KIND = "telemetry-batch"
PACKED_KIND = "telemetry-batches"  # {"kind": PACKED_KIND, "aggregates": [<KIND records>]}
MAX_PACKED_BYTES = 512 * 1024  # per packed record; Kinesis takes up to 1 MiB of data per record
BATCH_KEY_BASE = 1 << 32
# The detector's THING_ID (defense/detector/windows.py): the ids it can count and name.
THING_ID = THING_NAME
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


def hash_key(partition_key: str) -> int:
    """Where Kinesis puts a partition key: "an MD5 hash function is used to map partition keys to
    128-bit integer values" ("Amazon Kinesis Data Streams terminology and concepts", key-concepts.html)."""
    return int.from_bytes(md5(partition_key.encode(), usedforsecurity=False).digest(), "big")


def entries(records: list[dict[str, Any]], shard_starts: list[int] | None) -> list[dict[str, Any]]:
    """PutRecords entries for `records`. With the stream's open shards (their StartingHashKeys,
    sorted), the aggregates of the connections one shard takes are packed into one Kinesis record
    (split at MAX_PACKED_BYTES) with ExplicitHashKey = a member's own hash key, so each connection's
    counts still land on the shard its client id would (and the detector window its presence uses),
    at a fraction of the records: on-demand Kinesis bills each record as at least 1 KB, an aggregate
    is ~150 bytes. Without the shard map: one record per aggregate, partition key = client id."""
    if not shard_starts:
        return [{"Data": json.dumps(r, separators=(",", ":")).encode(), "PartitionKey": r["client_id"]}
                for r in records]
    groups: dict[int, list[tuple[int, str, str]]] = {}
    for record in records:
        key = hash_key(record["client_id"])
        shard = max(0, bisect_right(shard_starts, key) - 1)
        groups.setdefault(shard, []).append((key, record["client_id"], json.dumps(record, separators=(",", ":"))))
    packed = []
    for members in groups.values():
        first = 0
        while first < len(members):
            last, size = first, 0
            while last < len(members) and (last == first or size + len(members[last][2]) < MAX_PACKED_BYTES):
                size += len(members[last][2]) + 1
                last += 1
            key, client_id, _ = members[first]
            packed.append({
                "Data": (f'{{"kind":"{PACKED_KIND}","aggregates":['
                         + ",".join(text for _, _, text in members[first:last]) + "]}").encode(),
                "PartitionKey": client_id, "ExplicitHashKey": str(key)})
            first = last
    return packed


def send(kinesis: Any, stream: str, records: list[dict[str, Any]], *, shard_starts: list[int] | None = None,
         attempts: int = PUT_ATTEMPTS) -> int:
    """Put `records` on the observation stream (entries(): packed per shard when `shard_starts` is
    known, else one per aggregate keyed by client id). PutRecords is not atomic: the entries it
    reports failed (FailedRecordCount, ErrorCode per record) are sent again, up to `attempts`
    times; SendError if some still fail. Returns the number of PutRecords calls."""
    calls = 0
    # A batch's aggregates are smaller than the batch (<= 3 MB, Firehose's processing buffer), so
    # 500 entries never exceed PutRecords' request size.
    all_entries = entries(records, shard_starts)
    for first in range(0, len(all_entries), PUT_RECORDS_MAX):
        pending = all_entries[first:first + PUT_RECORDS_MAX]
        for _ in range(attempts):
            calls += 1
            response = kinesis.put_records(StreamName=stream, Records=pending)
            if not response.get("FailedRecordCount"):
                pending = []
                break
            pending = [entry for entry, result in zip(pending, response["Records"]) if result.get("ErrorCode")]
        if pending:
            raise SendError(f"{len(pending)} detector aggregate records not accepted after {attempts} attempts")
    return calls


def open_shard_starts(shards: list[dict[str, Any]]) -> list[int]:
    """The sorted StartingHashKeys of the open shards of a ListShards answer (a closed shard, the
    parent of a split or merge, has an EndingSequenceNumber and takes no more records)."""
    return sorted(int(s["HashKeyRange"]["StartingHashKey"]) for s in shards
                  if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {}))
