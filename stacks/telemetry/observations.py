"""The observation stream: what the built-in detector reads (the telemetry transform's per-batch
aggregates, presence events, device reports), keyed by device so one shard and one detector window
see a device."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from constructs import Construct


def observation_stream(scope: Construct, construct_id: str, *, name: str, key: kms.IKey) -> kinesis.Stream:
    stream = kinesis.Stream(
        scope, construct_id,
        stream_name=name,
        stream_mode=kinesis.StreamMode.ON_DEMAND,
        encryption=kinesis.StreamEncryption.KMS,
        encryption_key=key,
        retention_period=Duration.hours(24),
    )
    Validations.of(stream).acknowledge(Acknowledgment(
        id="AwsSolutions-KDS3",
        reason="The stream uses the stage's customer-managed data key (rotated, with a key "
               "policy and CloudTrail records under our control) rather than aws/kinesis, "
               "like every other store of device data here.",
    ))
    return stream
