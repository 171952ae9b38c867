"""Nobody can get another device contained: refused Connects under device B's client id, from device
A's certificate and from the fleet's claim certificate, reach both detection sources exactly as
AWS delivers them, and what arrives on the violation topic drives the real auto-response.

* Lifecycle source: the "Connect attempt failure event" on $aws/events/presence/connect_failed/
  <clientId> (https://docs.aws.amazon.com/iot/latest/developerguide/life-cycle-events.html
  #connect-authfailure-event), through the presence rule's fields into the detector's handler.
* Log source: IoT Core's Connect log line with status Failure and reason AUTHORIZATION_FAILURE
  (https://docs.aws.amazon.com/iot/latest/developerguide/cwl-format.html#log-mb-connect), in a
  CloudWatch Logs subscription delivery, into the authorization-failure detector's handler.

Either way: B is untouched (no violation names it, it is in no group, its certificate is ACTIVE),
each offending certificate gets a certificate violation carrying the client id it claimed, and
containing it deactivates that certificate and touches no thing (A's thing is not quarantined).
The claim certificate (it holds the claim policy and ships on every field device) is reported to ops
and stays ACTIVE with the stage default `protect_claim_certificate: true`, and is deactivated like A's
without it.
"""

from __future__ import annotations

import json

import boto3
import pytest
from defense.auth_failures import handler as auth_handler
from defense.auto_response import handler as ar_handler
from defense.detector import handler as detector_handler
from moto import mock_aws

from tests.defense.test_auth_failures import T0, delivery, refused_connects
from tests.defense.test_auto_response import (
    QUARANTINE_GROUP,
    LambdaContext,
    certificate_pems,
    create_incidents_table,
    make_thing,
    set_env,
    sns_event,
)
from tests.defense.test_detector import WINDOW, presence
from tests.defense.test_detector_handler import tumbling_event
from tests.helpers import drain_published, topic_with_inbox

REGION = "eu-west-1"
COUNTERS_TABLE = "fleetwarden-test-detector-counters"
ATTACKS = 50
CLAIM_POLICY = "fleetwarden-test-claim"


def _clear_caches() -> None:
    ar_handler._dependencies.cache_clear()
    auth_handler._dependencies.cache_clear()
    for cached in (detector_handler._settings, detector_handler._sns, detector_handler._attachments):
        cached.cache_clear()


@pytest.fixture
def fleet(monkeypatch):
    _clear_caches()
    with mock_aws():
        iot, sns, sqs, dynamodb = (boto3.client(name, region_name=REGION)
                                   for name in ("iot", "sns", "sqs", "dynamodb"))
        incidents = create_incidents_table(boto3.resource("dynamodb", region_name=REGION))
        dynamodb.create_table(TableName=COUNTERS_TABLE,
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
        certificates = {thing: make_thing(iot, thing)[0] for thing in ("SN-A", "SN-B")}
        claim = iot.register_certificate_without_ca(certificatePem=certificate_pems()[-1], status="ACTIVE")
        iot.create_policy(policyName=CLAIM_POLICY, policyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
        iot.attach_policy(policyName=CLAIM_POLICY, target=claim["certificateArn"])
        certificates["claim"] = claim["certificateId"]
        violations, inbox = topic_with_inbox(sns, sqs, "fleetwarden-test-violations")
        ops = sns.create_topic(Name="fleetwarden-test-ops")["TopicArn"]
        set_env(monkeypatch, OPS_TOPIC_ARN=ops, EXEMPT_GROUP=None, PROTECTED_POLICIES=CLAIM_POLICY)
        for key, value in {"VIOLATION_TOPIC_ARN": violations, "PROFILE_NAME": "fleetwarden-test-builtin",
                           "WINDOW_SECONDS": "300", "MAX_MESSAGES": "100", "MAX_BYTES": "10000000",
                           "MAX_CONNECTS": "10", "MAX_DISCONNECTS": "10", "MAX_ESTABLISHED_TCP": "10",
                           "MAX_AUTH_FAILURES": "10", "COUNTERS_TABLE": COUNTERS_TABLE}.items():
            monkeypatch.setenv(key, value)
        yield type("Fleet", (), {"iot": iot, "incidents": incidents, "certificates": certificates,
                                 "monkeypatch": monkeypatch,
                                 "delivered": staticmethod(lambda: drain_published(sqs, inbox))})
    _clear_caches()


def status(fleet, who: str) -> str:
    described = fleet.iot.describe_certificate(certificateId=fleet.certificates[who])
    return described["certificateDescription"]["status"]


def groups(fleet, thing: str) -> list[str]:
    return [g["groupName"] for g in fleet.iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]]


def respond_and_check(fleet, messages: list[dict], *, claim_protected: bool = True) -> None:
    """The violations name the two offending certificates only; containing them deactivates A's
    certificate (and the claim certificate only when it is not protected) and quarantines nothing."""
    offenders = {fleet.certificates["SN-A"], fleet.certificates["claim"]}
    assert messages and {m.get("certificateId") for m in messages} == offenders
    assert all("thingName" not in m and m["clientId"] == "SN-B" for m in messages)
    outcomes = {}
    for message in messages:
        outcome = ar_handler.lambda_handler(sns_event(json.dumps(message)), LambdaContext())["outcomes"][0]
        outcomes.setdefault(message["certificateId"], outcome["status"])  # later ones: repeats
    assert outcomes[fleet.certificates["SN-A"]] == "contained" and status(fleet, "SN-A") == "INACTIVE"
    if claim_protected:
        assert outcomes[fleet.certificates["claim"]] == "protected" and status(fleet, "claim") == "ACTIVE"
    else:
        assert outcomes[fleet.certificates["claim"]] == "contained" and status(fleet, "claim") == "INACTIVE"
    assert status(fleet, "SN-B") == "ACTIVE" and groups(fleet, "SN-B") == []
    assert groups(fleet, "SN-A") == []  # a certificate's containment touches no thing


@pytest.mark.parametrize("claim_protected", [True, False], ids=["default", "claim-unprotected"])
def test_refused_connects_seen_as_lifecycle_events_leave_b_untouched(fleet, claim_protected):
    if not claim_protected:
        set_env(fleet.monkeypatch, PROTECTED_POLICIES=None)
    attempts = [presence("SN-B", "connect_failed", principal=fleet.certificates[who])
                for who in ("SN-A", "claim") for _ in range(ATTACKS)]
    state = {}
    for first in range(0, len(attempts), 25):  # as Lambda delivers them: several batches of the window
        state = detector_handler.lambda_handler(
            tumbling_event(attempts[first:first + 25], state, window=WINDOW), LambdaContext())["state"]
    respond_and_check(fleet, fleet.delivered(), claim_protected=claim_protected)


def test_refused_connects_seen_in_iot_logs_leave_b_untouched(fleet):
    events = (refused_connects(ATTACKS, "SN-B", fleet.certificates["SN-A"])
              + refused_connects(ATTACKS, "SN-B", fleet.certificates["claim"], at=T0 + 5000))
    auth_handler.lambda_handler(delivery(events), LambdaContext())
    messages = fleet.delivered()
    assert all(m["metricValue"] == {"count": ATTACKS} for m in messages)
    respond_and_check(fleet, messages)
