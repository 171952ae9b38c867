"""fleetctl incidents list (moto DynamoDB) and device quarantine/reinstate (botocore Stubber)."""

import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from moto import mock_aws

from tools.fleetctl import defense
from tools.fleetctl.errors import InputError, RemoteError

REGION = "eu-west-1"
TABLE = "fw-dev-incidents"
FUNCTION = "fw-dev-device-admin"
ACTOR = "arn:aws:sts::123456789012:assumed-role/FleetOperator/alice"
THINGS = ("SN-0001", "SN-0002")
ALL_DONE = {"isolate": "done", "deactivate": "done", "shadow": "done", "notify": "done"}


def no_credentials(monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


# --- incidents list: moto DynamoDB -------------------------------------------------------------------

def incident(thing: str, day: int, hour: int, **extra) -> dict:
    item = {
        "violation_id": f"{thing}-{day:02d}{hour:02d}",
        "thing": thing,
        "profile": "fw-dev-limits",
        "behavior": "MessagesSent",
        "metric": "aws:num-messages-sent",
        "event_type": "in-alarm",
        "received_at": f"2025-05-{day:02d}T{hour:02d}:00:00.000Z",
        "status": "contained",
        "mode": "deactivate",
        "steps": dict(ALL_DONE),
    }
    item.update(extra)
    return item


# Two things over five days: SN-0001 at 10:00, SN-0002 at 12:00 each day (10 incidents).
SEED = [incident(thing, day, 10 if thing == "SN-0001" else 12) for day in range(1, 6) for thing in THINGS]
NEWEST_FIRST = sorted(SEED, key=lambda i: i["received_at"], reverse=True)


def received(items) -> list[str]:
    return [i["received_at"] for i in items]


@pytest.fixture
def empty_table():
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                                  for n in ("violation_id", "thing", "received_at")],
            KeySchema=[{"AttributeName": "violation_id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[{
                "IndexName": "by_thing",
                "KeySchema": [{"AttributeName": "thing", "KeyType": "HASH"},
                              {"AttributeName": "received_at", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            }],
        )
        yield boto3.resource("dynamodb", region_name=REGION).Table(TABLE)


@pytest.fixture
def table(empty_table):
    # Written in an order unrelated to time, so a correct listing must really sort.
    with empty_table.batch_writer() as batch:
        for item in sorted(SEED, key=lambda i: i["violation_id"][::-1]):
            batch.put_item(Item=item)
    return empty_table


def counting_clients(calls: list[str]):
    """The module's real client factory, counting each DynamoDB request sent."""
    clients = defense.client_factory(REGION)
    dynamodb = clients("dynamodb")
    for operation in ("Scan", "Query"):
        dynamodb.meta.events.register(f"before-call.dynamodb.{operation}",
                                      lambda model, **_: calls.append(model.name))
    return clients


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:]]


def test_list_all_newest_first_as_an_aligned_table(run, table):
    table.put_item(Item=incident("SN-0001", 6, 9, status="recorded", steps={
        "isolate": "done", "deactivate": "failed:AccessDenied", "shadow": "skipped:dry-run"}))

    result = run("incidents", "list", "--table", TABLE)

    assert result.code == 0, result.err
    assert result.err == ""
    lines = result.out.splitlines()
    assert lines[0].split() == ["RECEIVED_AT", "THING", "BEHAVIOR", "EVENT_TYPE", "STATUS", "STEPS"]
    assert len(lines) == 1 + 11
    # Columns line up: every row has THING where the header has it.
    column = lines[0].index("THING")
    assert {line[column:column + 7] for line in lines[1:]} == set(THINGS)
    rows = table_rows(result.out)
    assert rows[0][:5] == ["2025-05-06T09:00:00.000Z", "SN-0001", "MessagesSent", "in-alarm", "recorded"]
    assert " ".join(rows[0][5:]) == "1/3 done, 1 failed, 1 skipped"
    assert [r[0] for r in rows[1:]] == received(NEWEST_FIRST)
    assert " ".join(rows[1][5:]) == "4/4 done"


def test_limit_keeps_the_newest(run, table):
    result = run("incidents", "list", "--table", TABLE, "--limit", "3")
    assert result.code == 0, result.err
    assert [r[0] for r in table_rows(result.out)] == received(NEWEST_FIRST[:3])


def test_scan_reads_every_page_and_returns_the_globally_newest(table):
    calls: list[str] = []
    items = defense.list_incidents(TABLE, limit=4, page_size=3, clients=counting_clients(calls))

    assert received(items) == received(NEWEST_FIRST[:4])
    assert calls.count("Scan") >= 4  # 10 items, 3 per page: the newest may be on any page


def test_thing_queries_the_index_newest_first(run, table):
    result = run("incidents", "list", "--table", TABLE, "--thing", "SN-0002", "--json")

    assert result.code == 0, result.err
    items = json.loads(result.out)
    assert [i["thing"] for i in items] == ["SN-0002"] * 5
    assert received(items) == [f"2025-05-{d:02d}T12:00:00.000Z" for d in (5, 4, 3, 2, 1)]


def test_thing_query_stops_at_the_limit_across_pages(table):
    calls: list[str] = []
    items = defense.list_incidents(TABLE, thing="SN-0001", limit=3, page_size=2,
                                   clients=counting_clients(calls))

    assert received(items) == [f"2025-05-{d:02d}T10:00:00.000Z" for d in (5, 4, 3)]
    assert calls == ["Query", "Query"]  # 2 + 1, never the two older items


def test_since_filters_scan_and_query(run, table):
    everything = run("incidents", "list", "--table", TABLE, "--since", "2025-05-04", "--json")
    assert received(json.loads(everything.out)) == received(NEWEST_FIRST[:4])

    one_thing = run("incidents", "list", "--table", TABLE, "--thing", "SN-0001", "--since", "2025-05-04")
    assert [r[0] for r in table_rows(one_thing.out)] == [
        "2025-05-05T10:00:00.000Z", "2025-05-04T10:00:00.000Z"]


def test_since_with_an_offset_is_converted_to_utc(run, table):
    # 13:00+02:00 is 11:00Z: SN-0002's 12:00 incident that day is in, SN-0001's 10:00 one is out.
    result = run("incidents", "list", "--table", TABLE, "--since", "2025-05-05T13:00:00+02:00", "--json")
    assert [(i["thing"], i["received_at"]) for i in json.loads(result.out)] == [
        ("SN-0002", "2025-05-05T12:00:00.000Z")]


def test_since_includes_an_incident_at_exactly_that_instant(run, table):
    result = run("incidents", "list", "--table", TABLE, "--since", "2025-05-05T12:00:00Z", "--json")
    assert received(json.loads(result.out)) == ["2025-05-05T12:00:00.000Z"]


def test_json_is_an_array_of_whole_items(run, table):
    result = run("incidents", "list", "--table", TABLE, "--json", "--limit", "2")

    assert result.code == 0, result.err
    items = json.loads(result.out)
    assert items == NEWEST_FIRST[:2]  # every attribute, steps as a map


def test_numbers_in_items_are_plain_json(run, empty_table):
    empty_table.put_item(Item=incident("SN-0001", 1, 10, attempts=3))
    assert json.loads(run("incidents", "list", "--table", TABLE, "--json").out)[0]["attempts"] == 3


def test_empty_table(run, empty_table):
    result = run("incidents", "list", "--table", TABLE)
    assert (result.code, result.out, result.err) == (0, "no incidents\n", "")
    assert json.loads(run("incidents", "list", "--table", TABLE, "--json").out) == []


def test_text_cells_are_made_printable(run, empty_table):
    empty_table.put_item(Item=incident("SN-0001", 1, 10, behavior="Evil\x1b[2Jname"))
    result = run("incidents", "list", "--table", TABLE)
    assert "\x1b" not in result.out and "Evil?[2Jname" in result.out


def test_region_flag_is_used(run, table):
    # The table exists only in eu-west-1.
    run("incidents", "list", "--table", TABLE, "--region", "us-east-1").assert_one_error_line(
        1, f"table {TABLE} not found")


def test_missing_table(run, empty_table):
    run("incidents", "list", "--table", "fw-nope").assert_one_error_line(1, "table fw-nope not found")


def test_no_credentials(run, monkeypatch):
    no_credentials(monkeypatch)
    run("incidents", "list", "--table", TABLE).assert_one_error_line(1, "no usable AWS credentials")


def test_no_region(run, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    run("incidents", "list", "--table", TABLE).assert_one_error_line(2, "no AWS region", "--region")


@pytest.mark.parametrize("extra, fragment", [
    (["--limit", "0"], "--limit"),
    (["--limit", "1001"], "--limit"),
    (["--limit", "ten"], "--limit"),
    (["--since", "yesterday"], "--since"),
    (["--since", "2025-13-01"], "--since"),
    (["--thing", "SN 0001"], "invalid thing name"),
    (["--region", "Europe"], "--region"),
])
def test_incidents_input_errors(run, extra, fragment):
    run("incidents", "list", "--table", TABLE, *extra).assert_one_error_line(2, fragment)


def test_invalid_table_name(run):
    run("incidents", "list", "--table", "x").assert_one_error_line(2, "--table")


@pytest.mark.parametrize("since, key", [
    ("2025-05-01", "2025-05-01T00:00:00"),
    ("2025-05-01T10:00:00Z", "2025-05-01T10:00:00"),
    ("2025-05-01T10:00:00.250Z", "2025-05-01T10:00:00.25"),
    ("2025-05-01T01:30:00+02:00", "2025-04-30T23:30:00"),
    ("2025-05-01T10:00:00", "2025-05-01T10:00:00"),
])
def test_since_key(since, key):
    assert defense.since_key(since) == key


@pytest.mark.parametrize("steps, summary", [
    (ALL_DONE, "4/4 done"),
    ({"isolate": "done", "deactivate": "skipped:dry-run"}, "1/2 done, 1 skipped"),
    ({"isolate": "failed:Throttling"}, "0/1 done, 1 failed"),
    ({}, "-"),
    (None, "-"),
])
def test_steps_summary(steps, summary):
    assert defense.steps_summary(steps) == summary


# --- device quarantine / reinstate: botocore Stubber ------------------------------------------------

class StubbedAws:
    """Real sts and lambda clients whose requests Stubber answers; records what was asked for."""

    def __init__(self):
        self.sts = boto3.client("sts", region_name=REGION)
        self.lam = boto3.client("lambda", region_name=REGION)
        self.sts_stub, self.lambda_stub = Stubber(self.sts), Stubber(self.lam)
        self.requested: list[str] = []  # services the code asked the factory for
        self.sent: list[dict] = []  # Invoke parameters as the code passed them
        self.lam.meta.events.register("provide-client-params.lambda.Invoke",
                                      lambda params, **_: self.sent.append(dict(params)))

    def clients(self, service: str):
        self.requested.append(service)
        return {"sts": self.sts, "lambda": self.lam}[service]

    def identity(self, arn: str = ACTOR):
        self.sts_stub.add_response("get_caller_identity", {
            "UserId": "AROAEXAMPLE:alice", "Account": "123456789012", "Arn": arn})

    def reply(self, payload, function_error: str | None = None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = {"StatusCode": 200, "ExecutedVersion": "$LATEST",
                    "Payload": StreamingBody(io.BytesIO(body), len(body))}
        if function_error:
            response["FunctionError"] = function_error
        self.lambda_stub.add_response("invoke", response, {
            "FunctionName": FUNCTION, "InvocationType": "RequestResponse", "Payload": ANY})

    def payload(self) -> dict:
        assert len(self.sent) == 1
        return json.loads(self.sent[0]["Payload"])

    def done(self):
        self.sts_stub.assert_no_pending_responses()
        self.lambda_stub.assert_no_pending_responses()


@pytest.fixture
def aws():
    stubbed = StubbedAws()
    with stubbed.sts_stub, stubbed.lambda_stub:
        yield stubbed


@pytest.fixture
def cli_aws(aws, monkeypatch):
    """The CLI's client factory (the module's one seam) hands out the stubbed clients."""
    regions: list[str | None] = []

    def factory(region=None):
        regions.append(region)
        return aws.clients

    monkeypatch.setattr(defense, "client_factory", factory)
    aws.regions = regions
    return aws


# Reply shapes of lambdas/defense/device_admin.
QUARANTINED = {"ok": True, "action": "quarantine", "thing": "SN-0001",
               "quarantine_group": "fw-dev-quarantine", "added_to_group": True,
               "audit_event_ids": ["ev-1", "ev-2"]}
NO_NEW_CERTIFICATE = "revoked certificates cannot be reactivated: the device needs a new certificate"
REINSTATED = {"ok": True, "action": "reinstate", "thing": "SN-0001", "quarantine_group": "fw-dev-quarantine",
              "reactivated": ["c0ffee01"], "already_active": [],
              "revoked_left_alone": ["dead0002", "dead0003"],
              "other_left_alone": {}, "removed_from_group": True, "warning": NO_NEW_CERTIFICATE,
              "incidents_updated": 2, "audit_event_ids": ["ev-3", "ev-4"]}


@pytest.mark.parametrize("action", defense.ACTIONS)
def test_payload_sent_to_the_function(aws, action):
    aws.identity()
    aws.reply({"ok": True})

    reply = defense.device_action(action, "SN-0001", function=FUNCTION, reason="  beaconing to 203.0.113.9 ",
                                  clients=aws.clients)

    assert reply == {"ok": True}
    assert aws.payload() == {"action": action, "thing": "SN-0001", "actor": ACTOR,
                             "reason": "beaconing to 203.0.113.9"}
    assert aws.requested == ["sts", "lambda"]
    aws.done()


def test_reason_defaults_to_empty(aws):
    aws.identity()
    aws.reply({"ok": True})
    defense.device_action("quarantine", "SN-0001", function=FUNCTION, clients=aws.clients)
    assert aws.payload()["reason"] == ""


def test_quarantine_prints_the_summary(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply(QUARANTINED)

    result = run("device", "quarantine", "SN-0001", "--function", FUNCTION, "--reason", "beaconing",
                 "--region", "eu-central-1")

    assert result.code == 0, result.err
    assert result.err == ""
    assert result.out.splitlines() == [
        "quarantined SN-0001",
        "  quarantine group: fw-dev-quarantine",
        "  added to group: yes",
        "  audit event ids: ev-1, ev-2",
    ]
    assert cli_aws.payload()["reason"] == "beaconing"
    assert cli_aws.regions == ["eu-central-1"]
    cli_aws.done()


def test_reinstate_lists_reactivated_and_revoked_certificates(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply(REINSTATED)

    result = run("device", "reinstate", "SN-0001", "--function", FUNCTION)

    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "reinstated SN-0001",
        "  reactivated certificates: 1",
        "    c0ffee01",
        "  revoked certificates left alone (cannot be reactivated): 2",
        "    dead0002",
        "    dead0003",
        "  quarantine group: fw-dev-quarantine",
        "  already active: none",
        "  other left alone: none",
        "  removed from group: yes",
        "  incidents updated: 2",
        "  audit event ids: ev-3, ev-4",
        f"warning: {NO_NEW_CERTIFICATE}",
    ]
    assert cli_aws.payload()["action"] == "reinstate"
    assert cli_aws.regions == [None]  # boto3's own region resolution


def test_reinstate_with_nothing_to_reactivate(cli_aws, run):
    cli_aws.identity()
    cli_aws.reply({"ok": True, "reactivated": [], "revoked_left_alone": []})
    result = run("device", "reinstate", "SN-0001", "--function", FUNCTION)
    assert result.out.splitlines()[1:] == ["  reactivated certificates: none",
                                           "  revoked certificates left alone (cannot be reactivated): none"]


def test_function_refuses(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply({"ok": False, "error": "thing SN-0001 is not\nquarantined"})

    result = run("device", "reinstate", "SN-0001", "--function", FUNCTION)

    result.assert_one_error_line(1, "reinstate of SN-0001 failed", "thing SN-0001 is not quarantined")
    assert result.out == ""


def test_function_stopped_part_way_reports_what_was_done(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply({"ok": False, "error": "reinstate failed (ThrottlingException); partly done: see done",
                   "done": {"action": "reinstate", "thing": "SN-0001", "reactivated": ["c0ffee01"],
                            "removed_from_group": False},
                   "audit_event_ids": ["ev-5"]})

    run("device", "reinstate", "SN-0001", "--function", FUNCTION).assert_one_error_line(
        1, "reinstate failed (ThrottlingException)",
        "done before it stopped: reactivated=[c0ffee01] removed_from_group=no", "audit event ids: ev-5")


def test_function_refuses_without_saying_why(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply({"ok": False})
    run("device", "quarantine", "SN-0001", "--function", FUNCTION).assert_one_error_line(1, "gave no reason")


def test_function_crash(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply({"errorType": "KeyError", "errorMessage": "'certificates'", "stackTrace": ["..."]},
                  function_error="Unhandled")

    result = run("device", "quarantine", "SN-0001", "--function", FUNCTION)

    result.assert_one_error_line(1, f"{FUNCTION} crashed (Unhandled)", "KeyError: 'certificates'")
    assert result.out == ""


def test_reply_that_is_not_json(run, cli_aws):
    cli_aws.identity()
    cli_aws.reply(b"<html>")
    run("device", "quarantine", "SN-0001", "--function", FUNCTION).assert_one_error_line(
        1, "not a JSON object")


def test_not_allowed_to_invoke(run, cli_aws):
    cli_aws.identity()
    cli_aws.lambda_stub.add_client_error(
        "invoke", "AccessDeniedException",
        f"User: {ACTOR} is not authorized to perform: lambda:InvokeFunction",
        http_status_code=403)

    result = run("device", "quarantine", "SN-0001", "--function", FUNCTION)

    result.assert_one_error_line(1, f"not authorised to invoke {FUNCTION}: User: {ACTOR} is not authorized")


def test_unknown_function(run, cli_aws):
    cli_aws.identity()
    cli_aws.lambda_stub.add_client_error("invoke", "ResourceNotFoundException", "Function not found",
                                         http_status_code=404)
    run("device", "quarantine", "SN-0001", "--function", FUNCTION).assert_one_error_line(
        1, f"function {FUNCTION} not found")


def test_expired_credentials_stop_before_the_invoke(run, cli_aws):
    cli_aws.sts_stub.add_client_error("get_caller_identity", "ExpiredToken", "The security token has expired",
                                      http_status_code=403)

    run("device", "quarantine", "SN-0001", "--function", FUNCTION).assert_one_error_line(
        1, "rejected your credentials (ExpiredToken)")
    assert cli_aws.sent == []
    cli_aws.done()


def test_device_no_credentials(run, monkeypatch):
    no_credentials(monkeypatch)
    run("device", "quarantine", "SN-0001", "--function", FUNCTION).assert_one_error_line(
        1, "no usable AWS credentials")


@pytest.mark.parametrize("argv, fragment", [
    (["SN 0001"], "invalid thing name"),
    (["SN/0001"], "invalid thing name"),
    (["x" * 129], "invalid thing name"),
    (["SN-0001", "--reason", "r" * 257], "at most 256"),
    (["SN-0001", "--reason", "ok\nFAKE LOG LINE"], "--reason"),
    (["SN-0001", "--function", "bad function!"], "--function"),
    (["SN-0001", "--region", "eu_west_1"], "--region"),
])
@pytest.mark.parametrize("action", defense.ACTIONS)
def test_bad_input_makes_no_aws_call(run, cli_aws, action, argv, fragment):
    if "--function" not in argv:
        argv = [*argv, "--function", FUNCTION]

    run("device", action, *argv).assert_one_error_line(2, fragment)

    assert cli_aws.requested == [] and cli_aws.sent == []


def test_reason_of_exactly_256_characters_is_accepted(aws):
    aws.identity()
    aws.reply({"ok": True})
    defense.device_action("quarantine", "SN-0001", function=FUNCTION, reason="r" * 256, clients=aws.clients)
    assert aws.payload()["reason"] == "r" * 256


def test_module_errors_carry_the_exit_codes(aws):
    with pytest.raises(InputError):
        defense.device_action("quarantine", "SN 1", function=FUNCTION, clients=aws.clients)
    aws.identity()
    aws.reply({"ok": False, "error": "no such thing"})
    with pytest.raises(RemoteError, match="no such thing"):
        defense.device_action("quarantine", "SN-0001", function=FUNCTION, clients=aws.clients)


def test_help_lists_the_new_commands(run):
    assert "quarantine" in run("device", "--help").out
    assert "incidents" in run("--help").out
