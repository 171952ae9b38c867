"""One CloudWatch dashboard for the fleet, and alarms on what needs a human."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.config import StageConfig

FIVE_MINUTES = Duration.minutes(5)


def _fleet_metric(name: str, service: str) -> cloudwatch.Metric:
    """A Powertools metric (namespace Fleetwarden, dimension service)."""
    return cloudwatch.Metric(namespace="Fleetwarden", metric_name=name,
                             dimensions_map={"service": service}, statistic="Sum", period=FIVE_MINUTES)


class FleetDashboard(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, defense, ingest,
                 identity, ops_topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        notify = cw_actions.SnsAction(ops_topic)
        functions: list[lambda_.IFunction] = [
            defense.response.function, defense.response.device_admin,
            ingest.telemetry.transform, ingest.alerts.processor, ingest.alerts_api.function,
            identity.provisioning.hook, identity.token_api.function,
        ]
        if defense.detector:
            functions.append(defense.detector.detector)
            if defense.detector.auth_failures:
                functions.append(defense.detector.auth_failures)

        violations = defense.violation_topic.metric_number_of_messages_published(
            period=FIVE_MINUTES, statistic="Sum", label="violations published")
        contained = _fleet_metric("DevicesContained", "auto-response")
        rule_errors = [cloudwatch.Metric(namespace="AWS/IoT", metric_name="Failure",
                                         dimensions_map={"RuleName": rule.topic_rule_name},
                                         statistic="Sum", period=FIVE_MINUTES, label=rule.topic_rule_name)
                       for rule in (ingest.telemetry.rule, ingest.alerts.rule)]
        dlqs = [defense.dead_letters, ingest.alerts.dead_letters]

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard",
            dashboard_name=f"{stage.prefix}-fleet",
            default_interval=Duration.hours(6),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Violations and contained devices",
                                   left=[violations, contained], width=12),
            cloudwatch.GraphWidget(title="Telemetry records (valid / rejected)", width=12, left=[
                _fleet_metric("TelemetryRecordsValid", "telemetry-transform"),
                _fleet_metric("TelemetryRecordsRejected", "telemetry-transform")]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Alerts (forwarded / quarantined)", width=12, left=[
                _fleet_metric("AlertsForwarded", "alert-processor"),
                _fleet_metric("AlertsQuarantined", "alert-processor")]),
            cloudwatch.GraphWidget(title="IoT rule action failures", width=12, left=rule_errors),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Lambda errors", width=12,
                                   left=[f.metric_errors(period=FIVE_MINUTES) for f in functions]),
            cloudwatch.GraphWidget(title="Lambda throttles", width=12,
                                   left=[f.metric_throttles(period=FIVE_MINUTES) for f in functions]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Dead-letter queue depth", width=12, left=[
                q.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES, statistic="Maximum")
                for q in dlqs]),
        )

        # Alarms that need a human: containment failing, defense dead letters, rule failures.
        self.alarms = []
        for alarm_id, metric, description in (
            ("ResponseErrors", defense.response.function.metric_errors(period=FIVE_MINUTES),
             "The auto-response failed; a violating device may not be contained. Check the incident steps."),
            ("DefenseDeadLetters", defense.dead_letters.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"),
             "Violations or detector batches that failed every retry are waiting in the defense DLQ."),
            ("TelemetryRuleFailures", rule_errors[0], "The telemetry rule could not deliver to Firehose."),
            ("AlertRuleFailures", rule_errors[1], "The alert rule could not write alert objects."),
        ):
            alarm = cloudwatch.Alarm(
                self, alarm_id,
                alarm_name=f"{stage.prefix}-{alarm_id}",
                alarm_description=description,
                metric=metric, threshold=1, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(notify)
            self.alarms.append(alarm)
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=12))
