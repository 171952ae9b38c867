"""The fleet at a glance (`fleet status`) and one device in full (`device show`), read from the IoT
registry, the fleet index when it is on, the stage's incidents and audit tables and the
functions' CloudWatch metrics. Every read is bounded: a count that stopped at its bound is
reported as "at least N" (`incomplete` names it).

Both take `clients` (service name -> boto3 client, as defense.client_factory makes them) and the
stage's `settings` (tools/fleetctl/settings.py: stack outputs by stable key).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

from botocore.exceptions import ClientError

from .defense import Clients, _cell, _plain, aws_errors, list_incidents, validate_thing

# Open incidents: containment done or under way, not ended by a reinstatement (the rule the
# auto-response and device-admin functions apply: lambdas/defense/auto_response/respond.py,
# lambdas/defense/device_admin/admin.py).
OPEN_STATUSES = ("contained", "in-progress")
AUDIT_TARGET_INDEX = "by_target"  # audit table GSI: target (S) + at (S), stacks/identity_stack.py
RECENT_AUDIT = 10
RECENT_INCIDENTS = 50  # the newest incidents of a thing read to find the open ones
MAX_LIST_PAGES = 40  # ListThingsInThingGroup pages of 250: 10,000 things, then "at least"
MAX_SCAN_PAGES = 100  # incident table pages of up to 1 MB
LIST_PAGE_SIZE = 250  # ListThingsInThingGroup maxResults upper bound (IoT API reference)
# Metrics the functions emit through Powertools (namespace Fleetwarden/<stage>, dimension service =
# POWERTOOLS_SERVICE_NAME; stacks/platform/function.py): every alert the processor indexed ends
# forwarded or rejected by the classifier (lambdas/alerts/processor/process.py); the telemetry
# transform counts the records it rejects (lambdas/telemetry/transform/handler.py).
ALERT_METRICS = (("AlertsForwarded", "alert-processor"), ("AlertsRejectedByClassifier", "alert-processor"))
REJECTED_TELEMETRY_METRICS = (("TelemetryRecordsRejected", "telemetry-transform"),)
DAY = timedelta(hours=24)
INDEX_OFF = "OFF"


# --- reads -------------------------------------------------------------------------------------------

def indexing_modes(iot) -> tuple[str, str]:
    """(thingIndexingMode, thingConnectivityIndexingMode) of the account's fleet index.
    https://docs.aws.amazon.com/iot/latest/apireference/API_GetIndexingConfiguration.html"""
    config = iot.get_indexing_configuration().get("thingIndexingConfiguration") or {}
    things = config.get("thingIndexingMode") or INDEX_OFF
    return things, config.get("thingConnectivityIndexingMode") or INDEX_OFF


def group_query(group: str) -> str:
    """Things in a thing group, in the fleet index's query language. The name is quoted as a
    phrase: a '-' inside an unquoted term may read as the exclusion operator (unverified either
    way; https://docs.aws.amazon.com/iot/latest/developerguide/query-syntax.html)."""
    return f'thingGroupNames:"{group}"'


def _index_count(iot, query: str) -> int:
    """GetStatistics' count of the things matching `query` (the default aggregation field).
    https://docs.aws.amazon.com/iot/latest/apireference/API_GetStatistics.html,
    https://docs.aws.amazon.com/iot/latest/apireference/API_Statistics.html"""
    count = iot.get_statistics(queryString=query).get("statistics", {}).get("count")
    return int(count or 0)


def _group_count(iot, group: str) -> tuple[int, bool]:
    """(things in the group, complete?) from ListThingsInThingGroup, direct members only."""
    request: dict[str, Any] = {"thingGroupName": group, "recursive": False, "maxResults": LIST_PAGE_SIZE}
    count = 0
    for _ in range(MAX_LIST_PAGES):
        page = iot.list_things_in_thing_group(**request)
        count += len(page.get("things", []))
        if not page.get("nextToken"):
            return count, True
        request["nextToken"] = page["nextToken"]
    return count, False


def _open_incident_count(dynamodb, table: str) -> tuple[int, bool]:
    """Open incidents in the whole table: a counting Scan (Select COUNT), bounded."""
    request: dict[str, Any] = {
        "TableName": table, "Select": "COUNT",
        "FilterExpression": "#s IN (:contained, :progress) AND attribute_not_exists(reinstated_at)",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":contained": {"S": OPEN_STATUSES[0]},
                                      ":progress": {"S": OPEN_STATUSES[1]}},
    }
    count = 0
    for _ in range(MAX_SCAN_PAGES):
        page = dynamodb.scan(**request)
        count += int(page.get("Count", 0))
        if not page.get("LastEvaluatedKey"):
            return count, True
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return count, False


def _metric_sums(cloudwatch, namespace: str, metrics: dict[str, tuple], start: datetime,
                 end: datetime) -> dict[str, int]:
    """Sum over [start, end) of each named group of Powertools metrics (GetMetricData, one period).
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html"""
    queries, owner = [], {}
    for name, members in metrics.items():
        for n, (metric, service) in enumerate(members):
            query_id = f"{name.lower()}{n}"
            owner[query_id] = name
            queries.append({"Id": query_id, "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": metric,
                           "Dimensions": [{"Name": "service", "Value": service}]},
                "Period": int((end - start).total_seconds()), "Stat": "Sum"}})
    sums = dict.fromkeys(metrics, 0)
    request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end}
    while True:
        page = cloudwatch.get_metric_data(**request)
        for result in page.get("MetricDataResults", []):
            sums[owner[result["Id"]]] += int(sum(result.get("Values", [])))
        if not page.get("NextToken"):
            return sums
        request["NextToken"] = page["NextToken"]


def _is_index_not_ready(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code")
    return code in ("IndexNotReadyException", "ResourceNotFoundException")


# --- fleet status ------------------------------------------------------------------------------------

def fleet_status(clients: Clients, settings: Any, now: Callable[[], datetime] | None = None) -> dict:
    """Devices registered and connected now (this stage's fleet group), quarantined, open
    incidents, alerts and rejected telemetry records in the last 24 h."""
    fleet, quarantine = settings.get("FleetGroupName"), settings.get("QuarantineGroupName")
    incidents = settings.get("IncidentsTableName")
    end = (now or (lambda: datetime.now(UTC)))().replace(microsecond=0)
    status: dict[str, Any] = {"stage": settings.stage, "region": settings.region,
                              "incomplete": [], "notes": []}
    iot = clients("iot")

    with aws_errors("read the fleet index configuration (iot:GetIndexingConfiguration)"):
        things_mode, connectivity_mode = indexing_modes(iot)
    status["fleet_indexing"] = {"things": things_mode, "connectivity": connectivity_mode}
    registered = connected = None
    if things_mode != INDEX_OFF:
        with aws_errors("query the fleet index (iot:GetStatistics)"):
            try:
                registered = _index_count(iot, group_query(fleet))
                if connectivity_mode != INDEX_OFF:
                    connected = _index_count(iot, f"{group_query(fleet)} AND connectivity.connected:true")
            except ClientError as exc:  # an index still building: fall back to the registry
                if not _is_index_not_ready(exc):
                    raise
                registered = connected = None
                status["notes"].append("fleet index not ready: devices counted from the registry")
    if registered is None:
        with aws_errors(f"list thing group {fleet}", missing=f"thing group {fleet}"):
            registered, complete = _group_count(iot, fleet)
        if not complete:
            status["incomplete"].append("devices_registered")
    if connected is None:
        status["notes"].append("connected now: unknown (fleet indexing off)" if connectivity_mode == INDEX_OFF
                               else "connected now: unknown (fleet index not ready)")
    status["devices_registered"], status["connected_now"] = registered, connected

    with aws_errors(f"list thing group {quarantine}", missing=f"thing group {quarantine}"):
        status["quarantined"], complete = _group_count(iot, quarantine)
    if not complete:
        status["incomplete"].append("quarantined")
    with aws_errors(f"read table {incidents}", missing=f"table {incidents}"):
        status["open_incidents"], complete = _open_incident_count(clients("dynamodb"), incidents)
    if not complete:
        status["incomplete"].append("open_incidents")
    with aws_errors("read CloudWatch metrics (cloudwatch:GetMetricData)"):
        # The stage's own namespace (Audit stack output MetricsNamespace, Fleetwarden/<stage>).
        sums = _metric_sums(clients("cloudwatch"), settings.get("MetricsNamespace"),
                            {"alerts": ALERT_METRICS, "rejected": REJECTED_TELEMETRY_METRICS}, end - DAY, end)
    status["alerts_24h"], status["telemetry_rejected_24h"] = sums["alerts"], sums["rejected"]
    return status


STATUS_ROWS = (("devices registered", "devices_registered"), ("connected now", "connected_now"),
               ("quarantined", "quarantined"), ("open incidents", "open_incidents"),
               ("alerts (24 h)", "alerts_24h"), ("rejected telemetry (24 h)", "telemetry_rejected_24h"))


def _count_text(status: dict, key: str) -> str:
    value = status.get(key)
    if value is None:
        return "unknown (fleet indexing off)" if status["fleet_indexing"]["connectivity"] == INDEX_OFF \
            else "unknown (fleet index not ready)"
    return f"at least {value}" if key in status["incomplete"] else str(value)


def status_table(status: dict) -> str:
    indexing = status["fleet_indexing"]
    rows = [("stage", f"{_cell(status['stage'])} ({_cell(status['region'])})")]
    rows += [(label, _count_text(status, key)) for label, key in STATUS_ROWS]
    rows.append(("fleet indexing", f"things {_cell(indexing['things'])}, "
                                   f"connectivity {_cell(indexing['connectivity'])}"))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


# --- device show -------------------------------------------------------------------------------------

def _certificates(iot, thing: str) -> list[dict]:
    """The thing's X.509 principals with their state (ListThingPrincipals, DescribeCertificate)."""
    arns: list[str] = []
    for page in iot.get_paginator("list_thing_principals").paginate(thingName=thing):
        arns.extend(page.get("principals", []))
    certificates = []
    for arn in sorted(arns):
        if ":cert/" not in arn:
            certificates.append({"principal": arn})
            continue
        certificate_id = arn.rsplit("/", 1)[1]
        description = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        validity = description.get("validity") or {}
        certificates.append({
            "id": certificate_id, "status": description.get("status"),
            "created": _iso(description.get("creationDate")),
            "not_after": _iso(validity.get("notAfter")),
        })
    return certificates


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return None if value is None else str(value)


def _groups(iot, thing: str) -> list[str]:
    names: list[str] = []
    for page in iot.get_paginator("list_thing_groups_for_thing").paginate(thingName=thing):
        names.extend(g["groupName"] for g in page.get("thingGroups", []))
    return sorted(names)


def _connectivity(iot, thing: str) -> dict | None:
    """The fleet index's connectivity document of the thing (SearchIndex), or None if absent.
    `timestamp` is epoch milliseconds of the last connect or disconnect and may be missing after
    about an hour disconnected
    (https://docs.aws.amazon.com/iot/latest/apireference/API_ThingConnectivity.html)."""
    things = iot.search_index(queryString=f"thingName:{thing}", maxResults=1).get("things", [])
    connectivity = things[0].get("connectivity") if things else None
    if not isinstance(connectivity, dict):
        return None
    stamp = connectivity.get("timestamp")
    return {
        "connected": connectivity.get("connected"),
        "since": (_iso(datetime.fromtimestamp(stamp / 1000, UTC))
                  if isinstance(stamp, (int, float)) else None),
        "disconnect_reason": connectivity.get("disconnectReason"),
    }


def _recent_audit(dynamodb, table: str, thing: str, limit: int = RECENT_AUDIT) -> list[dict]:
    from boto3.dynamodb.types import TypeDeserializer

    page = dynamodb.query(TableName=table, IndexName=AUDIT_TARGET_INDEX, ScanIndexForward=False, Limit=limit,
                          KeyConditionExpression="#t = :thing", ExpressionAttributeNames={"#t": "target"},
                          ExpressionAttributeValues={":thing": {"S": thing}})
    deserializer = TypeDeserializer()
    return [_plain({k: deserializer.deserialize(v) for k, v in item.items()})
            for item in page.get("Items", [])]


def is_open(incident: dict) -> bool:
    return incident.get("status") in OPEN_STATUSES and "reinstated_at" not in incident


def device_show(clients: Clients, settings: Any, thing: str) -> dict:
    """The thing, its certificates and their states, groups, last seen (fleet index), open
    incidents and recent audit records."""
    validate_thing(thing)
    incidents_table, audit_table = settings.get("IncidentsTableName"), settings.get("AuditTableName")
    quarantine = settings.get("QuarantineGroupName")
    iot = clients("iot")
    with aws_errors(f"describe thing {thing}", missing=f"thing {thing}"):
        described = iot.describe_thing(thingName=thing)
        certificates = _certificates(iot, thing)
        groups = _groups(iot, thing)
    with aws_errors("read the fleet index configuration (iot:GetIndexingConfiguration)"):
        things_mode, connectivity_mode = indexing_modes(iot)
    last_seen = None
    if things_mode != INDEX_OFF and connectivity_mode != INDEX_OFF:
        with aws_errors(f"query the fleet index for {thing} (iot:SearchIndex)"):
            last_seen = _connectivity(iot, thing)
    incidents = [i for i in list_incidents(incidents_table, thing=thing, limit=RECENT_INCIDENTS,
                                           region=settings.region, clients=clients) if is_open(i)]
    with aws_errors(f"read table {audit_table}", missing=f"table {audit_table}"):
        audit = _recent_audit(clients("dynamodb"), audit_table, thing)
    return {
        "thing": described.get("thingName", thing),
        "thing_type": described.get("thingTypeName"),
        "attributes": described.get("attributes") or {},
        "certificates": certificates,
        "groups": groups,
        "quarantined": quarantine in groups,
        "connectivity": last_seen,
        "connectivity_indexed": connectivity_mode != INDEX_OFF and things_mode != INDEX_OFF,
        "open_incidents": incidents,
        "recent_audit": audit,
    }


def device_table(device: dict) -> str:
    lines = [f"thing        {_cell(device['thing'])}" + (f" (type {_cell(device['thing_type'])})"
                                                          if device["thing_type"] else "")]
    attributes = ", ".join(f"{_cell(k)}={_cell(v)}" for k, v in sorted(device["attributes"].items()))
    lines.append(f"attributes   {attributes or '-'}")
    lines.append(f"groups       {', '.join(_cell(g) for g in device['groups']) or '-'}"
                 + ("  [QUARANTINED]" if device["quarantined"] else ""))
    connectivity = device["connectivity"]
    if not device["connectivity_indexed"]:
        seen = "unknown (fleet indexing off)"
    elif connectivity is None:
        seen = "unknown (not in the fleet index)"
    else:
        state = "connected" if connectivity["connected"] else "disconnected"
        seen = state + (f" since {connectivity['since']}" if connectivity["since"] else "")
        if not connectivity["connected"] and connectivity["disconnect_reason"]:
            seen += f" ({_cell(connectivity['disconnect_reason'])})"
    lines.append(f"last seen    {seen}")
    lines.append(f"certificates {len(device['certificates']) or 'none'}")
    for cert in device["certificates"]:
        if "id" in cert:
            lines.append(f"  {_cell(cert['status']):<18} {_cell(cert['id'])}"
                         f"  created {_cell(cert['created'])}  expires {_cell(cert['not_after'])}")
        else:
            lines.append(f"  {'(not a certificate)':<18} {_cell(cert['principal'])}")
    lines.append(f"open incidents {len(device['open_incidents']) or 'none'}")
    for incident in device["open_incidents"]:
        lines.append(f"  {_cell(incident.get('received_at'))}  {_cell(incident.get('status'))}  "
                     f"{_cell(incident.get('behavior'))}  {_cell(incident.get('violation_id'))}")
    lines.append(f"recent audit {len(device['recent_audit']) or 'none'}")
    for record in device["recent_audit"]:
        lines.append(f"  {_cell(record.get('at'))}  {_cell(record.get('action'))}"
                     f"  by {_cell(record.get('actor'))}")
    return "\n".join(lines)


def as_json(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
