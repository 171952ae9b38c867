"""fleetctl token issue against a real HTTP server on 127.0.0.1 (no mocks of urllib)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools.fleetctl import tokens

ID_TOKEN = "eyJraWQiOiJ0ZXN0In0.eyJjb2duaXRvOmdyb3VwcyI6WyJhZG1pbnMiXX0.c2lnbmF0dXJl"
REPLY = {"serial": "SN-000123", "token": "pt_9f8e7d6c5b4a", "expires_at": "2030-01-01T00:00:00Z"}


class FakeApi:
    """A provisioning-token API stand-in: records each request, answers with a canned response."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 201
        self.body: bytes = json.dumps(REPLY).encode()
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.stall = threading.Event()  # when `stalling`, the handler waits on this before answering
        self.stalling = False


def make_handler(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server naming)
            length = int(self.headers.get("Content-Length", 0))
            api.requests.append({
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length),
            })
            if api.stalling:
                api.stall.wait(5)
            self.send_response(api.status)
            for name, value in api.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(api.body)))
            self.end_headers()
            self.wfile.write(api.body)

        def log_message(self, *args):  # keep test output clean
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that timed out and hung up is expected in one test


@pytest.fixture(autouse=True)
def no_proxy_or_ambient_token(monkeypatch):
    # An operator's proxy settings or exported token must not leak into these tests.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(tokens.ID_TOKEN_ENV, raising=False)


@pytest.fixture
def api():
    fake = FakeApi()
    server = QuietServer(("127.0.0.1", 0), make_handler(fake))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    fake.stall.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def issue(run, url, *extra):
    return run("token", "issue", "--serial", "SN-000123", "--api-url", url, *extra)


def test_issue_posts_serial_with_id_token_and_prints_the_token(run, api):
    result = issue(run, api.url + "/prod/", "--id-token", ID_TOKEN)

    assert result.code == 0, result.err
    assert json.loads(result.out) == REPLY
    assert len(api.requests) == 1
    request = api.requests[0]
    assert request["method"] == "POST"
    assert request["path"] == "/prod/provisioning-tokens"
    assert request["headers"]["Authorization"] == ID_TOKEN  # raw Cognito ID token, as the authorizer expects
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {"serial": "SN-000123"}


def test_id_token_is_read_from_the_environment(run, api, monkeypatch):
    monkeypatch.setenv(tokens.ID_TOKEN_ENV, ID_TOKEN + "\n")  # as `export X=$(cat token)` may leave it
    api.status = 200

    assert issue(run, api.url).code == 0
    assert api.requests[0]["headers"]["Authorization"] == ID_TOKEN


@pytest.mark.parametrize("status", [401, 403])
def test_not_admin_gets_a_clear_not_authorised_message(run, api, status):
    api.status, api.body = status, b'{"message": "User is not authorized"}'

    result = issue(run, api.url, "--id-token", ID_TOKEN)

    result.assert_one_error_line(1, "not authorised", "admins group")
    assert result.out == ""


def test_server_error_reports_status_and_api_message(run, api):
    api.status, api.body = 500, b'{"message": "Internal\\nserver error"}'
    issue(run, api.url, "--id-token", ID_TOKEN).assert_one_error_line(1, "HTTP 500", "Internal server error")


def test_success_without_a_json_token_is_an_error(run, api):
    api.body = b"<html>gateway page</html>"
    issue(run, api.url, "--id-token", ID_TOKEN).assert_one_error_line(1, "not JSON")


def test_redirect_is_not_followed_so_the_id_token_stays_put(run, api):
    api.status, api.body = 302, b""
    api.headers = {"Location": api.url + "/elsewhere"}

    issue(run, api.url, "--id-token", ID_TOKEN).assert_one_error_line(1, "HTTP 302")
    assert [r["path"] for r in api.requests] == ["/provisioning-tokens"]


def test_server_down_is_a_clear_connection_error(run):
    with socket.socket() as probe:  # a port that was free a moment ago and now has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    issue(run, f"http://127.0.0.1:{port}", "--id-token", ID_TOKEN).assert_one_error_line(1, "cannot reach")


def test_slow_server_times_out(run, api, monkeypatch):
    monkeypatch.setattr(tokens, "DEFAULT_TIMEOUT", 0.3)
    api.stalling = True
    issue(run, api.url, "--id-token", ID_TOKEN).assert_one_error_line(1, "within 0.3s")


def test_default_timeout_is_ten_seconds():
    assert tokens.DEFAULT_TIMEOUT == 10


# --- refused before any request is sent ---------------------------------------------------------------

def test_missing_id_token(run, api):
    issue(run, api.url).assert_one_error_line(2, tokens.ID_TOKEN_ENV)
    assert api.requests == []


def test_bad_serial_is_rejected_before_calling_the_api(run, api):
    run("token", "issue", "--serial", "SN 1", "--api-url", api.url,
        "--id-token", ID_TOKEN).assert_one_error_line(2, "invalid serial")
    assert api.requests == []


@pytest.mark.parametrize("url, fragment", [
    ("http://api.example.com/prod", "plain http"),
    ("ftp://127.0.0.1/", "--api-url"),
    ("not a url", "--api-url"),
])
def test_unsafe_or_malformed_api_url(run, url, fragment):
    issue(run, url, "--id-token", ID_TOKEN).assert_one_error_line(2, fragment)
