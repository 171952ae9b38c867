"""What every platform construct of a stage applies the same way: one key for logs and function
environments, one log retention, one Powertools layer version. The audit stack makes it (it owns
the key) and every other stack passes it on unchanged."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

_RETENTION_BY_DAYS = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS",
    30: "ONE_MONTH", 60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS",
    150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR", 400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS", 1827: "FIVE_YEARS",
    2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


@dataclass(frozen=True)
class PlatformDefaults:
    key: kms.IKey  # encrypts every log group (and function environment) of the stage
    log_retention_days: int  # already validated against `config.LOG_RETENTION_DAYS`
    powertools_layer_version: int
    # The functions' CloudWatch namespace, one per stage (`Fleetwarden/<stage>`): stages sharing an account
    # must not add up in each other's dashboards, alarms and `fleetctl fleet status`.
    metrics_namespace: str

    def log_group(self, scope: Construct, construct_id: str, *, name: str | None = None) -> logs.LogGroup:
        """An encrypted log group with the stage's retention, kept when its stack is deleted."""
        return logs.LogGroup(
            scope, construct_id,
            log_group_name=name,
            retention=logs.RetentionDays[_RETENTION_BY_DAYS[self.log_retention_days]],
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
