"""Encrypted SNS topics, dead-letter queues, and the alarm that calls a human."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

ALARM_PERIOD = Duration.minutes(5)


def encrypted_topic(scope: Construct, construct_id: str, *, topic_name: str, display_name: str,
                    key: kms.IKey) -> sns.Topic:
    """KMS-encrypted, TLS-only."""
    return sns.Topic(scope, construct_id, topic_name=topic_name, display_name=display_name,
                     master_key=key, enforce_ssl=True)


def dead_letter_queue(scope: Construct, construct_id: str, *, queue_name: str, key: kms.IKey,
                      reason: str) -> sqs.Queue:
    """KMS-encrypted, TLS-only, 14 days to look. `reason`: whose dead letters these are and
    who watches them (cdk-nag asks every queue for a DLQ; this one is the last stop)."""
    queue = sqs.Queue(
        scope, construct_id,
        queue_name=queue_name,
        encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
        retention_period=Duration.days(14), enforce_ssl=True,
    )
    Validations.of(queue).acknowledge(Acknowledgment(id="AwsSolutions-SQS3", reason=reason))
    return queue


def queue_depth(queue: sqs.IQueue) -> cloudwatch.Metric:
    """Messages waiting (the highest count in each period)."""
    return queue.metric_approximate_number_of_messages_visible(period=ALARM_PERIOD, statistic="Maximum")


def alarm(scope: Construct, construct_id: str, *, alarm_name: str, description: str,
          metric: cloudwatch.IMetric, topic: sns.ITopic) -> cloudwatch.Alarm:
    """Notifies `topic` as soon as one period of `metric` reaches 1; no data is fine."""
    created = cloudwatch.Alarm(
        scope, construct_id,
        alarm_name=alarm_name,
        alarm_description=description,
        metric=metric,
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    created.add_alarm_action(cw_actions.SnsAction(topic))
    return created
