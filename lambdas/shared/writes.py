"""Conditional creates that survive the SDK's own retries.

A botocore retry re-sends the very same request when an attempt's answer is lost (read timeouts
and closed connections are retried: "Retry behavior", AWS SDKs and Tools reference guide,
https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html). A PutItem guarded by
`attribute_not_exists(<key>)` then fails its condition against the first attempt, which DID write
the item: that is this request's own success, not another writer's item. DynamoDB returns the
item that failed the condition when asked (ReturnValuesOnConditionCheckFailure ALL_OLD: "Item
which caused the ConditionalCheckFailedException", botocore's DynamoDB
ConditionalCheckFailedException reference), so telling the two apart costs no extra call: an
existing item equal to the one being written is ours.
"""

from __future__ import annotations

from typing import Any, Mapping


def _plain(wire: Mapping[str, Any] | None) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer  # boto3 comes with the table; not at import

    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in (wire or {}).items()}


def put_new(table: Any, item: Mapping[str, Any], key: str, **request: Any) -> dict[str, Any] | None:
    """Put `item` (a boto3 Table resource) unless an item with its `key` exists. None when it was
    written, by this call or by an earlier attempt of this same request; else the existing item
    (another writer's). `request`: more PutItem parameters."""
    try:
        table.put_item(Item=item, ConditionExpression=f"attribute_not_exists({key})",
                       ReturnValuesOnConditionCheckFailure="ALL_OLD", **request)
        return None
    except table.meta.client.exceptions.ConditionalCheckFailedException as failed:
        existing = _plain(failed.response.get("Item"))
        if not existing:  # not returned (e.g. an older emulator): read it
            existing = table.get_item(Key={key: item[key]}, ConsistentRead=True).get("Item") or {}
        return None if existing == dict(item) else existing
