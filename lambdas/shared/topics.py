"""Every MQTT topic a device uses, in one place.

The device policy (IdentityStack) and the rules that consume these topics (IngestStack,
DefenseStack) are both written from these functions, so a rename cannot split them.
`thing` may be a concrete thing name or an IoT policy variable such as
`${iot:Connection.Thing.ThingName}`.
"""

from __future__ import annotations

import re

THING_VARIABLE = "${iot:Connection.Thing.ThingName}"

# A thing (and thing group) name as IoT allows it: CreateThing thingName "Length Constraints: Minimum length of
# 1. Maximum length of 128. Pattern: [a-zA-Z0-9:_-]+"
# (https://docs.aws.amazon.com/iot/latest/apireference/API_CreateThing.html). Use it with fullmatch: a `$`
# anchor with match() would let a trailing newline through.
THING_NAME_PATTERN = r"[A-Za-z0-9:_-]{1,128}"
THING_NAME = re.compile(THING_NAME_PATTERN)

# IoT rule names allow only letters, digits and underscores.
_RULE_NAME = re.compile(r"^[A-Za-z0-9_]{1,128}$")


def rule_name(stage: str, purpose: str) -> str:
    """`fleetwarden_<stage>_<purpose>`: unique per stage in an account, and a valid rule name. A
    device needs it too: the Basic Ingest topic names the rule."""
    name = f"fleetwarden_{stage}_{purpose}"
    if not _RULE_NAME.match(name):
        raise ValueError(f"not a valid IoT rule name: {name}")
    return name


def telemetry_topic(rule_name: str, thing: str) -> str:
    """Basic Ingest: the device publishes straight to the rule (no messaging charge)."""
    return f"$aws/rules/{rule_name}/dt/{thing}/telemetry"


def telemetry_rule_topic(thing: str = "+") -> str:
    """What the telemetry rule's SQL selects from (the Basic Ingest prefix is stripped)."""
    return f"dt/{thing}/telemetry"


def alerts_topic(thing: str) -> str:
    return f"dt/{thing}/alerts"


def rule_stage(name: str, purpose: str) -> str:
    """The stage of a rule named by `rule_name(stage, purpose)` (ValueError for any other name)."""
    head, tail = "fleetwarden_", f"_{purpose}"
    if not (_RULE_NAME.match(name) and name.startswith(head) and name.endswith(tail)
            and len(name) > len(head) + len(tail)):
        raise ValueError(f"not a {purpose} rule name: {name}")
    return name[len(head):-len(tail)]


# The built-in detector's rule that receives device metric reports (stacks/defense/builtin_detector.py).
METRICS_RULE_PURPOSE = "device_metrics"


def metrics_rule_name(stage: str) -> str:
    return rule_name(stage, METRICS_RULE_PURPOSE)


def metrics_rule_of(telemetry_rule: str) -> str:
    """The metrics rule of the stage whose telemetry rule is `telemetry_rule` (the device policy
    is written from the telemetry rule's name)."""
    return metrics_rule_name(rule_stage(telemetry_rule, "telemetry"))


def metrics_report_topic(metrics_rule: str, thing: str) -> str:
    """Where a device publishes its metric report (Device Defender's report format) so that the
    built-in detector receives it: Basic Ingest straight to the detector's metrics rule. Defender's
    own `$aws/things/<thing>/defender/metrics/json` is publish-only ("AWS IoT Device Defender
    topics only support MQTT publish", https://docs.aws.amazon.com/iot/latest/developerguide/
    reserved-topics.html): no rule can subscribe to it, so only Defender Detect sees those."""
    return f"$aws/rules/{metrics_rule}/{metrics_report_rule_topic(thing)}"


def metrics_report_rule_topic(thing: str = "+") -> str:
    """What the metrics rule's SQL sees: "The initial prefix of a Basic Ingest topic
    ($aws/rules/rule_name) isn't available to the topic(Decimal) function" (iot-basic-ingest.html),
    so topic(2) is the thing."""
    return f"dt/{thing}/metrics"


def defender_metrics_topic(thing: str) -> str:
    """Device Defender Detect's report topic (publish-only: only Defender reads it)."""
    return f"$aws/things/{thing}/defender/metrics/json"


def defender_metrics_reply_topics(thing: str) -> tuple[str, str]:
    base = defender_metrics_topic(thing)
    return f"{base}/accepted", f"{base}/rejected"


def jobs_prefix(thing: str) -> str:
    return f"$aws/things/{thing}/jobs"


def shadow_prefix(thing: str, shadow: str = "config") -> str:
    return f"$aws/things/{thing}/shadow/name/{shadow}"


def cert_rotation_prefix(thing: str) -> str:
    return f"cmd/{thing}/certs"


def cert_rotation_request_topic(thing: str) -> str:
    """The device publishes its CSR here."""
    return f"{cert_rotation_prefix(thing)}/request"


def cert_rotation_response_prefix(thing: str) -> str:
    """The backend answers under here (accepted / rejected / confirmed)."""
    return f"{cert_rotation_prefix(thing)}/response"


ROTATION_REQUEST, ROTATION_CONFIRM = "request", "confirm"  # what the device publishes
ROTATION_ACCEPTED, ROTATION_REJECTED, ROTATION_CONFIRMED = "accepted", "rejected", "confirmed"  # answers


def cert_rotation_confirm_topic(thing: str) -> str:
    """The device publishes here, connected with its NEW certificate, to retire the old one."""
    return f"{cert_rotation_prefix(thing)}/{ROTATION_CONFIRM}"


def cert_rotation_response_topic(thing: str, outcome: str) -> str:
    """`cmd/<thing>/certs/response/<accepted|rejected|confirmed>`."""
    if outcome not in (ROTATION_ACCEPTED, ROTATION_REJECTED, ROTATION_CONFIRMED):
        raise ValueError(f"not a rotation answer: {outcome}")
    return f"{cert_rotation_response_prefix(thing)}/{outcome}"


def cert_rotation_rule_topic() -> str:
    """What the rotation rule selects from: `request` and `confirm` (one level: the backend's own
    answers, two levels below `certs/`, never match it)."""
    return cert_rotation_prefix("+") + "/+"


def tunnels_notify_topic(thing: str) -> str:
    """AWS IoT secure tunneling publishes the destination access token here when a tunnel is opened
    for the thing, payload `{"clientAccessToken", "clientMode": "destination", "region", "services"}`
    ("Configuring a remote device and using IoT agent", https://docs.aws.amazon.com/iot/latest/
    developerguide/configure-remote-device.html). The device only subscribes and receives here."""
    return f"$aws/things/{thing}/tunnels/notify"


def provisioning_prefixes(template_name: str) -> tuple[str, ...]:
    """MQTT API topics of fleet provisioning that a claim certificate may use."""
    return (
        "$aws/certificates/create",
        "$aws/certificates/create-from-csr",
        f"$aws/provisioning-templates/{template_name}/provision",
    )


def presence_topic(event: str = "+", thing: str = "+") -> str:
    """Lifecycle events published by IoT Core: connected / disconnected per client id."""
    return f"$aws/events/presence/{event}/{thing}"
