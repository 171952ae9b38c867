"""fleetctl alerts list / trace against the real alerts API handler.

A local HTTP server plays API Gateway: it turns each request into the REST proxy event the
Cognito authoriser would pass (claims chosen by the bearer token) and answers with what
`alerts.api.handler.lambda_handler` returns; the tables and the versioned bucket are moto's,
seeded as the alert processor stores alerts. A second local server plays S3 for the presigned
URL: it serves the real object bytes of the key and version the URL was signed for, and can be
told to misbehave (lie about the length, refuse, redirect, declare a huge size).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
from moto import mock_aws

from alerts.api import handler
from tests.alerts.test_api import ANALYST, DATA_BUCKET, ENV, OPERATOR, REGION, api_event, store_alert
from tests.helpers import LambdaContext, captured_logs, create_alerts_table, create_tables, scan
from tools.fleetctl import alerts
from tools.fleetctl.errors import InputError, RemoteError

THING, OTHER = "pump-7", "pump-8"
TOKENS = {"analyst-token": ANALYST, "ops-token": OPERATOR}
# (thing, S3 event time); 7 alerts of THING over three days, 2 of OTHER.
SEED = [
    (THING, "2023-11-12T08:00:00.000Z"), (THING, "2023-11-13T09:30:00.250Z"),
    (THING, "2023-11-13T23:59:59.999Z"), (THING, "2023-11-14T00:00:00.000Z"),
    (THING, "2023-11-14T12:00:00.000Z"), (THING, "2023-11-14T12:00:00.000Z"),
    (THING, "2023-11-15T06:00:00.000Z"), (OTHER, "2023-11-13T10:00:00.000Z"),
    (OTHER, "2023-11-14T10:00:00.000Z"),
]


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client hanging up is part of some tests
        pass


def _serve(handler_class) -> tuple[ThreadingHTTPServer, str]:
    server = _Quiet(("127.0.0.1", 0), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class ApiGateway(BaseHTTPRequestHandler):
    """GET {api}/v1/alerts and /v1/alerts/{id}/trace -> the handler, as API Gateway calls it."""

    world: SimpleNamespace  # set by the fixture

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server naming)
        world = self.world
        parts = urlsplit(self.path)
        world.api_requests.append({"path": parts.path, "authorization": self.headers.get("Authorization")})
        claims = TOKENS.get(self.headers.get("Authorization") or "")
        if claims is None:  # the Cognito authoriser answers before the function runs
            return self._answer(401, {"message": "Unauthorized"})
        path = parts.path.removeprefix("/v1")
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        segments = path.strip("/").split("/")
        if len(segments) == 3 and segments[0] == "alerts" and segments[2] == "trace":
            event = api_event(resource="/alerts/{id}/trace", alert_id=unquote(segments[1]), claims=claims)
        else:
            event = api_event(resource=path, query=query, claims=claims)
            event["multiValueQueryStringParameters"] = parse_qs(parts.query) or None
        # The handler's log lines and metrics go to stdout: kept out of the CLI's output (the
        # CLI's thread waits for this answer, so nothing of its own is printed meanwhile).
        with captured_logs(handler.logger), contextlib.redirect_stdout(io.StringIO()):
            response = handler.lambda_handler(event, LambdaContext())
        body = json.loads(response["body"])
        if isinstance(body, dict) and "url" in body:
            world.signed_urls.append(body["url"])
            body["url"] = world.rewrite(body["url"])
        self._answer(response["statusCode"], body)

    def _answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class FakeS3(BaseHTTPRequestHandler):
    """Serves the object the presigned URL names, from moto, in the way `world.s3_mode` says."""

    world: SimpleNamespace

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        world = self.world
        parts = urlsplit(self.path)
        world.s3_requests.append({"path": parts.path, "authorization": self.headers.get("Authorization")})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if "X-Amz-Signature" not in query:
            return self._status(403)
        mode = world.s3_mode
        if mode == "forbidden":  # e.g. the URL expired
            return self._status(403)
        if mode == "redirect":
            self.send_response(307)
            self.send_header("Location", f"{world.s3_url}/elsewhere?X-Amz-Signature=x")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        raw = world.s3.get_object(Bucket=DATA_BUCKET, Key=unquote(parts.path.lstrip("/")),
                                  VersionId=query["versionId"])["Body"].read()
        # lies: the right length declared, half the body sent; other: another object, its length declared truly.
        body = {"lies": raw[:len(raw) // 2], "other": raw + b" ", "huge": raw[:10]}.get(mode, raw)
        declared = {"lies": len(raw), "huge": alerts.MAX_TRACE_BYTES + 1}.get(mode, len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _status(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def world():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        handler._dependencies.cache_clear()
        with mock_aws():
            dynamodb = boto3.resource("dynamodb", region_name=REGION)
            table = create_alerts_table(dynamodb)
            _, audit = create_tables(dynamodb)
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=DATA_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
            stored = [store_alert(table, s3, thing, at, n) for n, (thing, at) in enumerate(SEED)]
            state = SimpleNamespace(table=table, audit=audit, s3=s3, stored=stored, api_requests=[],
                                    s3_requests=[], signed_urls=[], s3_mode="honest", rewrite=None)
            ApiGateway.world = FakeS3.world = state
            api, api_url = _serve(ApiGateway)
            s3_server, state.s3_url = _serve(FakeS3)
            state.api_url = f"{api_url}/v1"
            try:
                yield state
            finally:
                api.shutdown()
                s3_server.shutdown()
        handler._dependencies.cache_clear()


@pytest.fixture
def aws(world):
    """The shared world, reset: empty audit trail and request logs, an honest S3."""
    for item in world.audit.scan(ConsistentRead=True)["Items"]:
        world.audit.delete_item(Key={"event_id": item["event_id"]})
    world.api_requests.clear()
    world.s3_requests.clear()
    world.signed_urls.clear()
    world.s3_mode = "honest"
    # The URL moto signs names the real S3 host; the same path and signature go to the local S3.
    world.rewrite = lambda url: world.s3_url + url[url.index("/", len("https://")):]
    return world


def newest_first(world, thing=THING):
    return sorted((s for s in world.stored if s["thing"] == thing), key=lambda s: s["alert_id"], reverse=True)


# --- alerts list -------------------------------------------------------------------------------------

def test_list_follows_next_across_pages_newest_first(aws, monkeypatch):
    monkeypatch.setattr(alerts, "API_PAGE_LIMIT", 2)  # 7 alerts: 4 requests
    listing = alerts.list_alerts(aws.api_url, "analyst-token", THING, limit=50)
    assert [a["id"] for a in listing["items"]] == [s["alert_id"] for s in newest_first(aws)]
    assert listing["more"] is False
    assert len(aws.api_requests) == 4
    first = listing["items"][0]
    newest = newest_first(aws)[0]
    assert first == {"id": newest["alert_id"], "thing": THING, "received_at": newest["received_at"],
                     "code": newest["code"], "fw": newest["fw"], "field_count": newest["field_count"]}


def test_list_stops_at_the_limit_and_says_there_is_more(aws):
    listing = alerts.list_alerts(aws.api_url, "analyst-token", THING, limit=3)
    assert [a["id"] for a in listing["items"]] == [s["alert_id"] for s in newest_first(aws)[:3]]
    assert listing["more"] is True
    assert "(more alerts" in alerts.alerts_table(listing)


def test_list_between_from_and_to_naive_times_are_utc(aws):
    listing = alerts.list_alerts(aws.api_url, "analyst-token", THING,
                                 start="2023-11-13T23:59:59.999", end="2023-11-14T00:00:00+00:00")
    assert [a["received_at"] for a in listing["items"]] == ["2023-11-14T00:00:00.000Z",
                                                             "2023-11-13T23:59:59.999Z"]
    # An offset is honoured: 01:00+01:00 is midnight UTC.
    listing = alerts.list_alerts(aws.api_url, "analyst-token", THING, start="2023-11-14T01:00:00+01:00",
                                 end="2023-11-14T01:00:00+01:00")
    assert [a["received_at"] for a in listing["items"]] == ["2023-11-14T00:00:00.000Z"]


def test_list_by_code_goes_through_short_pages(aws, monkeypatch):
    monkeypatch.setattr(alerts, "API_PAGE_LIMIT", 1)
    wanted = [s for s in aws.stored if s["thing"] == THING and s["code"] == 101]
    listing = alerts.list_alerts(aws.api_url, "analyst-token", THING, code=101)
    assert [a["id"] for a in listing["items"]] == [wanted[0]["alert_id"]]
    assert listing["more"] is False and len(aws.api_requests) > 1


def test_list_table_and_json(aws):
    listing = alerts.list_alerts(aws.api_url, "analyst-token", OTHER)
    table = alerts.alerts_table(listing).splitlines()
    assert table[0].split() == list(alerts.ALERT_COLUMNS)
    assert [line.split()[0] for line in table[1:]] == [s["received_at"] for s in newest_first(aws, OTHER)]
    assert json.loads(alerts.alerts_json(listing)) == listing
    assert alerts.alerts_table({"items": [], "more": False}) == "no alerts"


@pytest.mark.parametrize("token", ["ops-token", "forged-token"])
def test_list_refused_to_non_members_and_bad_tokens(aws, token):
    with pytest.raises(RemoteError, match="analysts or admins"):
        alerts.list_alerts(aws.api_url, token, THING)


@pytest.mark.parametrize("kwargs,message", [
    ({"thing": "pump 7"}, "invalid thing name"),
    ({"thing": THING, "start": "yesterday"}, "invalid --from"),
    ({"thing": THING, "start": "2023-11-15", "end": "2023-11-14"}, "--from must not be later"),
    ({"thing": THING, "code": -1}, "--code"),
    ({"thing": THING, "limit": 0}, "--limit"),
    ({"thing": THING, "limit": 1001}, "--limit"),
])
def test_list_bad_input_is_refused_before_any_request(aws, kwargs, message):
    with pytest.raises(InputError, match=message):
        alerts.list_alerts(aws.api_url, "analyst-token", **kwargs)
    assert aws.api_requests == []


def test_list_refuses_plain_http_to_another_host(aws):
    with pytest.raises(InputError, match="plain http"):
        alerts.list_alerts("http://alerts.example.com/v1", "analyst-token", THING)


# --- alerts trace ------------------------------------------------------------------------------------

def only_files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_trace_downloads_the_object_0600_without_sending_the_token_to_s3(aws, tmp_path):
    alert = newest_first(aws)[0]
    out = tmp_path / "trace.json"
    result = alerts.fetch_trace(aws.api_url, "analyst-token", alert["alert_id"], out, progress=True)
    assert out.read_bytes() == alert["raw"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert only_files(tmp_path) == ["trace.json"]  # no temporary file left
    assert result["size"] == len(alert["raw"]) and result["path"] == str(out)
    # The ID token went to the API only; S3 got the presigned URL and nothing else.
    assert [r["authorization"] for r in aws.api_requests] == ["analyst-token"]
    assert [r["authorization"] for r in aws.s3_requests] == [None]
    assert f"versionId={alert['version_id']}" in aws.signed_urls[0]
    # The API audited the fetch (who, which thing, which alert).
    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == ("alert-trace.fetch", "carol", THING)
    assert record["details"]["alert_id"] == alert["alert_id"]


def test_a_download_shorter_than_declared_is_an_error_and_leaves_no_file(aws, tmp_path):
    aws.s3_mode = "lies"
    out = tmp_path / "trace.json"
    with pytest.raises(RemoteError, match="incomplete.*nothing written"):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], out)
    assert only_files(tmp_path) == []


def test_an_object_of_another_size_than_the_alert_indexed_is_refused(aws, tmp_path):
    """S3 serves a whole, self-consistent object whose size is not the one the processor read and indexed."""
    aws.s3_mode = "other"
    with pytest.raises(RemoteError, match="indexed was .*nothing written"):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], tmp_path / "t")
    assert only_files(tmp_path) == []


def test_a_declared_size_beyond_any_alert_is_refused(aws, tmp_path):
    aws.s3_mode = "huge"
    with pytest.raises(RemoteError, match="more than any alert can hold"):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], tmp_path / "t")
    assert only_files(tmp_path) == []


def test_an_expired_or_refused_url_leaves_no_file(aws, tmp_path):
    aws.s3_mode = "forbidden"
    with pytest.raises(RemoteError, match="HTTP 403.*nothing written"):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], tmp_path / "t")
    assert only_files(tmp_path) == []


def test_a_redirect_is_not_followed(aws, tmp_path):
    aws.s3_mode = "redirect"
    with pytest.raises(RemoteError, match="HTTP 307"):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], tmp_path / "t")
    assert [r["path"] for r in aws.s3_requests if r["path"] == "/elsewhere"] == []
    assert only_files(tmp_path) == []


def test_a_plain_http_url_to_a_remote_host_is_refused(aws, tmp_path):
    aws.rewrite = lambda url: "http://attacker.example.com/x"
    with pytest.raises(RemoteError, match="not https"):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], tmp_path / "t")
    assert aws.s3_requests == [] and only_files(tmp_path) == []


def test_an_existing_file_is_kept_unless_forced(aws, tmp_path):
    alert = newest_first(aws)[1]
    out = tmp_path / "trace.json"
    out.write_bytes(b"analyst's notes")
    with pytest.raises(InputError, match="exists; pass --force"):
        alerts.fetch_trace(aws.api_url, "analyst-token", alert["alert_id"], out)
    assert out.read_bytes() == b"analyst's notes"
    assert aws.api_requests == [] and scan(aws.audit) == []  # refused before any URL was issued
    alerts.fetch_trace(aws.api_url, "analyst-token", alert["alert_id"], out, force=True)
    assert out.read_bytes() == alert["raw"] and only_files(tmp_path) == ["trace.json"]


def test_a_failed_download_with_force_keeps_the_old_file(aws, tmp_path):
    out = tmp_path / "trace.json"
    out.write_bytes(b"previous trace")
    aws.s3_mode = "lies"
    with pytest.raises(RemoteError):
        alerts.fetch_trace(aws.api_url, "analyst-token", newest_first(aws)[0]["alert_id"], out, force=True)
    assert out.read_bytes() == b"previous trace" and only_files(tmp_path) == ["trace.json"]


def test_trace_refused_to_non_members_writes_nothing(aws, tmp_path):
    with pytest.raises(RemoteError, match="analysts or admins"):
        alerts.fetch_trace(aws.api_url, "ops-token", newest_first(aws)[0]["alert_id"], tmp_path / "t")
    assert aws.s3_requests == [] and only_files(tmp_path) == [] and scan(aws.audit) == []


def test_unknown_alert_is_the_apis_404(aws, tmp_path):
    with pytest.raises(RemoteError, match="HTTP 404.*alert not found"):
        alerts.fetch_trace(aws.api_url, "analyst-token", "2023-11-14T00:00:00.000Z#0123456789ab",
                           tmp_path / "t")
    assert only_files(tmp_path) == []


@pytest.mark.parametrize("alert_id", ["", "latest", "2023-11-14T00:00:00Z#0123456789ab", "../../etc"])
def test_malformed_alert_id_is_refused_locally(aws, tmp_path, alert_id):
    with pytest.raises(InputError, match="invalid alert id"):
        alerts.fetch_trace(aws.api_url, "analyst-token", alert_id, tmp_path / "t")
    assert aws.api_requests == []


def test_out_must_name_a_file_in_an_existing_directory(aws, tmp_path):
    alert_id = newest_first(aws)[0]["alert_id"]
    with pytest.raises(InputError, match="is a directory"):
        alerts.fetch_trace(aws.api_url, "analyst-token", alert_id, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        alerts.fetch_trace(aws.api_url, "analyst-token", alert_id, tmp_path / "missing" / "t")
    assert aws.api_requests == []


def test_the_size_cap_is_the_alert_processors():
    from alerts.model import MAX_ALERT_BYTES, MAX_CODE

    assert alerts.MAX_TRACE_BYTES == MAX_ALERT_BYTES and alerts.MAX_CODE == MAX_CODE


# --- the commands ------------------------------------------------------------------------------------

@pytest.fixture
def configured(aws, monkeypatch):
    """A configured stage whose AlertsApiUrl is the local API; the analyst's token in the env."""
    from tools.fleetctl import settings

    settings.save(settings.Settings(stage="test", region=REGION, outputs={"AlertsApiUrl": aws.api_url}))
    monkeypatch.setenv("FLEETWARDEN_ID_TOKEN", "analyst-token")
    return aws


def test_alerts_list_command_reads_the_stage_and_prints_json_or_a_table(configured, run):
    result = run("alerts", "list", "--thing", THING, "--json")
    assert result.code == 0, result.err
    listing = json.loads(result.out)
    assert [a["id"] for a in listing["items"]] == [s["alert_id"] for s in newest_first(configured)]
    result = run("alerts", "list", "--thing", THING, "--code", "104", "--from", "2023-11-14")
    assert result.code == 0 and len(result.out.splitlines()) == 2 and "104" in result.out.splitlines()[1]


def test_alerts_trace_command_writes_the_file(configured, run, tmp_path):
    alert = newest_first(configured)[0]
    out = tmp_path / "t.json"
    result = run("alerts", "trace", alert["alert_id"], "--out", out)
    assert result.code == 0, result.err
    assert out.read_bytes() == alert["raw"] and f"{len(alert['raw'])} bytes" in result.out


def test_alerts_trace_command_failures_are_one_line(configured, run, tmp_path, monkeypatch):
    alert_id = newest_first(configured)[0]["alert_id"]
    configured.s3_mode = "lies"
    run("alerts", "trace", alert_id, "--out", tmp_path / "t").assert_one_error_line(1, "incomplete")
    assert only_files(tmp_path) == ["fleetctl-config"]
    (tmp_path / "t").write_text("keep")
    run("alerts", "trace", alert_id, "--out", tmp_path / "t").assert_one_error_line(2, "--force")
    run("alerts", "list", "--thing", THING, "--code", "-1").assert_one_error_line(2, "--code")
    monkeypatch.setenv("FLEETWARDEN_ID_TOKEN", "ops-token")
    run("alerts", "list", "--thing", THING).assert_one_error_line(1, "analysts or admins")
