"""Where telemetry lands in S3 and how it is found again: shared by the transform (which returns the
partition keys), the stack (Firehose prefix, Glue table and its partition projection) and fleetctl
(which computes a thing's shard to read only that shard). Plain Python: the stacks import it at
synthesis, where the Lambda runtime's libraries (Powertools, boto3) are not installed.

Layout (partitions that do not grow with the fleet: 24 hours x N shards a day, whatever its size):
    telemetry/day=<yyyy-mm-dd>/hour=<hh>/shard=<ss>/<Firehose object>   a row per message: GZIP JSON
                                                                        lines (or Parquet)
    telemetry-errors/<error-output-type>/day=<yyyy-mm-dd>/...            JSON, written by Firehose
day and hour are the UTC time IoT received the message (the rule's timestamp(), not a device claim);
shard = shard_of(thing, N), a stable hash of the thing name into N buckets (N = telemetry_shards).
"""

from __future__ import annotations

import zlib

DEFAULT_SHARDS = 16
MAX_SHARDS = 100  # two digits in the prefix; the partition-projection range is 0..N-1
DATA_PREFIX = "telemetry/"
ERROR_PREFIX = "telemetry-errors/"

# Firehose builds each S3 prefix from the partition keys the transform returns (no key value
# contains a "/"). "Use Amazon S3 bucket prefix to deliver data" (Firehose developer guide,
# dynamic-partitioning-s3bucketprefix.html): !{partitionKeyFromLambda:<key>}.
S3_PREFIX_TEMPLATE = ("telemetry/day=!{partitionKeyFromLambda:day}/hour=!{partitionKeyFromLambda:hour}/"
                      "shard=!{partitionKeyFromLambda:shard}/")
# Records Firehose could not deliver as rows: our rejections (answered ProcessingFailed), format
# conversion failures, partitioning failures. The error prefix may use only !{firehose:...} and
# !{timestamp:...} expressions ("Custom prefixes for Amazon S3 objects", s3-prefixes.html).
ERROR_PREFIX_TEMPLATE = ERROR_PREFIX + "!{firehose:error-output-type}/day=!{timestamp:yyyy-MM-dd}/"

# The Glue table's partition columns, in prefix order, and their projection.
PARTITION_COLUMNS = ("day", "hour", "shard")
LOCATION_TEMPLATE = "telemetry/day=${day}/hour=${hour}/shard=${shard}/"


def shard_of(thing: str, shards: int = DEFAULT_SHARDS) -> int:
    """The thing's shard, 0..shards-1: CRC-32 of its UTF-8 name, modulo shards. Stable across
    processes, versions and languages (zlib's CRC-32 is the IEEE one); not a secret, and need not
    be: who can name a thing already chooses its shard, and a shard only narrows what a query reads."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be from 1 to {MAX_SHARDS}")
    return zlib.crc32(thing.encode()) % shards


def shard_text(shard: int) -> str:
    """The shard as it appears in the prefix and the projected column: two digits."""
    return f"{shard:02d}"


def partition_keys(thing: str, day: str, hour: int, shards: int = DEFAULT_SHARDS) -> dict[str, str]:
    """The partition keys the transform returns for a valid record."""
    return {"day": day, "hour": f"{hour:02d}", "shard": shard_text(shard_of(thing, shards))}


def s3_prefix(keys: dict[str, str]) -> str:
    """The prefix Firehose makes of `keys` with S3_PREFIX_TEMPLATE."""
    return f"telemetry/day={keys['day']}/hour={keys['hour']}/shard={keys['shard']}/"


def projection_parameters(bucket_uri: str, shards: int, first_day: str) -> dict[str, str]:
    """The Glue table parameters of partition projection ("Partition projection with Amazon Athena",
    partition-projection.html; types date / integer, storage.location.template): Athena computes the
    partitions from these instead of reading them from the catalog, so nothing (no crawler, no
    MSCK REPAIR) has to register a new hour or shard. `bucket_uri` is s3://bucket (no slash)."""
    return {
        "projection.enabled": "true",
        "projection.day.type": "date",
        "projection.day.format": "yyyy-MM-dd",
        "projection.day.range": f"{first_day},NOW",
        "projection.day.interval": "1",
        "projection.day.interval.unit": "DAYS",
        "projection.hour.type": "integer",
        "projection.hour.range": "0,23",
        "projection.hour.digits": "2",
        "projection.shard.type": "integer",
        "projection.shard.range": f"0,{shards - 1}",
        "projection.shard.digits": "2",
        "storage.location.template": f"{bucket_uri}/{LOCATION_TEMPLATE}",
    }
