"""Where telemetry lands in S3: shared by the transform (which returns the partition keys) and the
stack (which gives Firehose the prefix template). Plain Python: the stacks import it at synthesis,
where the Lambda runtime's libraries (Powertools, boto3) are not installed."""

from __future__ import annotations

# Firehose builds each S3 prefix from the partition keys the transform returns (no key value
# contains a "/"): telemetry/thing=<thing>/date=<day>/ or telemetry-errors/reason=<why>/date=<day>/.
S3_PREFIX_TEMPLATE = ("!{partitionKeyFromLambda:stream}/!{partitionKeyFromLambda:partition}/"
                      "date=!{partitionKeyFromLambda:date}/")


def s3_prefix(partition_keys: dict[str, str]) -> str:
    """The prefix Firehose makes of `partition_keys` with S3_PREFIX_TEMPLATE."""
    return f"{partition_keys['stream']}/{partition_keys['partition']}/date={partition_keys['date']}/"
