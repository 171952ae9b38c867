"""Containment: the auto-response function on the violation topic, the incident table, and
the audited device-admin function behind `fleetctl device quarantine|reinstate`."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.identity.device_registry import iot_arn_prefix
from stacks.platform.defaults import PlatformDefaults
from stacks.platform.function import PythonFunction, allow_key_use, allow_publish
from stacks.platform.nag import acknowledge_dead_letter_grant, logical_id
from stacks.platform.sdk_call import iot_data_endpoint
from stacks.platform.table import secure_table

THING_WILDCARD_REASON = ("Contained and reinstated devices are named by the violation or the "
                          "operator at run time; the group and the actions are named exactly.")


class AutoResponse(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        revocation: str,
        exempt_group: str | None,
        dry_run: bool,
        deletion_protection: bool,
        violation_topic: sns.ITopic,
        ops_topic: sns.ITopic,
        ops_key: kms.IKey,
        quarantine_group_name: str,
        quarantine_group_arn: str,
        audit_table: dynamodb.ITable,
        audit_key: kms.IKey,
        key: kms.IKey,
        defaults: PlatformDefaults,
        dead_letters: sqs.IQueue,
        protected_policies: tuple[str, ...] = (),
        signing_key_arn: str,
        signing_key_id: str,
        role_name: str,
        job_timeout_minutes: int,
        shutdown_lifetime_seconds: int,
    ) -> None:
        """`revocation`, `exempt_group`, `dry_run`: how far containment goes (see config).
        `protected_policies`: certificates holding one of these IoT policies (the claim policy: one
        certificate on every field device) are reported, never deactivated.
        `signing_key_arn`, `role_name`: the Command stack's signing key, whose key policy lets only the
        role of this name sign (the signed shutdown job)."""
        super().__init__(scope, construct_id)
        arn = iot_arn_prefix()
        things, certs, clients = f"{arn}:thing/*", f"{arn}:cert/*", f"{arn}:client/*"

        self.incidents = secure_table(
            self, "Incidents",
            table_name=f"{prefix}-incidents",
            partition_key="violation_id",
            key=key,
            deletion_protection=deletion_protection,
            backup_reason="Point-in-time recovery keeps 35 days of continuous backups of the "
                          "incident record; longer copies belong to the organisation's AWS Backup policy.",
        )
        self.incidents.add_global_secondary_index(
            index_name="by_thing",
            partition_key=dynamodb.Attribute(name="thing", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="received_at", type=dynamodb.AttributeType.STRING),
        )
        # A certificate violation's incidents (no thing): found again when the certificate repeats.
        self.incidents.add_global_secondary_index(
            index_name="by_certificate",
            partition_key=dynamodb.Attribute(name="certificate_id", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="received_at", type=dynamodb.AttributeType.STRING),
        )
        # The account's data endpoint, for DeleteConnection (read at deploy time).
        endpoint = iot_data_endpoint(self, "DataEndpoint", prefix=prefix, defaults=defaults)

        self.function = PythonFunction(
            self, "Respond",
            handler="defense.auto_response.handler.lambda_handler",
            description="Contains a violating device: quarantine group, certificates, incident, ops",
            service="auto-response",
            environment={
                "INCIDENTS_TABLE": self.incidents.table_name,
                "QUARANTINE_GROUP": quarantine_group_name,
                "REVOCATION": revocation,
                "EXEMPT_GROUP": exempt_group or "",
                "DRY_RUN": "true" if dry_run else "false",
                "OPS_TOPIC_ARN": ops_topic.topic_arn,
                "IOT_DATA_ENDPOINT": endpoint,
                "PROTECTED_POLICIES": ",".join(protected_policies),
                "SIGNING_KEY_ARN": signing_key_arn,
                "SIGNING_KEY_ID": signing_key_id,
                "THING_ARN_PREFIX": f"{arn}:thing/",
                "JOB_TIMEOUT_MINUTES": str(job_timeout_minutes),
                "SHUTDOWN_LIFETIME_SECONDS": str(shutdown_lifetime_seconds),
            },
            reserved_concurrency=10,
            timeout=Duration.seconds(30),
            defaults=defaults,
            role_name=role_name,
        ).function
        # SNS invokes asynchronously: two retries resume the incident's unfinished steps, then
        # the event is kept in the dead-letter queue.
        self.function.configure_async_invoke(
            retry_attempts=2, max_event_age=Duration.hours(6),
            on_failure=destinations.SqsDestination(dead_letters))
        violation_topic.add_subscription(subscriptions.LambdaSubscription(self.function))
        Validations.of(self.function).acknowledge(*[Acknowledgment(
            id=rule,
            reason="Failed asynchronous invocations go to an on-failure destination (the defense "
                   "dead-letter queue), which keeps the event with its error; a DeadLetterConfig "
                   "would duplicate it.") for rule in ("HIPAA.Security-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ")])
        fn = self.function
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ReadTheDevice",
            actions=["iot:ListThingGroupsForThing", "iot:ListThingPrincipals"],
            resources=[things]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="ReadTheCertificate", actions=["iot:DescribeCertificate"], resources=[certs]))
        if protected_policies:
            # Which resource type IAM checks for ListAttachedPolicies is not on a page reachable
            # offline (unverified): "*" keeps the lookup working; it only lists policy names.
            fn.add_to_role_policy(iam.PolicyStatement(
                sid="FindProtectedCertificates", actions=["iot:ListAttachedPolicies"], resources=["*"]))
            Validations.of(fn.role).acknowledge(Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="iot:ListAttachedPolicies (read-only, policy names) on a certificate that raised a "
                       "violation, to recognise the shared claim certificate, which is never deactivated."))
        # "iot:DeleteConnection | client | arn:aws:iot:us-east-1:123456789012:client/myClientId"
        # (https://docs.aws.amazon.com/iot/latest/developerguide/action-resources.html).
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="EndTheSession", actions=["iot:DeleteConnection"], resources=[clients]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="Quarantine", actions=["iot:AddThingToThingGroup"], resources=[things, quarantine_group_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="RevokeCertificates", actions=["iot:UpdateCertificate"], resources=[certs]))
        # The signed shutdown command: a job on the contained thing.
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="SignShutdown", actions=["kms:Sign"], resources=[signing_key_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="QueueShutdown", actions=["iot:CreateJob"], resources=[f"{arn}:job/*", things]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="RecordIncidents", actions=["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"],
            resources=[self.incidents.table_arn]))
        fn.add_to_role_policy(iam.PolicyStatement(
            sid="FindOpenIncidents", actions=["dynamodb:Query"],
            resources=[f"{self.incidents.table_arn}/index/by_thing",
                       f"{self.incidents.table_arn}/index/by_certificate"]))
        allow_publish(fn, ops_topic, ops_key)
        allow_key_use(fn, key)
        self._acknowledge_wildcards(fn.role)
        acknowledge_dead_letter_grant(fn.role)

        self.device_admin = PythonFunction(
            self, "DeviceAdmin",
            handler="defense.device_admin.handler.lambda_handler",
            description="Operator quarantine and reinstatement of one device (audited)",
            service="device-admin",
            environment={
                "QUARANTINE_GROUP": quarantine_group_name,
                "AUDIT_TABLE": audit_table.table_name,
                "INCIDENTS_TABLE": self.incidents.table_name,
            },
            reserved_concurrency=2,
            synchronous_reason="Operators invoke it synchronously from fleetctl and see its error; "
                               "there is no asynchronous event to dead-letter.",
            defaults=defaults,
        ).function
        admin = self.device_admin
        admin.add_to_role_policy(iam.PolicyStatement(
            sid="ReadTheDevice", actions=["iot:ListThingPrincipals"], resources=[things]))
        admin.add_to_role_policy(iam.PolicyStatement(
            sid="QuarantineMembership",
            actions=["iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup"],
            resources=[things, quarantine_group_arn]))
        admin.add_to_role_policy(iam.PolicyStatement(
            sid="ReactivateCertificates", actions=["iot:DescribeCertificate", "iot:UpdateCertificate"],
            resources=[certs]))
        admin.add_to_role_policy(iam.PolicyStatement(
            sid="AuditAndIncidents", actions=["dynamodb:PutItem"], resources=[audit_table.table_arn]))
        admin.add_to_role_policy(iam.PolicyStatement(
            sid="MarkIncidentsReinstated", actions=["dynamodb:Query", "dynamodb:UpdateItem"],
            resources=[self.incidents.table_arn, f"{self.incidents.table_arn}/index/by_thing"]))
        allow_key_use(admin, audit_key)
        allow_key_use(admin, key)
        self._acknowledge_wildcards(admin.role)

        self.functions = [self.function, self.device_admin]

    def _acknowledge_wildcards(self, role: iam.IRole) -> None:
        incidents = logical_id(self.incidents)
        Validations.of(role).acknowledge(
            *[Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:{kind}/*]",
                reason=THING_WILDCARD_REASON) for kind in ("thing", "cert", "client", "job")],
            *[Acknowledgment(id=f"AwsSolutions-IAM5[Resource::<{incidents}.Arn>/index/{index}]",
                             reason=f"One named index ({index}) of the incident table; the rule reads the path as a wildcard.")
              for index in ("by_thing", "by_certificate")],
        )
