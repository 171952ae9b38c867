"""IoT policy documents for devices, quarantined devices and claim certificates.

Plain functions returning policy documents, so tests can evaluate exactly what is deployed.
`arn_prefix` is `arn:<partition>:iot:<region>:<account>` (CDK tokens in the stack, literal
strings in tests). Topics come from `lambdas/shared/topics.py`, shared with the IoT rules.
`only_through_domain` then confines the device and claim policies to the Fleetwarden endpoint
(IdentityStack applies it, since the stack holds both the endpoint and the policies).
"""

from __future__ import annotations

import copy

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
        topics.defender_metrics_topic(THING),  # read by Device Defender Detect only
        topics.metrics_report_topic(topics.metrics_rule_of(telemetry_rule), THING),  # built-in detector
        f"{topics.jobs_prefix(THING)}/*",
        f"{topics.shadow_prefix(THING)}/*",
        topics.cert_rotation_request_topic(THING),
        topics.cert_rotation_confirm_topic(THING),
    ]
    # What the device hears back: jobs, its config shadow, metric report acks, rotation answers,
    # and the secure-tunneling destination token (published by AWS only; the device never publishes it).
    inbound = [
        f"{topics.jobs_prefix(THING)}/*",
        f"{topics.shadow_prefix(THING)}/*",
        f"{topics.defender_metrics_topic(THING)}/*",
        f"{topics.cert_rotation_response_prefix(THING)}/*",
        topics.tunnels_notify_topic(THING),
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
                    topics.cert_rotation_confirm_topic(THING),
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
                "Action": "iot:Publish",
                "Resource": _arns(arn_prefix, "topic", [f"{p}/*" for p in prefixes]),
            },
            {
                "Sid": "ReceiveFleetProvisioningReplies",
                "Effect": "Allow",
                "Action": "iot:Receive",
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


# The actions a client can take without a connection through our endpoint: Connect (MQTT on
# 8883 or 443 with ALPN) and Publish, which HTTPS (port 8443) authorises with no Connect and no
# client id at all ("HTTPS publish", https://docs.aws.amazon.com/iot/latest/developerguide/http.html).
# Subscribe and Receive exist only inside an MQTT connection, which Connect already confined.
DOMAIN_BOUND_ACTIONS = ("iot:Connect", "iot:Publish")


def only_through_domain(document: dict, domain_name: str) -> dict:
    """The document with every Allow of Connect or Publish conditioned on `iot:DomainName`.

    `iot:DomainName` is "the domain name of the client connected to AWS IoT Core" ("Basic AWS
    IoT Core policy variables", https://docs.aws.amazon.com/iot/latest/developerguide/
    basic-policy-variables.html): the server name the device asked for, by which IoT Core also
    picks the domain configuration (SNI, "Device communication protocols", protocols.html).
    So the account's default iot:Data-ATS endpoint, with its own TLS policy, HTTPS and MQTT over
    WebSockets, refuses these certificates. The docs list the key without saying on which
    actions it is set: on Publish it is unverified, and a publish without it is refused here
    (StringEquals on an absent key is false), the safe way round for HTTPS. A device policy's
    Publish already matches nothing over HTTPS (its resources use thing variables, which exist
    only over MQTT: "Thing policy variables"); the claim policy's does not, so it needs this.
    """
    confined = copy.deepcopy(document)
    for statement in confined["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if statement["Effect"] == "Allow" and set(actions) & set(DOMAIN_BOUND_ACTIONS):
            if not set(actions) <= set(DOMAIN_BOUND_ACTIONS):
                raise ValueError(f"split {statement.get('Sid')}: only Connect and Publish are confined")
            condition = statement.setdefault("Condition", {})
            condition.setdefault("StringEquals", {})["iot:DomainName"] = domain_name
    return confined
