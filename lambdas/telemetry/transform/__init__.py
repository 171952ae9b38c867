"""Firehose data-transformation processor for device telemetry (IoT Basic Ingest -> S3)."""
