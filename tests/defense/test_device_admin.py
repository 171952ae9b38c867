"""Device admin (operator quarantine / reinstate): moto for the IoT registry, the audit table and the
incidents table; every test goes through handler.lambda_handler with the event `fleetctl` sends."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from defense.device_admin import handler as admin_handler
from defense.device_admin.admin import MAX_REASON
from defense.device_admin.admin import THING as THING_RULE
from moto import mock_aws
from shared.violations import THING_NAME_PATTERN

from tests.helpers import AUDIT_TABLE, NOW, Calls, create_tables, captured_logs
from tests.defense.test_auto_response import (
    INCIDENTS_TABLE,
    QUARANTINE_GROUP,
    LambdaContext,
    client_error,
    create_incidents_table,
    make_thing,
    metric_names,
    use_shared_session,
)

THING = "dev-IZWB"
ACTOR = "arn:aws:sts::123456789012:assumed-role/FleetOperator/alice@example.com"


class Ticker:
    """A clock that moves 1 ms per reading, so audit records sort in the order they were written."""

    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


@pytest.fixture
def env(monkeypatch):
    for key, value in {"QUARANTINE_GROUP": QUARANTINE_GROUP, "AUDIT_TABLE": AUDIT_TABLE,
                       "INCIDENTS_TABLE": INCIDENTS_TABLE, "POWERTOOLS_SERVICE_NAME": "device-admin"}.items():
        monkeypatch.setenv(key, value)
    admin_handler._dependencies.cache_clear()
    with mock_aws():
        use_shared_session()
        dynamodb = boto3.resource("dynamodb")
        _, audit = create_tables(dynamodb)
        incidents = create_incidents_table(dynamodb)
        iot = boto3.client("iot")
        iot.create_thing_group(thingGroupName=QUARANTINE_GROUP)
        admin_handler._dependencies().now = Ticker()  # audit records in a known order
        yield SimpleNamespace(iot=iot, audit=audit, incidents=incidents, monkeypatch=monkeypatch)
    admin_handler._dependencies.cache_clear()


@pytest.fixture
def logs():
    with captured_logs(admin_handler.logger) as buffer:
        yield buffer


def invoke(**event: Any) -> dict[str, Any]:
    return admin_handler.lambda_handler(event, LambdaContext(function_name="fleetwarden-test-device-admin"))


def request(action: str, thing: str = THING, **extra: Any) -> dict[str, Any]:
    return {"action": action, "thing": thing, "actor": ACTOR, "reason": "ticket OPS-1234", **extra}


def audit_records(env) -> list[dict[str, Any]]:
    return sorted(env.audit.scan(ConsistentRead=True)["Items"], key=lambda item: item["at"])


def in_group(env, thing: str = THING) -> bool:
    return any(g["groupName"] == QUARANTINE_GROUP
               for g in env.iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"])


def status(env, certificate_id: str) -> str:
    return env.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]


def contained_device(env, mode_statuses=("INACTIVE", "REVOKED")) -> list[str]:
    """A device auto-response contained: in the quarantine group, certificates in the given states."""
    certs = make_thing(env.iot, certificates=len(mode_statuses))
    for cert, cert_status in zip(certs, mode_statuses):
        env.iot.update_certificate(certificateId=cert, newStatus=cert_status)
    env.iot.add_thing_to_thing_group(thingGroupName=QUARANTINE_GROUP, thingName=THING)
    return certs


def test_reinstate_reactivates_inactive_leaves_revoked_and_releases_the_device(env, capsys):
    inactive, revoked, active = contained_device(env, ("INACTIVE", "REVOKED", "ACTIVE"))
    for violation_id, received_at, incident_status in (("v1", "2026-11-20T10:00:00.000Z", "contained"),
                                                       ("v0", "2026-11-19T10:00:00.000Z", "dry-run")):
        env.incidents.put_item(Item={"violation_id": violation_id, "thing": THING, "received_at": received_at,
                                     "status": incident_status, "steps": {}})

    result = invoke(**request("reinstate"))

    assert result["ok"] is True
    assert result["reactivated"] == [inactive]
    assert result["revoked_left_alone"] == [revoked]
    assert result["already_active"] == [active]
    assert result["removed_from_group"] is True and "new certificate" in result["warning"]
    assert result["incidents_updated"] == 1
    assert status(env, inactive) == "ACTIVE" and status(env, revoked) == "REVOKED"
    assert not in_group(env)

    requested, completed = audit_records(env)
    assert result["audit_event_ids"] == [requested["event_id"], completed["event_id"]]
    for record in (requested, completed):
        assert record["action"] == "device.reinstate"
        assert record["actor"] == ACTOR and record["target"] == THING
        assert record["details"]["reason"] == "ticket OPS-1234"
    assert requested["details"]["status"] == "requested"
    assert completed["details"]["status"] == "completed"
    assert completed["details"]["reactivated"] == inactive
    assert completed["details"]["revoked_left_alone"] == revoked
    assert completed["details"]["removed_from_group"] == "true"

    marked = env.incidents.get_item(Key={"violation_id": "v1"})["Item"]
    assert marked["reinstated_by"] == ACTOR and marked["reinstated_at"].endswith("Z")
    assert "reinstated_at" not in env.incidents.get_item(Key={"violation_id": "v0"})["Item"]
    assert {"DevicesReinstated", "CertificatesReactivated"} <= metric_names(capsys.readouterr().out)


def test_reinstate_of_a_device_with_only_revoked_certificates_warns(env):
    contained_device(env, ("REVOKED",))
    result = invoke(**request("reinstate"))
    assert result["ok"] is True and result["reactivated"] == [] and not in_group(env)
    assert "new certificate" in result["warning"]


def test_quarantine_adds_to_the_group_and_leaves_certificates(env, capsys):
    (cert,) = make_thing(env.iot)
    result = invoke(**request("quarantine"))
    assert result["ok"] is True and result["added_to_group"] is True
    assert in_group(env) and status(env, cert) == "ACTIVE"
    requested, completed = audit_records(env)
    assert requested["action"] == completed["action"] == "device.quarantine"
    assert completed["actor"] == ACTOR and completed["details"]["added_to_group"] == "true"
    assert "DevicesQuarantinedByOperator" in metric_names(capsys.readouterr().out)


def test_quarantine_then_reinstate_round_trip(env):
    (cert,) = make_thing(env.iot)
    assert invoke(**request("quarantine"))["ok"]
    result = invoke(**request("reinstate"))
    assert result["ok"] and result["already_active"] == [cert] and not in_group(env)
    assert [r["action"] for r in audit_records(env)] == ["device.quarantine"] * 2 + ["device.reinstate"] * 2


@pytest.mark.parametrize(("event", "error"), [
    ({"action": "delete", "thing": THING, "actor": ACTOR}, "action must be one of"),
    ({"action": None, "thing": THING, "actor": ACTOR}, "action must be one of"),
    ({"thing": THING, "actor": ACTOR}, "action must be one of"),
    ({"action": "reinstate", "thing": "bad thing", "actor": ACTOR}, "thing must be"),
    ({"action": "reinstate", "thing": "", "actor": ACTOR}, "thing must be"),
    ({"action": "reinstate", "thing": ["x"], "actor": ACTOR}, "thing must be"),
    ({"action": "reinstate", "thing": "a" * 129, "actor": ACTOR}, "thing must be"),
    ({"action": "reinstate", "thing": THING + "\n", "actor": ACTOR}, "thing must be"),
    ({"action": "reinstate", "thing": THING}, "actor is required"),
    ({"action": "reinstate", "thing": THING, "actor": ""}, "actor is required"),
    ({"action": "reinstate", "thing": THING, "actor": "alice"}, "actor must be an IAM or STS ARN"),
    ({"action": "reinstate", "thing": THING, "actor": ACTOR, "reason": "x" * (MAX_REASON + 1)},
     "reason must be"),
    ({"action": "reinstate", "thing": THING, "actor": ACTOR, "reason": 7}, "reason must be"),
    ({"action": "reinstate", "thing": THING, "actor": ACTOR, "force": True}, "unexpected field(s): force"),
])
def test_bad_requests_are_refused_without_acting_or_auditing(env, event, error, capsys):
    contained_device(env)
    result = invoke(**event)
    assert result["ok"] is False and error in result["error"]
    assert in_group(env) and audit_records(env) == []
    out = capsys.readouterr().out
    assert "DeviceAdminRejected" in metric_names(out) and '"reason":"invalid-request"' in out.replace(" ", "")


@pytest.mark.parametrize("event", [None, "reinstate dev-IZWB", [1], 42])
def test_a_non_object_event_is_refused(env, event):
    result = admin_handler.lambda_handler(event, LambdaContext())
    assert result == {"ok": False, "error": "the event must be a JSON object"}


def test_reason_is_optional(env):
    make_thing(env.iot)
    event = request("quarantine")
    del event["reason"]
    assert invoke(**event)["ok"] is True
    assert audit_records(env)[0]["details"]["reason"] == ""


def test_unknown_thing(env):
    assert invoke(**request("reinstate", thing="dev-nope")) == {"ok": False, "error": "unknown thing"}
    assert invoke(**request("quarantine", thing="dev-nope")) == {"ok": False, "error": "unknown thing"}
    assert audit_records(env) == []


def test_no_audit_no_action(env, logs):
    """The `requested` record is written before acting: if it fails, nothing happens."""
    inactive, _ = contained_device(env)
    env.audit.delete()
    result = invoke(**request("reinstate"))
    assert result == {"ok": False, "error": "the audit record could not be written; nothing was done"}
    assert in_group(env) and status(env, inactive) == "INACTIVE"
    assert "audit record failed" in logs.getvalue()


class FailingSecondPut:
    """The audit table, failing its second put_item (the `completed` record)."""

    def __init__(self, table):
        self.table, self.puts = table, 0

    def put_item(self, **kwargs):
        self.puts += 1
        if self.puts == 2:
            raise client_error("ProvisionedThroughputExceededException", "PutItem")
        return self.table.put_item(**kwargs)


def test_a_failed_completion_record_is_not_reported_as_success(env):
    inactive, _ = contained_device(env)
    admin = admin_handler._dependencies()
    admin.audit_table = FailingSecondPut(admin.audit_table)
    result = invoke(**request("reinstate"))
    assert result["ok"] is False and "completion audit record" in result["error"]
    assert result["done"]["reactivated"] == [inactive]  # what did happen is still reported
    (requested,) = audit_records(env)
    assert requested["details"]["status"] == "requested"


def test_an_iot_failure_midway_is_reported_and_audited(env):
    inactive, _ = contained_device(env)
    admin = admin_handler._dependencies()
    Calls(admin.iot, {"remove_thing_from_thing_group": [client_error("ThrottlingException")]})
    result = invoke(**request("reinstate"))
    assert result["ok"] is False and "ThrottlingException" in result["error"]
    assert result["done"]["reactivated"] == [inactive] and result["done"]["removed_from_group"] is False
    assert in_group(env)  # still cut off: the group is the switch and it was not flipped
    _requested, failed = audit_records(env)
    assert failed["details"]["status"] == "failed" and failed["details"]["error"] == "ThrottlingException"
    assert failed["details"]["reactivated"] == inactive
    # Running it again (the injected error is spent) finishes the job.
    again = invoke(**request("reinstate"))
    assert again["ok"] and again["already_active"] == [inactive] and not in_group(env)


def test_reinstate_call_pattern(env):
    contained_device(env)
    admin = admin_handler._dependencies()
    counter = Calls(admin.iot)
    invoke(**request("reinstate"))
    calls = counter.calls
    assert calls[0] == "list_thing_principals" and calls[-1] == "remove_thing_from_thing_group"
    assert sorted(calls[1:-1]) == ["describe_certificate", "describe_certificate", "update_certificate"]


def test_missing_configuration_is_an_answer_not_a_crash(env):
    env.monkeypatch.delenv("QUARANTINE_GROUP")
    admin_handler._dependencies.cache_clear()
    result = invoke(**request("quarantine"))
    assert result["ok"] is False and result["error"].startswith("configuration error")


def test_an_incident_left_unmarked_fails_the_request_and_the_rerun_completes_it(env):
    contained_device(env)
    env.incidents.put_item(Item={"violation_id": "v-1", "thing": THING, "received_at": "2023-11-14T22:13:20.000Z",
                                 "status": "contained"})
    admin_handler._dependencies().incidents_table = boto3.resource("dynamodb").Table("no-such-table")
    result = invoke(**request("reinstate"))
    assert result["ok"] is False and "ResourceNotFoundException" in result["error"]
    assert [r["details"]["status"] for r in audit_records(env)] == ["requested", "failed"]
    admin_handler._dependencies().incidents_table = env.incidents
    assert invoke(**request("reinstate"))["ok"] is True  # the operator's re-run
    assert "reinstated_at" in env.incidents.get_item(Key={"violation_id": "v-1"})["Item"]
    assert not in_group(env)


def test_the_thing_rule_is_the_violation_rule():
    assert f"^{THING_RULE.pattern}$" == THING_NAME_PATTERN


def test_a_failed_lookup_is_an_answer_and_nothing_is_audited(env):
    contained_device(env)
    admin = admin_handler._dependencies()
    Calls(admin.iot, {"list_thing_principals": [client_error("ThrottlingException", "ListThingPrincipals")]})
    result = invoke(**request("reinstate"))
    assert result == {"ok": False, "error": "could not look the thing up (ThrottlingException)"}
    assert audit_records(env) == [] and in_group(env)
