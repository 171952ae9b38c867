"""One CloudWatch dashboard for the fleet, and alarms on what needs a human."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.platform.messaging import ALARM_PERIOD, alarm, queue_depth

FIVE_MINUTES = ALARM_PERIOD


def _fleet_metric(namespace: str, name: str, service: str) -> cloudwatch.Metric:
    """A Powertools metric of the stage's functions (namespace Fleetwarden/<stage>, dimension service)."""
    return cloudwatch.Metric(namespace=namespace, metric_name=name,
                             dimensions_map={"service": service}, statistic="Sum", period=FIVE_MINUTES)


def _rule_failures(rule_name: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace="AWS/IoT", metric_name="Failure", dimensions_map={"RuleName": rule_name},
                             statistic="Sum", period=FIVE_MINUTES, label=rule_name)


class FleetDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        functions: list[lambda_.IFunction],
        response: lambda_.IFunction,
        violation_topic: sns.ITopic,
        telemetry_rule_name: str,
        alert_rule_name: str,
        defense_dead_letters: sqs.IQueue,
        alert_dead_letters: sqs.IQueue,
        ops_topic: sns.ITopic,
        metrics_namespace: str,
    ) -> None:
        """`functions`: every function whose errors and throttles are graphed; `response`: the
        auto-response, whose errors alarm."""
        super().__init__(scope, construct_id)
        violations = violation_topic.metric_number_of_messages_published(
            period=FIVE_MINUTES, statistic="Sum", label="violations published")
        contained = _fleet_metric(metrics_namespace, "DevicesContained", "auto-response")
        telemetry_failures, alert_failures = _rule_failures(telemetry_rule_name), _rule_failures(alert_rule_name)

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard",
            dashboard_name=f"{prefix}-fleet",
            default_interval=Duration.hours(6),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Violations and contained devices",
                                   left=[violations, contained], width=12),
            cloudwatch.GraphWidget(title="Telemetry records (valid / rejected)", width=12, left=[
                _fleet_metric(metrics_namespace, "TelemetryRecordsValid", "telemetry-transform"),
                _fleet_metric(metrics_namespace, "TelemetryRecordsRejected", "telemetry-transform")]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Alerts (forwarded / quarantined)", width=12, left=[
                _fleet_metric(metrics_namespace, "AlertsForwarded", "alert-processor"),
                _fleet_metric(metrics_namespace, "AlertsQuarantined", "alert-processor")]),
            cloudwatch.GraphWidget(title="IoT rule action failures", width=12,
                                   left=[telemetry_failures, alert_failures]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Lambda errors", width=12,
                                   left=[f.metric_errors(period=FIVE_MINUTES) for f in functions]),
            cloudwatch.GraphWidget(title="Lambda throttles", width=12,
                                   left=[f.metric_throttles(period=FIVE_MINUTES) for f in functions]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Dead-letter queue depth", width=12,
                                   left=[queue_depth(q) for q in (defense_dead_letters, alert_dead_letters)]),
        )

        # Alarms that need a human: containment failing, defense dead letters, rule failures.
        self.alarms = [
            alarm(self, alarm_id, alarm_name=f"{prefix}-{alarm_id}", description=description,
                  metric=metric, topic=ops_topic)
            for alarm_id, metric, description in (
                ("ResponseErrors", response.metric_errors(period=FIVE_MINUTES),
                 "The auto-response failed; a violating device may not be contained. Check the incident steps."),
                ("DefenseDeadLetters", queue_depth(defense_dead_letters),
                 "Violations or detector batches that failed every retry are waiting in the defense DLQ."),
                ("TelemetryRuleFailures", telemetry_failures, "The telemetry rule could not deliver to Firehose."),
                ("AlertRuleFailures", alert_failures, "The alert rule could not write alert objects."),
            )
        ]
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=12))
