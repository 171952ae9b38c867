"""Where the account's API calls are recorded: the server access-log bucket, and the CloudTrail
trail into an encrypted bucket and a CloudWatch Logs group."""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, Validations
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.platform.bucket import SecureBucket
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.nag import acknowledge_role_policy


def access_log_bucket(scope: Construct, construct_id: str, *, expire_after_days: int) -> s3.Bucket:
    """The target of every bucket's server access logs."""
    bucket = SecureBucket(
        scope, construct_id,
        expire_after_days=expire_after_days,
        infrequent_access_after_days=30,
    ).bucket
    Validations.of(bucket).acknowledge(
        *[
            Acknowledgment(id=rule, reason="This is the server access-log target bucket; "
                           "logging it into itself would loop.")
            for rule in ("AwsSolutions-S1", "HIPAA.Security-S3BucketLoggingEnabled",
                         "NIST.800.53.R5-S3BucketLoggingEnabled")
        ],
        *[
            Acknowledgment(id=rule, reason="S3 server access logging delivers only to buckets "
                           "with SSE-S3 default encryption, not SSE-KMS.")
            for rule in ("HIPAA.Security-S3DefaultEncryptionKMS",
                         "NIST.800.53.R5-S3DefaultEncryptionKMS")
        ],
    )
    return bucket


def trail(
    scope: Construct,
    *,
    name: str,
    key: kms.IKey,
    defaults: PlatformDefaults,
    access_logs: s3.IBucket,
    expire_after_days: int,
    log_group_name: str,
) -> logs.ILogGroup:
    """A multi-region trail with log-file validation, KMS-encrypted, also delivered to a log
    group (for the security alarms), which it returns."""
    trail_bucket = SecureBucket(
        scope, "TrailBucket",
        encryption_key=key,
        access_log_bucket=access_logs,
        access_log_prefix="cloudtrail-bucket/",
        glacier_after_days=90,
        expire_after_days=expire_after_days,
    ).bucket
    log_group = defaults.log_group(scope, "TrailLogGroup", name=log_group_name)
    created = cloudtrail.Trail(
        scope, "Trail",
        trail_name=name,
        bucket=trail_bucket,
        encryption_key=key,
        send_to_cloud_watch_logs=True,
        cloud_watch_log_group=log_group,
        is_multi_region_trail=True,
        include_global_service_events=True,
        enable_file_validation=True,
        management_events=cloudtrail.ReadWriteType.ALL,
    )
    acknowledge_role_policy(created.node.find_child("LogsRole"), "CloudTrail's delivery into its one log group")
    CfnOutput(scope, "TrailArn", value=created.trail_arn, description="The Fleetwarden CloudTrail trail")
    return log_group
