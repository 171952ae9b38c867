"""fleetctl telemetry query: one device's telemetry between two instants, read through Athena from the
Glue table the ingest stack defines, reading only that device's shard of each day in range.

The shard count is read from the table's partition projection (projection.shard.range), so the CLI
and the stack can never disagree on it; the shard itself is lambdas/telemetry/layout.shard_of, the
very function the transform partitions with. The thing and metric name go to Athena as execution
parameters (StartQueryExecution ExecutionParameters, "Querying with parameterized queries",
Athena user guide), never spliced into the SQL; day, hour and shard literals are made here.
Progress (state, seconds, bytes scanned) goes to stderr while the query runs; rows to stdout.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TextIO

from botocore.exceptions import ClientError

from lambdas.telemetry.layout import shard_of, shard_text

from .defense import Clients, aws_errors, validate_thing
from .errors import InputError, RemoteError
from .times import parse_instant

DEFAULT_TABLE = "telemetry"
MAX_DAYS = 31  # one query spans at most a month of partitions
MAX_METRIC = 128
MAX_ROWS = 100_000
DONE = ("SUCCEEDED", "FAILED", "CANCELLED")
_sleep = time.sleep  # module-level so tests can replace the wait between polls


def validate_metric(metric: str | None) -> str | None:
    if metric is None:
        return None
    if not metric or len(metric) > MAX_METRIC or any(not ch.isprintable() for ch in metric):
        raise InputError(f"--metric must be 1-{MAX_METRIC} printable characters")
    return metric


def _literal(text: str) -> str:
    """A SQL string literal (an execution parameter is substituted as written)."""
    return "'" + text.replace("'", "''") + "'"


def shard_count(table: dict) -> int:
    """N from the table's partition projection; InputError if the table is not the projected one."""
    params = table.get("Parameters") or {}
    if params.get("projection.enabled") != "true" or "projection.shard.range" not in params:
        raise InputError(f"table {table.get('Name')!r} has no shard projection: is it the telemetry table?")
    low, _, high = params["projection.shard.range"].partition(",")
    try:
        low_n, high_n = int(low), int(high)
    except ValueError:
        raise InputError(f"table {table.get('Name')!r}: unreadable projection.shard.range") from None
    if low_n != 0 or high_n < 0:
        raise InputError(f"table {table.get('Name')!r}: projection.shard.range must start at 0")
    return high_n + 1


def build_query(database: str, table: str, *, thing: str, start: datetime, end: datetime, shards: int,
                metric: str | None) -> tuple[str, list[str]]:
    """(SQL with ? placeholders, execution parameters). Reads days start..end of one shard only."""
    if end <= start:
        raise InputError("--to must be after --from")
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    if (last - first).days + 1 > MAX_DAYS:
        raise InputError(f"--from .. --to spans over {MAX_DAYS} days: query a shorter range")
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    value = "element_at(metrics, ?) AS value" if metric else "metrics"
    sql = (f'SELECT from_unixtime(received_at / 1000.0) AS received, ts, seq, {value}, raw\n'
           f'FROM "{database}"."{table}"\n'
           f"WHERE day BETWEEN '{first.isoformat()}' AND '{last.isoformat()}'\n"
           f"  AND shard = '{shard_text(shard_of(thing, shards))}'\n"
           f"  AND thing = ? AND received_at >= {start_ms} AND received_at < {end_ms}\n")
    parameters = [_literal(metric)] if metric else []
    parameters.append(_literal(thing))
    if metric:
        sql += "  AND element_at(metrics, ?) IS NOT NULL\n"
        parameters.append(_literal(metric))
    sql += f"ORDER BY received_at, seq\nLIMIT {MAX_ROWS}"
    return sql, parameters


def _progress(out: TextIO, execution: dict, elapsed: float) -> None:
    state = execution.get("Status", {}).get("State", "?")
    scanned = execution.get("Statistics", {}).get("DataScannedInBytes")
    detail = f", {scanned / 1e6:.1f} MB scanned" if isinstance(scanned, int) else ""
    print(f"query {state.lower()} ({elapsed:.0f} s{detail})", file=out, flush=True)


def run_query(clients: Clients, *, workgroup: str, database: str, sql: str, parameters: list[str],
              progress: TextIO | None = None, sleep: Callable[[float], None] | None = None,
              poll_seconds: float = 1.0, timeout_seconds: float = 600.0) -> Iterator[list[str | None]]:
    """Start the query in the workgroup (its enforced settings: encrypted results, scan cutoff),
    report progress until it ends, then yield the result rows (header first) as lists of text."""
    progress = progress or sys.stderr
    sleep = sleep or _sleep
    athena = clients("athena")
    with aws_errors("start the Athena query", missing=f"workgroup {workgroup!r}"):
        query_id = athena.start_query_execution(
            QueryString=sql, QueryExecutionContext={"Database": database}, WorkGroup=workgroup,
            ExecutionParameters=parameters)["QueryExecutionId"]
    waited = 0.0
    while True:
        with aws_errors("follow the Athena query"):
            execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        _progress(progress, execution, waited)
        state = execution.get("Status", {}).get("State")
        if state in DONE:
            break
        if waited >= timeout_seconds:
            with aws_errors("cancel the Athena query"):
                athena.stop_query_execution(QueryExecutionId=query_id)
            raise RemoteError(f"query {query_id} still running after {timeout_seconds:.0f} s: cancelled")
        sleep(poll_seconds)
        waited += poll_seconds
    if state != "SUCCEEDED":
        reason = execution.get("Status", {}).get("StateChangeReason") or "no reason given"
        raise RemoteError(f"query {query_id} {state.lower()}: {' '.join(str(reason).split())[:300]}")
    with aws_errors("read the Athena results"):
        for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
            for row in page["ResultSet"]["Rows"]:
                yield [cell.get("VarCharValue") for cell in row.get("Data", [])]


def query(clients: Clients, *, thing: str, start: str, end: str, metric: str | None, database: str,
          workgroup: str, table: str = DEFAULT_TABLE, progress: TextIO | None = None,
          sleep: Callable[[float], None] | None = None) -> tuple[list[str], list[list[str | None]]]:
    """(column names, rows) of one thing's telemetry in [start, end)."""
    validate_thing(thing)
    metric = validate_metric(metric)
    begin, finish = parse_instant(start, "--from"), parse_instant(end, "--to")
    with aws_errors("read the telemetry table"):
        try:
            described = clients("glue").get_table(DatabaseName=database, Name=table)["Table"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "EntityNotFoundException":  # Glue's "not found"
                raise
            raise RemoteError(f"table {database}.{table} not found (check --database / --table): "
                              f"{exc.response['Error'].get('Message', '')}") from None
    shards = shard_count(described)
    sql, parameters = build_query(database, table, thing=thing, start=begin, end=finish, shards=shards,
                                  metric=metric)
    print(f"{thing}: shard {shard_text(shard_of(thing, shards))} of {shards}, "
          f"{begin:%Y-%m-%d %H:%M:%S} .. {finish:%Y-%m-%d %H:%M:%S} UTC", file=progress or sys.stderr, flush=True)
    rows = list(run_query(clients, workgroup=workgroup, database=database, sql=sql, parameters=parameters,
                          progress=progress, sleep=sleep))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return [h or "" for h in header], body


def format_rows(header: list[str], rows: list[list[str | None]], as_json: bool) -> str:
    if as_json:
        return json.dumps([dict(zip(header, row)) for row in rows], indent=2)
    if not rows:
        return "no telemetry in that range"
    table = [header] + [["" if cell is None else cell for cell in row] for row in rows]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
