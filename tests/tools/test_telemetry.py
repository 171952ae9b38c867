"""fleetctl telemetry query against moto's Glue (the table, as the stack defines it) and Athena."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pytest
import requests
from moto import mock_aws

from lambdas.telemetry.layout import projection_parameters, shard_of
from stacks.telemetry.catalog import COLUMNS, TABLE
from tools.fleetctl import telemetry
from tools.fleetctl.errors import InputError, RemoteError
from tests.tools.test_defense import REGION

ACCOUNT = "123456789012"
DATABASE = "fleetwarden_dev_telemetry"
WORKGROUP = "fleetwarden-dev-telemetry"
BUCKET = "fleetwarden-dev-telemetry-data"
THING = "SN-0001"
HEADER = ["received", "ts", "seq", "metrics", "raw"]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(telemetry, "_sleep", lambda seconds: None)


def create_catalog(shards: int = 16, projected: bool = True) -> None:
    """The database, table and workgroup the ingest stack makes (same columns and projection)."""
    glue = boto3.client("glue", region_name=REGION)
    glue.create_database(DatabaseInput={"Name": DATABASE})
    params = projection_parameters(f"s3://{BUCKET}", shards, "2024-01-01") if projected else {}
    glue.create_table(DatabaseName=DATABASE, TableInput={
        "Name": TABLE, "TableType": "EXTERNAL_TABLE", "Parameters": params,
        "PartitionKeys": [{"Name": n, "Type": "string"} for n in ("day", "hour", "shard")],
        "StorageDescriptor": {"Columns": [{"Name": n, "Type": t} for n, t, _ in COLUMNS],
                              "Location": f"s3://{BUCKET}/telemetry/"}})
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    boto3.client("athena", region_name=REGION).create_work_group(Name=WORKGROUP, Configuration={
        "ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/athena-results/"},
        "EnforceWorkGroupConfiguration": True, "BytesScannedCutoffPerQuery": 10_000_000})


def queue_results(rows: list[list[str | None]]) -> None:
    """What moto's Athena answers the next query with (its documented results queue)."""
    def row(values):
        return {"Data": [{} if v is None else {"VarCharValue": v} for v in values]}
    response = requests.post("http://motoapi.amazonaws.com/moto-api/static/athena/query-results", json={
        "account_id": ACCOUNT, "region": REGION,
        "results": [{"rows": [row(HEADER)] + [row(r) for r in rows],
                     "column_info": [{"Name": h, "Type": "varchar"} for h in HEADER]}]})
    assert response.status_code == 201


def executions() -> list[dict]:
    athena = boto3.client("athena", region_name=REGION)
    ids = athena.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    return [athena.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]


def query_args(*extra: str) -> list[str]:
    return ["telemetry", "query", "--thing", THING, "--from", "2025-05-01", "--to", "2025-05-02",
            "--database", DATABASE, "--workgroup", WORKGROUP, *extra]


@mock_aws
def test_query_reads_one_shard_of_the_days_in_range_and_prints_the_rows(run):
    create_catalog()
    queue_results([["2025-05-01 10:00:00.000", "1746093600", "1", "{temperature_c=21.5}", None],
                   ["2025-05-01 10:01:00.000", "1746093660", "2", "{temperature_c=21.75}", None]])
    result = run(*query_args())
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == HEADER
    assert lines[1].split()[-1] == "{temperature_c=21.5}" and len(lines) == 3
    # Progress on stderr: which shard, and the query's state while it ran.
    assert f"{THING}: shard {shard_of(THING):02d} of 16" in result.err
    assert "query succeeded" in result.err

    [execution] = executions()
    sql = execution["Query"]
    assert f"\"{DATABASE}\".\"{TABLE}\"" in sql
    assert "day BETWEEN '2025-05-01' AND '2025-05-01'" in sql  # --to is exclusive: one day
    assert f"shard = '{shard_of(THING):02d}'" in sql
    assert "received_at >= 1746057600000 AND received_at < 1746144000000" in sql
    assert THING not in sql  # the thing goes as an execution parameter, never into the SQL
    assert execution["WorkGroup"] == WORKGROUP
    assert execution["QueryExecutionContext"]["Database"] == DATABASE


@mock_aws
def test_query_takes_the_shard_count_from_the_tables_projection_and_prints_json(run):
    create_catalog(shards=4)
    queue_results([["2025-05-01 10:00:00.000", "1", "1", "21.5", None]])
    result = run(*query_args("--metric", "temperature_c", "--json"))
    assert result.code == 0, result.err
    [execution] = executions()
    assert f"shard = '{shard_of(THING, 4):02d}'" in execution["Query"]
    assert "element_at(metrics, ?) AS value" in execution["Query"]
    assert "element_at(metrics, ?) IS NOT NULL" in execution["Query"]
    assert f"shard {shard_of(THING, 4):02d} of 4" in result.err
    assert json.loads(result.out) == [dict(zip(HEADER, ["2025-05-01 10:00:00.000", "1", "1", "21.5", None]))]


def test_the_parameters_are_sql_literals_and_a_quote_cannot_escape():
    sql, params = telemetry.build_query(
        DATABASE, TABLE, thing=THING, start=datetime(2025, 5, 1, 22, tzinfo=UTC),
        end=datetime(2025, 5, 3, 1, tzinfo=UTC), shards=16, metric="it's")
    assert params == ["'it''s'", f"'{THING}'", "'it''s'"]
    assert sql.count("?") == 3
    assert "day BETWEEN '2025-05-01' AND '2025-05-03'" in sql


@mock_aws
def test_empty_result_says_so(run):
    create_catalog()
    result = run(*query_args())
    assert result.code == 0 and result.out.strip() == "no telemetry in that range"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--thing", "../x"], "invalid thing name"),
    (["--from", "yesterday"], "invalid --from"),
    (["--to", "2025-04-30"], "--to must be after --from"),
    (["--to", "2025-07-01"], "spans over 31 days"),
    (["--metric", "bad\nname"], "--metric must be"),
    (["--region", "mars"], "invalid --region"),
])
@mock_aws
def test_bad_input_is_one_clear_line_and_runs_no_query(run, args, fragment):
    create_catalog()
    argv = query_args()
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    run(*argv).assert_one_error_line(2, fragment)
    assert executions() == []


@mock_aws
def test_a_table_without_the_shard_projection_is_refused(run):
    create_catalog(projected=False)
    run(*query_args()).assert_one_error_line(2, "has no shard projection")


@mock_aws
def test_a_missing_table_is_a_remote_error(run):
    result = run(*query_args())
    result.assert_one_error_line(1, f"table {DATABASE}.{TABLE} not found")


class FakeAthena:
    """An Athena whose query ends as `final` after one RUNNING poll (moto's always succeed)."""

    def __init__(self, final: str, reason: str = ""):
        self.states = ["QUEUED", "RUNNING", final]
        self.reason = reason
        self.stopped = False

    def start_query_execution(self, **kwargs):
        self.started = kwargs
        return {"QueryExecutionId": "q-1"}

    def get_query_execution(self, QueryExecutionId):
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"QueryExecution": {"Status": {"State": state, "StateChangeReason": self.reason},
                                   "Statistics": {"DataScannedInBytes": 12_500_000}}}

    def stop_query_execution(self, QueryExecutionId):
        self.stopped = True


def test_a_query_cancelled_at_the_scan_limit_is_reported_with_athenas_reason():
    athena = FakeAthena("CANCELLED", "Query exhausted the data scanned limit of 10000000 bytes")
    progress = io.StringIO()
    with pytest.raises(RemoteError, match="q-1 cancelled: Query exhausted the data scanned limit"):
        list(telemetry.run_query(lambda service: athena, workgroup=WORKGROUP, database=DATABASE,
                                 sql="SELECT 1", parameters=[], progress=progress, sleep=lambda s: None))
    assert "query running (1 s, 12.5 MB scanned)" in progress.getvalue()
    assert athena.started["WorkGroup"] == WORKGROUP and "ResultConfiguration" not in athena.started


def test_a_query_running_too_long_is_cancelled():
    athena = FakeAthena("RUNNING")
    athena.states = ["RUNNING"]
    with pytest.raises(RemoteError, match="still running after 3 s: cancelled"):
        list(telemetry.run_query(lambda service: athena, workgroup=WORKGROUP, database=DATABASE,
                                 sql="SELECT 1", parameters=[], progress=io.StringIO(), sleep=lambda s: None,
                                 timeout_seconds=3))
    assert athena.stopped


def test_shard_count_reads_the_projection():
    assert telemetry.shard_count({"Name": "t", "Parameters": projection_parameters("s3://b", 7, "2024-01-01")}) == 7
    with pytest.raises(InputError):
        telemetry.shard_count({"Name": "t", "Parameters": {"projection.enabled": "true",
                                                           "projection.shard.range": "1,9"}})
