"""Whom a refused connection belongs to (defense.attribution): certificate ids as IoT writes them,
the registry's proof of attachment (moto IoT, calls counted), and the rewrite of a certificate
violation into its thing's."""

from __future__ import annotations

import boto3
import pytest
from defense.attribution import CLAIM_CLIENT_PREFIX, Attachments, certificate_id, resolve
from identity.tokens import CLAIM_CLIENT_PREFIX as CLAIM_POLICY_PREFIX
from moto import mock_aws
from shared.violations import derive_violation_id, make_violation

from tests.helpers import Calls

REGION = "eu-west-1"
# The Connect log entry's principalId (cwl-format.html#log-mb-connect): a certificate id.
LOGGED = "145179c40e2219e18a909d896a5340b74cf97a39641beec2fc3eeafc5a932167"


def test_the_claim_prefix_is_the_claim_policys():
    assert CLAIM_CLIENT_PREFIX == CLAIM_POLICY_PREFIX


@pytest.mark.parametrize(("principal", "expected"), [
    (LOGGED, LOGGED), (LOGGED.upper(), LOGGED),
    ("12345678901234567890123456789012", None),  # the lifecycle page's placeholder: not a certificate id
    ("AIDACKCEVSQ6C2EXAMPLE:session", None), (LOGGED + "0", None), ("", None), (None, None), (7, None),
])
def test_certificate_ids(principal, expected):
    assert certificate_id(principal) == expected


@pytest.fixture
def registry():
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        iot.create_thing(thingName="SN-B")
        cert = iot.create_keys_and_certificate(setAsActive=True)
        iot.attach_thing_principal(thingName="SN-B", principal=cert["certificateArn"])
        lookups = boto3.client("iot", region_name=REGION)
        clock = [0.0]
        attachments = Attachments(lambda: lookups, ttl_seconds=300, clock=lambda: clock[0])
        yield type("Registry", (), {"iot": iot, "cert": cert["certificateId"], "calls": Calls(lookups),
                                    "attachments": attachments, "clock": clock})


def test_attachment_is_asked_once_per_window(registry):
    assert registry.attachments.attached(registry.cert, "SN-B")
    assert registry.attachments.attached(registry.cert, "SN-B")
    assert registry.calls.calls == ["list_thing_principals"]
    registry.clock[0] = 301.0  # the next window asks again
    assert registry.attachments.attached(registry.cert, "SN-B")
    assert registry.calls.calls == ["list_thing_principals"] * 2


def test_no_attachment_for_another_certificate_a_missing_thing_or_a_name_no_thing_has(registry):
    assert not registry.attachments.attached(LOGGED, "SN-B")
    assert not registry.attachments.attached(registry.cert, "SN-GONE")  # ResourceNotFound: nothing attached
    assert not registry.attachments.attached(registry.cert, "not/a thing")  # never asked
    assert registry.calls.calls == ["list_thing_principals"] * 2


def violation(**subject) -> dict:
    return make_violation(profile="fleetwarden-test-builtin", behavior_name="AuthorizationFailures",
                          metric="aws:num-authorization-failures",
                          criteria={"comparisonOperator": "greater-than", "value": {"count": 10}},
                          metric_value={"count": 11}, event_time_ms=1_709_622_345_678, window=1_709_622_300,
                          **subject)


def test_resolve_names_the_thing_only_for_its_own_certificate(registry):
    own = resolve(violation(certificate_id=registry.cert, client_id="SN-B"), registry.attachments,
                  window=1_709_622_300)
    assert own == violation(thing="SN-B")
    assert own["violationId"] == derive_violation_id(
        thing="SN-B", profile="fleetwarden-test-builtin", behavior_name="AuthorizationFailures",
        window=1_709_622_300)
    other = violation(certificate_id=LOGGED, client_id="SN-B")
    assert resolve(other, registry.attachments, window=1_709_622_300) is other
    # A thing's violation, and a certificate's that claimed nothing: no question asked.
    for unchanged in (violation(thing="SN-B"), violation(certificate_id=registry.cert)):
        assert resolve(unchanged, registry.attachments, window=1_709_622_300) is unchanged
    assert registry.calls.calls == ["list_thing_principals"] * 2
