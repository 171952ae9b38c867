"""Property: whatever JSON-ish event arrives, the hook handler answers, and says yes only to a
fully valid request carrying the one real token, for one certificate only (a retry by that
certificate may be allowed again; in moto its certificate does not exist, so it is denied)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from identity.provisioning_hook import handler
from identity.provisioning_hook.hook import CERTIFICATE_ID
from identity.tokens import DEFAULT_SERIAL_PATTERN, validate_serial
from tests.identity.test_provisioning_hook import CERT, SERIAL, hook_event, issue

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)


def events(real_token: str):
    serials = st.just(SERIAL) | st.from_regex(DEFAULT_SERIAL_PATTERN, fullmatch=True) | json_values
    tokens = st.just(real_token) | st.text(max_size=300) | json_values
    parameters = st.fixed_dictionaries(
        {}, optional={"SerialNumber": serials, "ProvisioningToken": tokens, "Other": json_values},
    ) | json_values
    shaped = st.fixed_dictionaries(
        {},
        optional={
            "certificateId": st.just(CERT) | st.from_regex(r"[0-9a-f]{64}", fullmatch=True) | json_values,
            "clientId": st.just(SERIAL) | st.text(max_size=200) | json_values,
            "parameters": parameters,
            "claimCertificateId": json_values,
            "templateArn": json_values,
        },
    )
    return shaped | json_values


def _valid(event, real_token) -> bool:
    """An independent oracle for 'everything checks out'."""
    if not isinstance(event, dict) or not isinstance(event.get("parameters"), dict):
        return False
    params = event["parameters"]
    client = event.get("clientId")
    return (isinstance(event.get("certificateId"), str) and CERTIFICATE_ID.fullmatch(event["certificateId"])
            and isinstance(client, str) and 0 < len(client) <= 128
            and params.get("SerialNumber") == SERIAL and validate_serial(SERIAL)
            and params.get("ProvisioningToken") == real_token)


def test_arbitrary_events_never_raise_and_only_the_valid_one_is_allowed(aws, context, logs):
    real_token = issue(aws.tokens, issued_at=handler.time.time())
    allowed = []

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(event=events(real_token))
    @example(event=hook_event(token=real_token))  # so the allow path is always exercised
    def check(event):
        response = handler.lambda_handler(event, context)
        if response["allowProvisioning"]:
            assert _valid(event, real_token)
            assert response == {"allowProvisioning": True, "parameterOverrides": {}}
            allowed.append(event)
        else:
            assert response == {"allowProvisioning": False}

    check()
    assert allowed  # the explicit example at least
    assert {event["certificateId"] for event in allowed} == {CERT}  # one certificate per token
    assert real_token not in logs.getvalue()
