"""An S3 bucket with the posture every Fleetwarden bucket must have."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

# HIPAA and NIST 800-53 both ask for cross-region replication. Replication needs a second
# region and bucket per stage; Fleetwarden leaves that choice (and its cost) to the operator.
_REPLICATION_REASON = (
    "Cross-region replication needs a destination bucket in a second region chosen by the "
    "operator; durability here comes from versioning and S3's multi-AZ storage."
)


class SecureBucket(Construct):
    """Versioned, public access blocked, TLS-only, lifecycle-managed, encrypted.

    `encryption_key` given: SSE-KMS with a bucket key. Not given: SSE-S3, which only a
    bucket that a service cannot write with KMS may use (the server access-log target).
    `access_log_bucket` given: server access logs go there under `<prefix>/`.
    `glacier_instant_after_days`: to Glacier Instant Retrieval (millisecond reads, for data that
    is still queried now and then); `glacier_after_days`: to Glacier Flexible Retrieval.
    `expire_prefixes` {prefix: days}: objects under a prefix expire sooner (S3 applies the
    earliest expiration of the rules that match an object).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        expire_after_days: int,
        encryption_key: kms.IKey | None = None,
        access_log_bucket: s3.IBucket | None = None,
        access_log_prefix: str | None = None,
        infrequent_access_after_days: int | None = None,
        glacier_after_days: int | None = None,
        glacier_instant_after_days: int | None = None,
        expire_prefixes: dict[str, int] | None = None,
        object_ownership: s3.ObjectOwnership = s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        bucket_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        transitions = []
        if infrequent_access_after_days and infrequent_access_after_days < expire_after_days:
            transitions.append(
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(infrequent_access_after_days),
                )
            )
        if glacier_instant_after_days and glacier_instant_after_days < expire_after_days:
            transitions.append(
                s3.Transition(
                    storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                    transition_after=Duration.days(glacier_instant_after_days),
                )
            )
        if glacier_after_days and glacier_after_days < expire_after_days:
            transitions.append(
                s3.Transition(
                    storage_class=s3.StorageClass.GLACIER,
                    transition_after=Duration.days(glacier_after_days),
                )
            )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.KMS if encryption_key else s3.BucketEncryption.S3_MANAGED,
            encryption_key=encryption_key,
            bucket_key_enabled=bool(encryption_key),
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=object_ownership,
            server_access_logs_bucket=access_log_bucket,
            server_access_logs_prefix=access_log_prefix,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="age-out",
                    transitions=transitions or None,
                    expiration=Duration.days(expire_after_days),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                    expired_object_delete_marker=False,
                ),
                *[s3.LifecycleRule(
                    id=f"expire-{prefix.strip('/')}",
                    prefix=prefix,
                    expiration=Duration.days(days),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ) for prefix, days in sorted((expire_prefixes or {}).items())],
            ],
        )
        acks = [Acknowledgment(id=rule, reason=_REPLICATION_REASON) for rule in (
            "HIPAA.Security-S3BucketReplicationEnabled",
            "NIST.800.53.R5-S3BucketReplicationEnabled",
        )]
        Validations.of(self.bucket).acknowledge(*acks)
