"""fleetctl command ... against a real HTTP server on 127.0.0.1 (no mocks of urllib)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ID_TOKEN = "eyJraWQiOiJ0ZXN0In0.eyJjb2duaXRvOmdyb3VwcyI6WyJhZG1pbnMiXX0.c2lnbmF0dXJl"
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


class Api:
    def __init__(self):
        self.requests: list[dict] = []
        self.answers: dict[tuple[str, str], tuple[int, dict]] = {}


@pytest.fixture
def api(monkeypatch):
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            state.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": body})
            route = self.path.split("?")[0]
            answer = state.answers.get((self.command, route), (200, {"ok": True}))
            if isinstance(answer, list):  # answers in turn; the last one stays
                answer = answer.pop(0) if len(answer) > 1 else answer[0]
            status, payload = answer
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_port}/v1"
    monkeypatch.setenv("FLEETWARDEN_ID_TOKEN", ID_TOKEN)
    yield state
    server.shutdown()


def body(request):
    return json.loads(request["body"])


def test_send_to_a_thing_with_params(run, api):
    api.answers[("POST", "/v1/commands")] = (201, {"job_id": "fw-reboot-" + "0" * 32, "document": {"x": 1}})
    result = run("command", "send", "SN-0001", "reboot", "--param", "delay_seconds=10", "--param", "reason=patch",
                 "--api-url", api.url)
    assert result.code == 0, result.err
    [request] = api.requests
    assert request["headers"]["Authorization"] == ID_TOKEN
    assert body(request) == {"command": "reboot", "thing": "SN-0001",
                             "params": {"delay_seconds": 10, "reason": "patch"}}
    assert json.loads(result.out) == {"job_id": "fw-reboot-" + "0" * 32}


def test_send_to_a_group_with_a_desired_state_file(run, api, tmp_path):
    desired = tmp_path / "desired.json"
    desired.write_text('{"interval": 30}')
    result = run("command", "send", "--group", "field", "config", "--desired-file", desired,
                 "--lifetime-hours", "2", "--api-url", api.url)
    assert result.code == 0, result.err
    assert body(api.requests[0]) == {"command": "config", "group": "field", "params": {"desired": {"interval": 30}},
                                     "lifetime_seconds": 7200}


@pytest.mark.parametrize("argv, fragment", [
    (["SN-0001", "format-disk"], "invalid TYPE 'format-disk'"),
    (["SN-0001", "reboot", "extra"], "expected [THING] TYPE"),
    (["reboot"], "exactly one target"),
    (["SN-0001", "reboot", "--group", "g"], "exactly one target"),
    (["SN-0001", "reboot", "--param", "novalue"], "KEY=VALUE"),
    (["SN-0001", "reboot", "--param", "delay_seconds=1.5"], "whole"),
])
def test_bad_sends_fail_locally_with_one_line(run, api, argv, fragment):
    run("command", "send", *argv, "--api-url", api.url).assert_one_error_line(2, fragment)
    assert api.requests == []


def test_a_refusal_is_one_line(run, api):
    api.answers[("POST", "/v1/commands")] = (403, {"message": "only members of admins"})
    run("command", "send", "SN-0001", "reboot", "--api-url", api.url).assert_one_error_line(1, "not authorised")
    api.answers[("POST", "/v1/commands")] = (404, {"message": "no such thing:SN-0001"})
    run("command", "send", "SN-0001", "reboot", "--api-url", api.url).assert_one_error_line(1, "no such thing")


def test_software_update_hashes_uploads_then_sends(run, api, tmp_path, monkeypatch):
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fELF" * 1000)
    digest = hashlib.sha256(firmware.read_bytes()).hexdigest()
    upload_url = api.url.replace("/v1", "/upload/artifacts/" + digest)
    api.answers[("POST", "/v1/artifacts")] = (201, {"upload_url": upload_url, "headers": {"x-amz-checksum-sha256": "abc="}})
    api.answers[("POST", "/v1/commands")] = (201, {"job_id": "fw-software-update-" + "0" * 32})
    result = run("command", "software-update", "SN-0001", "--file", firmware, "--version", "2.0.0", "--api-url", api.url)
    # A plain-http upload URL is refused: the artifact only ever goes to S3 over TLS.
    result.assert_one_error_line(1, "no https upload URL")
    assert body(api.requests[0]) == {"sha256": digest, "size": 4000}


def test_software_update_puts_the_file_with_the_checksum_header(run, api, tmp_path, monkeypatch):
    from tools.fleetctl import commands

    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"firmware-2.0.0")
    digest = hashlib.sha256(b"firmware-2.0.0").hexdigest()
    upload_url = api.url.replace("/v1", "/upload")
    api.answers[("POST", "/v1/artifacts")] = (201, {"upload_url": "https://placeholder", "headers": {"x-amz-checksum-sha256": "abc="}})
    api.answers[("POST", "/v1/commands")] = (201, {"job_id": "fw-software-update-" + "0" * 32})
    real_call = commands.call

    def local_upload(*args, **kwargs):
        answer = real_call(*args, **kwargs)
        if answer.get("upload_url") == "https://placeholder":
            answer["upload_url"] = "https://" + upload_url.removeprefix("http://")
        return answer

    monkeypatch.setattr(commands, "call", local_upload)
    opened = []
    real_open = commands.urllib.request.OpenerDirector.open

    def to_http(self, request, *args, **kwargs):  # the test server speaks plain http
        if isinstance(request, commands.urllib.request.Request) and request.full_url.startswith("https://127.0.0.1"):
            opened.append(request)
            request.full_url = "http://" + request.full_url.removeprefix("https://")
        return real_open(self, request, *args, **kwargs)

    monkeypatch.setattr(commands.urllib.request.OpenerDirector, "open", to_http)
    result = run("command", "software-update", "SN-0001", "--file", firmware, "--version", "2.0.0", "--api-url", api.url)
    assert result.code == 0, result.err
    put = [r for r in api.requests if r["method"] == "PUT"][0]
    headers = {name.lower(): value for name, value in put["headers"].items()}
    assert put["body"] == b"firmware-2.0.0" and headers["x-amz-checksum-sha256"] == "abc="
    send = [r for r in api.requests if r["path"] == "/v1/commands"][0]
    assert body(send) == {"command": "software-update", "thing": "SN-0001",
                          "params": {"version": "2.0.0", "sha256": digest, "size": 14}}


def test_list_status_cancel_and_public_key(run, api, tmp_path):
    job = "fw-reboot-" + "0" * 32
    assert run("command", "list", "--thing", "SN-0001", "--api-url", api.url).code == 0
    assert api.requests[-1]["path"] == "/v1/commands?thing=SN-0001"
    assert run("command", "status", job, "--thing", "SN-0001", "--api-url", api.url).code == 0
    assert api.requests[-1]["path"] == f"/v1/commands/{job}?thing=SN-0001"
    assert run("command", "cancel", job, "--reason", "wrong unit", "--api-url", api.url).code == 0
    assert api.requests[-1]["method"] == "POST" and body(api.requests[-1]) == {"reason": "wrong unit"}
    api.answers[("GET", "/v1/public-key")] = (200, {"pem": PEM, "key_id": "ab" * 32})
    out = tmp_path / "commands.pem"
    result = run("command", "public-key", "--out", out, "--api-url", api.url)
    assert result.code == 0 and out.read_text() == PEM
    run("command", "public-key", "--out", out, "--api-url", api.url).assert_one_error_line(2)


def test_retire_certificate(run, api):
    api.answers[("POST", "/v1/rotations/SN-0001/retire")] = (409, {"message": "the device has not confirmed yet"})
    run("command", "retire-certificate", "SN-0001", "--api-url", api.url).assert_one_error_line(1, "not confirmed")
    assert body(api.requests[-1]) == {"status": "INACTIVE"}
    api.answers[("POST", "/v1/rotations/SN-0001/retire")] = (200, {"status": "REVOKED"})
    assert run("command", "retire-certificate", "SN-0001", "--revoke", "--api-url", api.url).code == 0
    assert body(api.requests[-1]) == {"status": "REVOKED"}


# --- a keyed request is re-sent once after an indefinite answer -------------------------------------------

@pytest.fixture
def no_pause(monkeypatch):
    from tools.fleetctl import api as client

    monkeypatch.setattr(client, "RETRY_PAUSE_SECONDS", 0)


QUEUED = (201, {"job_id": "fw-reboot-" + "a" * 32, "command": "reboot", "target": {"thing": "SN-0001"}})


def test_send_carries_an_idempotency_key_and_resends_it_once_after_a_5xx(run, api, no_pause):
    api.answers[("POST", "/v1/commands")] = [(502, {"message": "it is not known whether the command was queued"}),
                                             QUEUED]
    result = run("command", "send", "SN-0001", "reboot", "--api-url", api.url)
    assert result.code == 0, result.err
    keys = [r["headers"]["Idempotency-Key"] for r in api.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 32  # the same request, not a new one
    assert body(api.requests[0]) == body(api.requests[1])


def test_each_send_is_a_new_request_with_a_new_key(run, api, no_pause):
    api.answers[("POST", "/v1/commands")] = QUEUED
    run("command", "send", "SN-0001", "reboot", "--api-url", api.url)
    run("command", "send", "SN-0001", "reboot", "--api-url", api.url)
    first, second = (r["headers"]["Idempotency-Key"] for r in api.requests)
    assert first != second


def test_a_refusal_is_not_resent_and_two_indefinite_answers_fail_with_one_line(run, api, no_pause):
    api.answers[("POST", "/v1/commands")] = (400, {"message": "params must be an object"})
    run("command", "send", "SN-0001", "reboot", "--api-url", api.url).assert_one_error_line(1, "HTTP 400")
    assert len(api.requests) == 1
    api.requests.clear()
    api.answers[("POST", "/v1/commands")] = (503, {"message": "Service Unavailable"})
    run("command", "send", "SN-0001", "reboot", "--api-url", api.url).assert_one_error_line(1, "HTTP 503")
    assert len(api.requests) == 2


def test_remote_access_is_sent_once_without_a_key(run, api, no_pause):
    """Each remote-access request opens a tunnel: a re-send would open a second one."""
    api.answers[("POST", "/v1/commands")] = (502, {"message": "not queued"})
    run("command", "send", "SN-0001", "remote-access", "--api-url", api.url).assert_one_error_line(1, "HTTP 502")
    assert len(api.requests) == 1
    assert not any(name.lower() == "idempotency-key" for name in api.requests[0]["headers"])
