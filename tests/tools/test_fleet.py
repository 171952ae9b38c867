"""fleetctl fleet status / device show on a moto registry (things, certificates in every state, the
fleet and quarantine groups), the incidents and audit tables as the stacks create them, and the
functions' CloudWatch metrics.

moto has no GetStatistics and its SearchIndex reports every thing as connected with a timestamp in
seconds, so the fleet-index path answers from a botocore Stubber with the documented shapes
(https://docs.aws.amazon.com/iot/latest/apireference/API_GetStatistics.html,
https://docs.aws.amazon.com/iot/latest/apireference/API_SearchIndex.html,
https://docs.aws.amazon.com/iot/latest/apireference/API_ThingConnectivity.html), while every
registry call still goes to moto.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from tests.defense.test_auto_response import INCIDENTS_TABLE, certificate_pems, create_incidents_table
from tests.helpers import AUDIT_TABLE, create_tables
from tools.fleetctl import fleet
from tools.fleetctl.errors import InputError, RemoteError
from tools.fleetctl.settings import Settings

REGION = "eu-west-1"
FLEET, QUARANTINE = "fleetwarden-test-fleet", "fleetwarden-test-quarantine"
NOW = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)
SETTINGS = Settings(stage="test", region=REGION, outputs={
    "FleetGroupName": FLEET, "QuarantineGroupName": QUARANTINE, "IncidentsTableName": INCIDENTS_TABLE,
    "AuditTableName": AUDIT_TABLE, "MetricsNamespace": "Fleetwarden/test"})
# 5 devices in the fleet group, 2 of them quarantined; one thing of another stage outside it.
DEVICES = ["pump-1", "pump-2", "pump-3", "pump-4", "pump-5"]
QUARANTINED = ["pump-2", "pump-4"]


def incident(violation_id: str, thing: str, received_at: str, status: str, **extra) -> dict:
    return {"violation_id": {"S": violation_id}, "thing": {"S": thing}, "received_at": {"S": received_at},
            "status": {"S": status}, "behavior": {"S": "message-flood"},
            **{k: {"S": v} for k, v in extra.items()}}


def metric(cloudwatch, name: str, service: str, value: float, at: datetime,
           namespace: str = "Fleetwarden/test") -> None:
    cloudwatch.put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": name, "Dimensions": [{"Name": "service", "Value": service}],
        "Value": value, "Unit": "Count", "Timestamp": at}])


@pytest.fixture
def aws():
    with mock_aws():
        iot = boto3.client("iot", region_name=REGION)
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        for group in (FLEET, QUARANTINE):
            iot.create_thing_group(thingGroupName=group)
        pems = iter(certificate_pems())
        certs: dict[str, list[dict]] = {}
        for thing in DEVICES + ["other-stage-1"]:
            attributes = {"attributes": {"model": "p100", "site": "north"}}
            iot.create_thing(thingName=thing, attributePayload=attributes)
            if thing in DEVICES:
                iot.add_thing_to_thing_group(thingGroupName=FLEET, thingName=thing)
            certs[thing] = []
            for state in (("ACTIVE",) if thing != "pump-2" else ("REVOKED", "INACTIVE", "ACTIVE")):
                cert = iot.register_certificate_without_ca(certificatePem=next(pems), status=state)
                iot.attach_thing_principal(thingName=thing, principal=cert["certificateArn"])
                certs[thing].append({"id": cert["certificateId"], "status": state})
        for thing in QUARANTINED:
            iot.add_thing_to_thing_group(thingGroupName=QUARANTINE, thingName=thing)

        resource = boto3.resource("dynamodb", region_name=REGION)
        create_incidents_table(resource)
        create_tables(resource)
        for item in (
            incident("v1", "pump-2", "2026-11-30T10:00:00.000Z", "contained"),  # open
            incident("v2", "pump-2", "2026-11-29T10:00:00.000Z", "contained",
                     reinstated_at="2026-11-29T12:00:00.000Z"),  # ended by a reinstatement
            incident("v3", "pump-4", "2026-11-30T11:00:00.000Z", "in-progress"),  # open
            incident("v4", "pump-4", "2026-11-30T09:00:00.000Z", "repeat"),
            incident("v5", "pump-1", "2026-11-30T08:00:00.000Z", "dry-run"),
            incident("v6", "pump-3", "2026-11-30T07:00:00.000Z", "reported"),
        ):
            dynamodb.put_item(TableName=INCIDENTS_TABLE, Item=item)
        for n, (target, at, action) in enumerate([
            ("pump-2", "2026-11-30T10:00:01.000Z", "device.quarantine"),
            ("pump-2", "2026-11-30T12:00:00.000Z", "alert-trace.fetch"),
            ("pump-2", "2026-11-28T12:00:00.000Z", "provisioning-token.issue"),
            ("pump-3", "2026-11-30T12:00:00.000Z", "alert-trace.fetch"),
        ]):
            dynamodb.put_item(TableName=AUDIT_TABLE, Item={
                "event_id": {"S": f"e{n}"}, "at": {"S": at}, "action": {"S": action},
                "actor": {"S": "carol"}, "target": {"S": target}, "details": {"M": {}}})

        # In the last 24 h: 3 + 2 alerts forwarded, 1 rejected by the classifier, 7 telemetry
        # records rejected; outside it, or of another metric or service, must not count.
        metric(cloudwatch, "AlertsForwarded", "alert-processor", 3, NOW - timedelta(hours=1))
        metric(cloudwatch, "AlertsForwarded", "alert-processor", 2, NOW - timedelta(hours=20))
        metric(cloudwatch, "AlertsRejectedByClassifier", "alert-processor", 1, NOW - timedelta(hours=2))
        metric(cloudwatch, "AlertsForwarded", "alert-processor", 40, NOW - timedelta(hours=30))
        metric(cloudwatch, "AlertsQuarantined", "alert-processor", 9, NOW - timedelta(hours=1))
        metric(cloudwatch, "TelemetryRecordsRejected", "telemetry-transform", 7, NOW - timedelta(hours=3))
        metric(cloudwatch, "TelemetryRecordsRejected", "detector", 11, NOW - timedelta(hours=3))

        clients = {"iot": iot, "dynamodb": dynamodb, "cloudwatch": cloudwatch}
        yield SimpleNamespace(iot=iot, dynamodb=dynamodb, clients=clients.__getitem__, certs=certs)


class IndexedIot:
    """moto's IoT client for the registry; the fleet-index calls go to a Stubber-backed client."""

    INDEX_CALLS = {"get_indexing_configuration", "get_statistics", "search_index"}

    def __init__(self, registry):
        self.registry = registry
        self.index = boto3.client("iot", region_name=REGION)
        self.stub = Stubber(self.index)

    def __getattr__(self, name):
        return getattr(self.index if name in self.INDEX_CALLS else self.registry, name)

    def indexing_on(self, connectivity: str = "STATUS") -> None:
        self.stub.add_response("get_indexing_configuration", {"thingIndexingConfiguration": {
            "thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": connectivity}}, {})


def now() -> datetime:
    return NOW


# --- fleet status ------------------------------------------------------------------------------------

def test_status_without_fleet_indexing_counts_the_registry(aws):
    status = fleet.fleet_status(aws.clients, SETTINGS, now=now)
    assert status["devices_registered"] == 5  # the fleet group only, not the other stage's thing
    assert status["connected_now"] is None
    assert status["quarantined"] == 2
    assert status["open_incidents"] == 2  # v1 (contained) and v3 (in progress)
    assert status["alerts_24h"] == 6 and status["telemetry_rejected_24h"] == 7
    assert status["incomplete"] == []
    table = fleet.status_table(status)
    assert "connected now              unknown (fleet indexing off)" in table
    assert "devices registered         5" in table and "open incidents             2" in table
    assert "every stage" not in table


class PagedIot:
    """moto answers ListThingsInThingGroup in one page whatever maxResults says; this pages its
    answer as the API documents it (maxResults per page, nextToken until the last)
    (https://docs.aws.amazon.com/iot/latest/apireference/API_ListThingsInThingGroup.html)."""

    def __init__(self, registry):
        self.registry = registry

    def __getattr__(self, name):
        return getattr(self.registry, name)

    def list_things_in_thing_group(self, *, maxResults, nextToken="0", **kwargs):
        things = self.registry.list_things_in_thing_group(**kwargs)["things"]
        start = int(nextToken)
        page = {"things": things[start:start + maxResults]}
        if start + maxResults < len(things):
            page["nextToken"] = str(start + maxResults)
        return page


def test_status_counts_past_the_first_page_and_says_at_least_at_its_bound(aws, monkeypatch):
    monkeypatch.setattr(fleet, "LIST_PAGE_SIZE", 2)
    paged = PagedIot(aws.iot)
    clients = {"iot": paged, "dynamodb": aws.dynamodb, "cloudwatch": aws.clients("cloudwatch")}.__getitem__
    assert fleet.fleet_status(clients, SETTINGS, now=now)["devices_registered"] == 5
    monkeypatch.setattr(fleet, "MAX_LIST_PAGES", 1)
    status = fleet.fleet_status(clients, SETTINGS, now=now)
    assert status["devices_registered"] == 2 and "devices_registered" in status["incomplete"]
    assert "devices registered         at least 2" in fleet.status_table(status)


def test_status_with_fleet_indexing_asks_the_index(aws):
    iot = IndexedIot(aws.iot)
    iot.indexing_on()
    group = f'thingGroupNames:"{FLEET}"'
    iot.stub.add_response("get_statistics", {"statistics": {"count": 5}}, {"queryString": group})
    iot.stub.add_response("get_statistics", {"statistics": {"count": 3}},
                          {"queryString": f"{group} AND connectivity.connected:true"})
    clients = {"iot": iot, "dynamodb": aws.dynamodb, "cloudwatch": aws.clients("cloudwatch")}.__getitem__
    with iot.stub:
        status = fleet.fleet_status(clients, SETTINGS, now=now)
        iot.stub.assert_no_pending_responses()
    assert (status["devices_registered"], status["connected_now"], status["quarantined"]) == (5, 3, 2)
    assert status["fleet_indexing"] == {"things": "REGISTRY", "connectivity": "STATUS"}
    assert "connected now              3" in fleet.status_table(status)


def test_status_while_the_index_builds_falls_back_to_the_registry(aws):
    iot = IndexedIot(aws.iot)
    iot.indexing_on()
    iot.stub.add_client_error("get_statistics", "IndexNotReadyException", "The index is not ready.")
    clients = {"iot": iot, "dynamodb": aws.dynamodb, "cloudwatch": aws.clients("cloudwatch")}.__getitem__
    with iot.stub:
        status = fleet.fleet_status(clients, SETTINGS, now=now)
    assert status["devices_registered"] == 5 and status["connected_now"] is None
    assert "unknown (fleet index not ready)" in fleet.status_table(status)


def test_status_of_a_stage_without_the_defense_stack_says_what_is_missing(aws):
    partial = Settings(stage="test", region=REGION, outputs={"FleetGroupName": FLEET,
                                                             "QuarantineGroupName": QUARANTINE})
    with pytest.raises(InputError, match="no stack output IncidentsTableName"):
        fleet.fleet_status(aws.clients, partial, now=now)


def test_status_with_a_missing_group_is_a_clear_error(aws):
    wrong = Settings(stage="test", region=REGION, outputs={**SETTINGS.outputs, "FleetGroupName": "nope"})
    with pytest.raises(RemoteError, match="thing group nope not found"):
        fleet.fleet_status(aws.clients, wrong, now=now)


# --- device show -------------------------------------------------------------------------------------

def test_device_show_without_indexing(aws):
    device = fleet.device_show(aws.clients, SETTINGS, "pump-2")
    assert device["thing"] == "pump-2" and device["attributes"] == {"model": "p100", "site": "north"}
    assert device["groups"] == sorted([FLEET, QUARANTINE]) and device["quarantined"] is True
    assert sorted((c["id"], c["status"]) for c in device["certificates"]) == \
        sorted((c["id"], c["status"]) for c in aws.certs["pump-2"])
    assert {c["status"] for c in device["certificates"]} == {"ACTIVE", "INACTIVE", "REVOKED"}
    assert [i["violation_id"] for i in device["open_incidents"]] == ["v1"]  # v2 was reinstated
    assert [(r["at"], r["action"]) for r in device["recent_audit"]] == [
        ("2026-11-30T12:00:00.000Z", "alert-trace.fetch"), ("2026-11-30T10:00:01.000Z", "device.quarantine"),
        ("2026-11-28T12:00:00.000Z", "provisioning-token.issue")]  # newest first, this thing only
    assert device["connectivity"] is None and device["connectivity_indexed"] is False
    table = fleet.device_table(device)
    assert "[QUARANTINED]" in table and "last seen    unknown (fleet indexing off)" in table
    assert "REVOKED" in table and "INACTIVE" in table and "v1" in table and "v2" not in table
    assert fleet.as_json(device)  # every value serialisable


def test_device_show_with_indexing_reports_last_seen(aws):
    iot = IndexedIot(aws.iot)
    iot.indexing_on()
    iot.stub.add_response("search_index", {"things": [{
        "thingName": "pump-1", "connectivity": {"connected": False, "timestamp": 1764558000000,
                                                "disconnectReason": "MQTT_KEEP_ALIVE_TIMEOUT"}}]},
        {"queryString": "thingName:pump-1", "maxResults": 1})
    clients = {"iot": iot, "dynamodb": aws.dynamodb}.__getitem__
    with iot.stub:
        device = fleet.device_show(clients, SETTINGS, "pump-1")
    assert device["connectivity"] == {"connected": False, "since": "2025-12-01T03:00:00Z",
                                      "disconnect_reason": "MQTT_KEEP_ALIVE_TIMEOUT"}
    assert device["quarantined"] is False and device["open_incidents"] == []  # v5 was a dry run
    assert "last seen    disconnected since 2025-12-01T03:00:00Z (MQTT_KEEP_ALIVE_TIMEOUT)" in \
        fleet.device_table(device)


def test_device_show_of_an_unknown_thing(aws):
    with pytest.raises(RemoteError, match="thing pump-9 not found"):
        fleet.device_show(aws.clients, SETTINGS, "pump-9")


def test_device_show_refuses_a_bad_name_before_any_call(aws):
    calls = []
    with pytest.raises(InputError, match="invalid thing name"):
        fleet.device_show(lambda service: calls.append(service), SETTINGS, "pump 1; rm")
    assert calls == []


# --- the commands ------------------------------------------------------------------------------------

def test_fleet_status_and_device_show_commands(aws, run):
    from tools.fleetctl import settings

    settings.save(SETTINGS)
    result = run("fleet", "status", "--json")
    assert result.code == 0, result.err
    status = json.loads(result.out)
    assert (status["devices_registered"], status["quarantined"], status["open_incidents"]) == (5, 2, 2)
    result = run("device", "show", "pump-4")
    assert result.code == 0, result.err
    assert "[QUARANTINED]" in result.out and "v3" in result.out
    run("device", "show", "pump-9").assert_one_error_line(1, "thing pump-9 not found")


def test_the_24_hour_counts_read_the_stage_namespace_only():
    """Stages sharing an account have their own namespaces (Fleetwarden/<stage>). Checked on the request:
    moto 5.2.5's GetMetricData drops the namespace filter when dimensions are given (cloudwatch/models.py),
    which CloudWatch does not (a metric is namespace + name + dimensions:
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Metric.html)."""
    requests = []

    class CloudWatch:
        def get_metric_data(self, **request):
            requests.append(request)
            return {"MetricDataResults": []}

    fleet._metric_sums(CloudWatch(), "Fleetwarden/test", {"alerts": fleet.ALERT_METRICS},
                       NOW - timedelta(days=1), NOW)
    namespaces = {q["MetricStat"]["Metric"]["Namespace"] for q in requests[0]["MetricDataQueries"]}
    assert namespaces == {"Fleetwarden/test"}
