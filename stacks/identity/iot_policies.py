"""IoT policy documents for devices, quarantined devices and claim certificates.

Plain functions returning policy documents, so tests can evaluate exactly what is deployed.
`arn_prefix` is `arn:<partition>:iot:<region>:<account>` (CDK tokens in the stack, literal
strings in tests). Topics come from `lambdas/shared/topics.py`, shared with the IoT rules.
"""

from __future__ import annotations

from lambdas.shared import topics
from lambdas.identity.tokens import CLAIM_CLIENT_PREFIX

THING = topics.THING_VARIABLE
IOT_VERSION = "2012-10-17"


def _arns(arn_prefix: str, kind: str, names: list[str]) -> list[str]:
    return [f"{arn_prefix}:{kind}/{name}" for name in names]


def device_policy_document(arn_prefix: str, telemetry_rule: str) -> dict:
    """A device may connect only as itself and touch only its own topics."""
    publish = [
        topics.telemetry_topic(telemetry_rule, THING),
        topics.alerts_topic(THING),
        topics.defender_metrics_topic(THING),
        f"{topics.jobs_prefix(THING)}/*",
        f"{topics.shadow_prefix(THING)}/*",
        topics.cert_rotation_request_topic(THING),
    ]
    # What the device hears back: jobs, its config shadow, metric report acks, rotation answers.
    inbound = [
        f"{topics.jobs_prefix(THING)}/*",
        f"{topics.shadow_prefix(THING)}/*",
        f"{topics.defender_metrics_topic(THING)}/*",
        f"{topics.cert_rotation_response_prefix(THING)}/*",
    ]
    return {
        "Version": IOT_VERSION,
        "Statement": [
            {
                "Sid": "ConnectAsItselfWithAttachedCertificate",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn_prefix}:client/{THING}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "PublishOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": _arns(arn_prefix, "topic", publish),
            },
            {
                "Sid": "SubscribeOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": _arns(arn_prefix, "topicfilter", inbound),
            },
            {
                "Sid": "ReceiveOwnTopics",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": _arns(arn_prefix, "topic", inbound),
            },
        ],
    }


def quarantine_policy_document(arn_prefix: str, telemetry_rule: str) -> dict:
    """Explicit deny, attached to the quarantine thing group: wins over any allow at once.

    It stops data, alerts, config changes and certificate rotation; jobs stay open so a
    shutdown command still reaches the device, and Defender metrics keep flowing for forensics.
    Deny resources name exact topics: MQTT wildcards in a Deny match only themselves.
    """
    return {
        "Version": IOT_VERSION,
        "Statement": [
            {
                "Sid": "QuarantineStopsDeviceData",
                "Effect": "Deny",
                "Action": "iot:Publish",
                "Resource": _arns(arn_prefix, "topic", [
                    topics.telemetry_topic(telemetry_rule, THING),
                    topics.alerts_topic(THING),
                    f"{topics.shadow_prefix(THING)}/update",
                    f"{topics.shadow_prefix(THING)}/delete",
                    topics.cert_rotation_request_topic(THING),
                ]),
            },
        ],
    }


def claim_policy_document(arn_prefix: str, template_name: str) -> dict:
    """A claim certificate may only run fleet provisioning, under a `claim-` client id."""
    prefixes = topics.provisioning_prefixes(template_name)
    return {
        "Version": IOT_VERSION,
        "Statement": [
            {
                "Sid": "ConnectAsProvisioningClient",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn_prefix}:client/{CLAIM_CLIENT_PREFIX}*",
            },
            {
                "Sid": "UseFleetProvisioningApi",
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": _arns(arn_prefix, "topic", [f"{p}/*" for p in prefixes]),
            },
            {
                "Sid": "SubscribeFleetProvisioningReplies",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": _arns(arn_prefix, "topicfilter", [f"{p}/*" for p in prefixes]),
            },
        ],
    }
