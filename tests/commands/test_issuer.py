"""The issuer: each command type becomes the right job with a document the device accepts (verified with
the exported public key through `cryptography`), and everything else is refused before a job exists."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from botocore.exceptions import ClientError

from shared import command_jobs, commands
from shared.api import ApiError
from shared.commands import CommandRefused
from tests.commands.conftest import ADMIN, ANALYST, ARTIFACTS, GROUP, NOW, OTHER, PRESIGN_ROLE, THING
from tests.helpers import Calls, scan


def send(issuer, claims=ADMIN, **body):
    return issuer.send(claims, json.dumps(body))


def refused(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as error:
        call(*args, **kwargs)
    return error.value


def job_of(aws, job_id):
    job = aws.iot.describe_job(jobId=job_id)["job"]
    document = json.loads(aws.iot.get_job_document(jobId=job_id)["document"])
    return job, document


def device_accepts(document, trusted, thing=THING, groups=(), now=NOW + 60):
    """What the device agent does with a job document: parse, verify, check params."""
    signed = commands.parse(json.dumps(document))["command"]
    fields = commands.verify(signed, trusted_keys=trusted, thing=thing, now=now, groups=groups)
    commands.check_params(fields["command"], fields["params"])
    return fields


def audit_actions(aws):
    return sorted((r["action"], r["target"]) for r in scan(aws.audit))


# --- each command type ---------------------------------------------------------------------------

@pytest.mark.parametrize("command, params", [
    ("config", {"desired": {"interval": 30, "mode": "eco"}}),
    ("reboot", {"delay_seconds": 10, "reason": "kernel update"}),
    ("shutdown", {"reason": "decommission"}),
    ("rotate-certificate", {}),
])
def test_each_command_becomes_a_job_the_device_verifies(aws, issuer, trusted, command, params):
    answer = send(issuer, command=command, thing=THING, params=params)
    job, document = job_of(aws, answer["job_id"])
    assert answer["job_id"].startswith(f"fw-{command}-")
    assert job["targets"] == [aws.iot.describe_thing(thingName=THING)["thingArn"]]
    fields = device_accepts(document, trusted)
    assert (fields["command"], fields["params"], fields["target"], fields["issuer"]) == (
        command, params, {"thing": THING}, "alice")
    assert fields["not_after"] == int(NOW) + 24 * 3600
    assert set(document) == {"command"}  # nothing unsigned except where a command needs it
    # audited before the job: the record names the job and the nonce the document carries
    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == ("command.send", "alice", f"thing:{THING}")
    assert record["details"]["job_id"] == answer["job_id"] and record["details"]["nonce"] == fields["nonce"]


def test_the_job_carries_timeout_retry_abort_and_an_end_time_at_not_after(issuer, aws):
    calls = Calls(aws.iot)
    captured = {}
    aws.iot.meta.events.register("provide-client-params.iot.CreateJob",
                                 lambda params, **_: captured.update(params))
    answer = send(issuer, command="reboot", thing=THING, lifetime_seconds=3 * 3600 + 59)
    assert calls.calls == ["describe_thing", "create_job"]
    assert captured["timeoutConfig"] == {"inProgressTimeoutInMinutes": 30}
    assert captured["jobExecutionsRetryConfig"] == {"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 2}]}
    assert captured["abortConfig"]["criteriaList"][0]["action"] == "CANCEL"
    assert captured["targetSelection"] == "SNAPSHOT"
    # not_after rounded DOWN to the minute: Jobs stops handing it out no later than the device would refuse it
    assert captured["schedulingConfig"] == {"endTime": "2026-12-01T03:00", "endBehavior": "CANCEL"}
    assert answer["not_after"] == int(NOW) + 3 * 3600 + 59


def test_a_short_lived_command_has_no_end_time_and_the_device_refuses_it_once_expired(issuer, aws, trusted):
    captured = {}
    aws.iot.meta.events.register("provide-client-params.iot.CreateJob", lambda params, **_: captured.update(params))
    answer = send(issuer, command="reboot", thing=THING, lifetime_seconds=600)
    assert "schedulingConfig" not in captured  # endTime must be >= 30 minutes ahead (API_SchedulingConfig)
    _, document = job_of(aws, answer["job_id"])
    with pytest.raises(CommandRefused) as late:
        device_accepts(document, trusted, now=NOW + 600)
    assert late.value.reason == commands.EXPIRED


def test_a_group_command_names_the_group_and_only_members_accept_it(issuer, aws, trusted):
    answer = send(issuer, command="reboot", group=GROUP)
    job, document = job_of(aws, answer["job_id"])
    assert job["targets"] == [aws.iot.describe_thing_group(thingGroupName=GROUP)["thingGroupArn"]]
    assert device_accepts(document, trusted, groups=[GROUP])["target"] == {"group": GROUP}
    with pytest.raises(CommandRefused) as outsider:
        device_accepts(document, trusted, thing=OTHER, groups=[])
    assert outsider.value.reason == commands.MISTARGETED


def test_a_document_for_one_thing_is_refused_by_another(issuer, aws, trusted):
    _, document = job_of(aws, send(issuer, command="shutdown", thing=THING)["job_id"])
    with pytest.raises(CommandRefused) as other:
        device_accepts(document, trusted, thing=OTHER)
    assert other.value.reason == commands.MISTARGETED


# --- software update -------------------------------------------------------------------------------

def upload(aws, body: bytes, sha256: str | None = None) -> str:
    digest = sha256 or hashlib.sha256(body).hexdigest()
    aws.s3.put_object(Bucket=ARTIFACTS, Key=command_jobs.artifact_key(digest), Body=body,
                      ChecksumAlgorithm="SHA256")
    return digest


def test_software_update_signs_hash_and_size_and_leaves_the_url_to_jobs(issuer, aws, trusted):
    firmware = b"\x7fELF firmware 2.0" * 100
    digest = upload(aws, firmware)
    captured = {}
    aws.iot.meta.events.register("provide-client-params.iot.CreateJob", lambda params, **_: captured.update(params))
    answer = send(issuer, command="software-update", thing=THING,
                  params={"version": "2.0.0", "sha256": digest, "size": len(firmware)})
    _, document = job_of(aws, answer["job_id"])
    fields = device_accepts(document, trusted)
    assert fields["params"] == {"version": "2.0.0", "sha256": digest, "size": len(firmware)}
    assert document["artifact_url"] == (
        f"${{aws:iot:s3-presigned-url:https://s3.eu-west-1.amazonaws.com/{ARTIFACTS}/artifacts/{digest}}}")
    assert captured["presignedUrlConfig"] == {"roleArn": PRESIGN_ROLE, "expiresInSec": 3600}
    # the URL is outside the signature: rewriting it (as Jobs does) leaves the document valid
    document["artifact_url"] = "https://example-bucket.s3.amazonaws.com/artifacts/x?X-Amz-Signature=abc"
    device_accepts(document, trusted)


@pytest.mark.parametrize("case", ["not uploaded", "wrong size", "too large", "bad hash", "other content"])
def test_software_update_refuses_what_was_not_uploaded_as_signed(issuer, aws, case):
    firmware = b"firmware"
    digest = hashlib.sha256(firmware).hexdigest()
    params = {"version": "2.0.0", "sha256": digest, "size": len(firmware)}
    if case != "not uploaded":
        upload(aws, firmware)
    if case == "wrong size":
        params["size"] = 9
    if case == "too large":
        params["size"] = 2 * 1024 * 1024
    if case == "bad hash":
        params["sha256"] = "XYZ"
    if case == "other content":  # an object stored under a hash that is not its own
        params = {"version": "2.0.0", "sha256": "ab" * 32, "size": len(firmware)}
        upload(aws, firmware, sha256="ab" * 32)
    error = refused(send, issuer, command="software-update", thing=THING, params=params)
    assert error.status == 400
    assert aws.iot.list_jobs()["jobs"] == [] and scan(aws.audit) == []


def test_upload_url_is_presigned_with_the_checksum_and_audited(issuer, aws):
    digest = "0f" * 32
    answer = issuer.upload_url(ADMIN, json.dumps({"sha256": digest, "size": 1000}))
    assert f"/artifacts/{digest}" in answer["upload_url"]
    assert "x-amz-checksum-sha256" in answer["upload_url"].lower() or "checksum" in answer["upload_url"].lower()
    assert answer["headers"] == {"x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(digest)).decode()}
    assert audit_actions(aws) == [("artifact.upload", f"artifact:{digest}")]
    assert refused(issuer.upload_url, ADMIN, json.dumps({"sha256": digest, "size": 2 * 1024 * 1024})).status == 400


# --- remote access ---------------------------------------------------------------------------------

def open_tunnel_answer(tunnels, thing=THING):
    tunnels.stub.add_response(
        "open_tunnel",
        {"tunnelId": "00000000-0000-4000-8000-000000000001",
         "tunnelArn": "arn:aws:iot:eu-west-1:123456789012:tunnel/00000000-0000-4000-8000-000000000001",
         "sourceAccessToken": "SOURCE-SECRET", "destinationAccessToken": "DESTINATION-SECRET"},
        {"description": "Fleetwarden remote access by alice",
         "destinationConfig": {"thingName": thing, "services": ["SSH"]},
         "timeoutConfig": {"maxLifetimeTimeoutMinutes": 30}})


def test_remote_access_opens_an_ssh_tunnel_and_hands_the_source_token_to_the_operator_only(
        issuer, aws, tunnels, trusted, caplog):
    open_tunnel_answer(tunnels)
    answer = send(issuer, command="remote-access", thing=THING)
    tunnels.stub.assert_no_pending_responses()
    assert answer["source_access_token"] == "SOURCE-SECRET"
    _, document = job_of(aws, answer["job_id"])
    fields = device_accepts(document, trusted)
    assert fields["params"] == {"tunnel_id": "00000000-0000-4000-8000-000000000001", "services": ["SSH"],
                                "expires_at": int(NOW) + 30 * 60}
    assert fields["not_after"] == int(NOW) + 30 * 60  # the document lives no longer than the tunnel
    stored = json.dumps(document) + json.dumps(scan(aws.audit), default=str) + caplog.text
    assert "SOURCE-SECRET" not in stored and "DESTINATION-SECRET" not in stored
    assert "DESTINATION-SECRET" not in json.dumps(answer)


def test_remote_access_to_a_group_or_with_params_is_refused(issuer, aws):
    assert refused(send, issuer, command="remote-access", group=GROUP).status == 400
    assert refused(send, issuer, command="remote-access", thing=THING, params={"tunnel_id": "x"}).status == 400


def test_a_tunnel_that_cannot_be_opened_leaves_an_audited_failure_and_no_job(issuer, aws, tunnels):
    tunnels.stub.add_client_error("open_tunnel", service_error_code="LimitExceededException", http_status_code=400)
    error = refused(send, issuer, command="remote-access", thing=THING)
    assert error.status == 502 and "LimitExceededException" in error.message
    assert aws.iot.list_jobs()["jobs"] == []
    assert [a for a, _ in audit_actions(aws)] == ["command.send", "command.send-failed"]


# --- refusals ----------------------------------------------------------------------------------------

def test_non_admins_are_refused_and_the_refusal_is_audited(issuer, aws):
    error = refused(send, issuer, claims=ANALYST, command="reboot", thing=THING)
    assert error.status == 403
    assert aws.iot.list_jobs()["jobs"] == []
    [record] = scan(aws.audit)
    assert (record["action"], record["actor"], record["target"]) == ("command.send-refused", "mallory", f"thing:{THING}")
    for call in (lambda: issuer.list(ANALYST, {"thing": THING}), lambda: issuer.public_key(None),
                 lambda: issuer.upload_url(ANALYST, '{"sha256": "00", "size": 1}')):
        assert refused(call).status == 403


@pytest.mark.parametrize("body, status", [
    ({"command": "format-disk", "thing": THING}, 400),
    ({"command": "reboot"}, 400),
    ({"command": "reboot", "thing": THING, "group": GROUP}, 400),
    ({"command": "reboot", "thing": "SN 0001"}, 400),
    ({"command": "reboot", "thing": THING, "params": {"delay_seconds": 99999}}, 400),
    ({"command": "reboot", "thing": THING, "params": {"delay_seconds": 1.5}}, 400),
    ({"command": "reboot", "thing": THING, "params": {"force": True}}, 400),
    ({"command": "config", "thing": THING, "params": {}}, 400),
    ({"command": "config", "thing": THING, "params": {"desired": {"blob": "x" * 5000}}}, 400),
    ({"command": "reboot", "thing": THING, "lifetime_seconds": 10}, 400),
    ({"command": "reboot", "thing": THING, "lifetime_seconds": 31 * 24 * 3600}, 400),
    ({"command": "reboot", "thing": THING, "extra": 1}, 400),
    ({"command": "reboot", "thing": "SN-9999"}, 404),
    ({"command": "reboot", "group": "no-such-group"}, 404),
])
def test_malformed_requests_and_unknown_targets_are_refused_before_anything_is_written(issuer, aws, body, status):
    assert refused(send, issuer, **body).status == status
    assert aws.iot.list_jobs()["jobs"] == [] and scan(aws.audit) == []


@pytest.mark.parametrize("body", [None, "", "[]", "{", '{"command": "reboot", "command": "shutdown", "thing": "SN-0001"}',
                                  "x" * 10000])
def test_bodies_that_are_not_one_json_object_are_refused(issuer, aws, body):
    assert refused(issuer.send, ADMIN, body).status == 400


def test_if_the_audit_cannot_be_written_no_job_is_created(issuer, aws):
    aws.audit.delete()
    with pytest.raises(ClientError):
        send(issuer, command="reboot", thing=THING)
    assert aws.iot.list_jobs()["jobs"] == []


def test_a_failed_create_job_is_audited_and_can_be_repeated(issuer, aws):
    error = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "CreateJob")
    Calls(aws.iot, fail={"create_job": [error]})
    assert refused(send, issuer, command="reboot", thing=THING).status == 502
    assert [a for a, _ in audit_actions(aws)] == ["command.send", "command.send-failed"]
    answer = send(issuer, command="reboot", thing=THING)  # the operator repeats it
    assert [j["jobId"] for j in aws.iot.list_jobs()["jobs"]] == [answer["job_id"]]


def test_a_create_job_whose_answer_was_lost_is_answered_as_queued(issuer, aws):
    """CreateJob applied, its answer lost (the read timed out): DescribeJob finds the job, so the
    operator is not told to repeat it (tests/faults sweeps every kind of this)."""
    from botocore.exceptions import ReadTimeoutError

    created = aws.iot.create_job  # the real call, then the lost answer

    def create_job(**request):
        created(**request)
        raise ReadTimeoutError(endpoint_url="https://iot.eu-west-1.amazonaws.com")

    issuer.iot = type("LostAnswer", (), {"create_job": staticmethod(create_job),
                                         "describe_job": staticmethod(aws.iot.describe_job),
                                         "describe_thing": staticmethod(aws.iot.describe_thing),
                                         "exceptions": aws.iot.exceptions})()
    answer = send(issuer, command="reboot", thing=THING)
    assert [j["jobId"] for j in aws.iot.list_jobs()["jobs"]] == [answer["job_id"]]
    assert [a for a, _ in audit_actions(aws)] == ["command.send"]


class ExistingJobsRefused:
    """IoT's CreateJob for an id that exists: ResourceAlreadyExistsException ("The resource already exists",
    https://docs.aws.amazon.com/iot/latest/apireference/API_CreateJob.html); moto would overwrite the job."""

    def __init__(self, iot):
        self._iot = iot

    def __getattr__(self, name):
        return getattr(self._iot, name)

    def create_job(self, **request):
        if any(j["jobId"] == request["jobId"] for j in self._iot.list_jobs()["jobs"]):
            raise ClientError({"Error": {"Code": "ResourceAlreadyExistsException",
                                         "Message": "The resource already exists"}}, "CreateJob")
        return self._iot.create_job(**request)


def test_a_request_sent_again_with_its_idempotency_key_finds_its_own_job(issuer, aws):
    """fleetctl re-sends a request once, with the same key, after an indefinite answer (a 5xx when the
    invocation died after CreateJob): the job id comes from the operator and the key, so it is found, not
    queued twice."""
    issuer.iot = ExistingJobsRefused(aws.iot)
    key = "0123456789abcdef0123456789abcdef"
    body = json.dumps({"command": "reboot", "thing": THING})
    first = issuer.send(ADMIN, body, idempotency_key=key)
    again = issuer.send(ADMIN, body, idempotency_key=key)
    assert again["job_id"] == first["job_id"]
    assert [j["jobId"] for j in aws.iot.list_jobs()["jobs"]] == [first["job_id"]]
    # Another request (another key), or the same key from another operator, is another job.
    other = issuer.send(ADMIN, body, idempotency_key="f" * 32)
    colleague = issuer.send({**ADMIN, "cognito:username": "bob"}, body, idempotency_key=key)
    assert len({first["job_id"], other["job_id"], colleague["job_id"]}) == 3
    assert len(aws.iot.list_jobs()["jobs"]) == 3


@pytest.mark.parametrize("key", ["short", "x" * 65, "has space in it 1234", "ünïcode-key-1234567"])
def test_a_malformed_idempotency_key_is_refused_before_anything_is_done(issuer, aws, key):
    error = refused(issuer.send, ADMIN, json.dumps({"command": "reboot", "thing": THING}), idempotency_key=key)
    assert error.status == 400 and "Idempotency-Key" in error.message
    assert aws.iot.list_jobs()["jobs"] == [] and scan(aws.audit) == []


def test_a_kms_failure_writes_nothing(issuer, aws):
    error = ClientError({"Error": {"Code": "KMSInvalidStateException", "Message": "disabled"}}, "Sign")
    Calls(issuer.signer.kms, fail={"sign": [error]})
    with pytest.raises(ClientError):
        send(issuer, command="reboot", thing=THING)
    assert aws.iot.list_jobs()["jobs"] == [] and scan(aws.audit) == []


# --- list, status, cancel, public key ---------------------------------------------------------------

def test_list_status_and_cancel(issuer, aws):
    job_id = send(issuer, command="reboot", thing=THING)["job_id"]
    assert issuer.list(ADMIN, {"thing": THING}) == {"commands": [{"job_id": job_id, "status": "QUEUED"}]}
    assert [c["job_id"] for c in issuer.list(ADMIN, None)["commands"]] == [job_id]
    status = issuer.status(ADMIN, job_id, {"thing": THING})
    assert status["execution"]["status"] == "QUEUED"
    assert issuer.cancel(ADMIN, job_id, '{"reason": "wrong unit"}') == {"job_id": job_id, "status": "CANCELED"}
    assert aws.iot.describe_job(jobId=job_id)["job"]["status"] == "CANCELED"
    assert ("command.cancel", job_id) in audit_actions(aws)
    assert refused(issuer.status, ADMIN, "fw-reboot-" + "0" * 32, None).status == 404
    assert refused(issuer.cancel, ADMIN, "someone-elses-job", None).status == 400


def test_public_key_is_the_pem_whose_hash_is_the_key_id(issuer, aws):
    answer = issuer.public_key(ADMIN)
    assert list(commands.load_public_keys([answer["pem"]])) == [answer["key_id"]]


# --- through the Lambda handler, as API Gateway calls it --------------------------------------------

def api_event(method, resource, body=None, claims=ADMIN, path=None, query=None):
    """An API Gateway REST proxy event behind the Cognito user-pool authoriser."""
    return {"resource": resource, "path": resource, "httpMethod": method,
            "headers": {"Content-Type": "application/json", "Authorization": "eyJraWQiOi..."},
            "multiValueHeaders": {}, "queryStringParameters": query, "multiValueQueryStringParameters": None,
            "pathParameters": path, "stageVariables": None,
            "requestContext": {"resourcePath": resource, "httpMethod": method, "stage": "v1",
                               "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                               "identity": {"sourceIp": "203.0.113.7"}, "authorizer": {"claims": claims}},
            "body": None if body is None else json.dumps(body), "isBase64Encoded": False}


@pytest.fixture
def handler(aws, monkeypatch):
    from commands.issuer import handler as issuer_handler

    for key, value in {"SIGNING_KEY_ARN": aws.key_arn, "AUDIT_TABLE": "fleetwarden-test-audit",
                       "ARTIFACTS_BUCKET": ARTIFACTS, "PRESIGN_ROLE_ARN": PRESIGN_ROLE, "JOB_TIMEOUT_MINUTES": "60",
                       "JOB_RETRY_ATTEMPTS": "2", "PRESIGN_SECONDS": "3600", "DEFAULT_LIFETIME_SECONDS": "86400",
                       "MAX_ARTIFACT_BYTES": "1048576", "TUNNEL_LIFETIME_MINUTES": "60", "ADMIN_GROUP": "admins",
                       "ROTATIONS_TABLE": "fleetwarden-test-rotations", "ROTATION_GRACE_SECONDS": "259200",
                       "AWS_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)
    issuer_handler._issuer.cache_clear()
    yield issuer_handler
    issuer_handler._issuer.cache_clear()


def call(handler, event):
    from tests.helpers import LambdaContext

    response = handler.lambda_handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"]), response["multiValueHeaders"]


def test_the_handler_routes_every_verb(handler, aws, trusted):
    status, body, headers = call(handler, api_event("POST", "/commands", {"command": "reboot", "thing": THING}))
    assert status == 201 and headers["Cache-Control"] == ["no-store"]
    job_id = body["job_id"]
    _, document = job_of(aws, job_id)
    device_accepts(document, trusted, now=time.time())  # the handler signs at the wall clock
    assert call(handler, api_event("GET", "/commands", query={"thing": THING}))[1]["commands"][0]["job_id"] == job_id
    status, body, _ = call(handler, api_event("GET", "/commands/{job_id}", path={"job_id": job_id}, query={"thing": THING}))
    assert status == 200 and body["execution"]["status"] == "QUEUED"
    status, body, _ = call(handler, api_event("POST", "/commands/{job_id}/cancel", {"reason": "test"}, path={"job_id": job_id}))
    assert (status, body["status"]) == (200, "CANCELED")
    status, body, _ = call(handler, api_event("GET", "/public-key"))
    assert status == 200 and list(commands.load_public_keys([body["pem"]])) == [body["key_id"]]
    assert call(handler, api_event("POST", "/commands", {"command": "reboot", "thing": THING}, claims=ANALYST))[0] == 403
    assert call(handler, api_event("DELETE", "/commands"))[0] == 405
    assert call(handler, api_event("GET", "/nowhere"))[0] == 404


def test_the_handler_reads_the_idempotency_key_header_in_any_case(handler, aws):
    event = api_event("POST", "/commands", {"command": "reboot", "thing": THING})
    event["headers"]["idempotency-key"] = "0123456789abcdef0123456789abcdef"  # HTTP header names are caseless
    first, again = call(handler, event)[1], call(handler, json.loads(json.dumps(event)))[1]
    assert first["job_id"] == again["job_id"]
    event["headers"]["idempotency-key"] = "bad key"
    assert call(handler, event)[0] == 400


# --- the public key custom resource ---------------------------------------------------------------

def cfn_event(request_type, key_arn):
    """CloudFormation's custom resource request (crpg-ref-requests.html)."""
    return {"RequestType": request_type, "ResponseURL": "https://cloudformation-custom-resource-response.example/x",
            "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/Fleetwarden-dev-Commands/guid",
            "RequestId": "unique-id", "ResourceType": "Custom::CommandPublicKey", "LogicalResourceId": "PublicKey",
            "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "KeyArn": key_arn}}


def test_the_public_key_resource_answers_the_pem_and_key_id(aws, trusted):
    from commands.public_key.handler import respond

    reply = respond(cfn_event("Create", aws.key_arn), aws.kms)
    assert reply["Status"] == "SUCCESS" and reply["RequestId"] == "unique-id"
    assert list(commands.load_public_keys([reply["Data"]["Pem"]])) == [reply["Data"]["KeyId"]] == list(trusted)
    assert respond(cfn_event("Delete", aws.key_arn), aws.kms)["Status"] == "SUCCESS"
    failed = respond(cfn_event("Update", aws.key_arn.replace(aws.key_arn[-4:], "0000")), aws.kms)
    assert failed["Status"] == "FAILED" and failed["Data"] == {}


# --- retiring a rotated thing's old certificate -------------------------------------------------------

@pytest.fixture
def rotations(aws):
    import boto3

    return boto3.resource("dynamodb", region_name="eu-west-1").create_table(
        TableName="fleetwarden-test-rotations", KeySchema=[{"AttributeName": "thing", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "thing", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")


def rotated(aws, rotations, status="issued", issued_at="2026-11-30T00:00:00.000Z", attached=True):
    from tests.commands.test_rotation import self_signed

    ids = [aws.iot.register_certificate_without_ca(certificatePem=self_signed(THING), status="ACTIVE")["certificateId"]
           for _ in range(2)]
    rotations.put_item(Item={"thing": THING, "old_certificate_id": ids[0], "new_certificate_id": ids[1],
                             "status": status, "issued_at": issued_at, "attached": attached})
    return ids


def cert_status(aws, certificate_id):
    return aws.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]["status"]


def test_an_operator_retires_the_old_certificate_only_after_the_grace_period(aws, issuer, rotations, clock):
    issuer.rotations = rotations
    old, new = rotated(aws, rotations, issued_at="2026-11-30T20:00:00.000Z")  # NOW is 2026-12-01T00:00Z: 4 h
    error = refused(issuer.retire, ADMIN, THING, None)
    assert error.status == 409 and "grace period" in error.message
    assert cert_status(aws, old) == "ACTIVE"
    clock.t = NOW + 72 * 3600
    assert issuer.retire(ADMIN, THING, None) == {"thing": THING, "certificate_id": old, "status": "INACTIVE",
                                                 "kept": new}
    assert cert_status(aws, old) == "INACTIVE" and cert_status(aws, new) == "ACTIVE"
    assert ("certificate.retire", f"thing:{THING}") in audit_actions(aws)


def test_a_confirmed_rotation_old_certificate_can_be_revoked_on_request(aws, issuer, rotations):
    issuer.rotations = rotations
    old, new = rotated(aws, rotations, status="confirmed")
    assert issuer.retire(ADMIN, THING, '{"status": "REVOKED"}')["status"] == "REVOKED"
    assert cert_status(aws, old) == "REVOKED" and cert_status(aws, new) == "ACTIVE"


def test_retire_while_the_new_certificate_is_being_issued_says_so_and_touches_nothing(aws, issuer, rotations):
    issuer.rotations = rotations
    old, new = rotated(aws, rotations, status="issuing")
    error = refused(issuer.retire, ADMIN, THING, None)
    assert error.status == 409 and "still issuing" in error.message
    assert cert_status(aws, old) == "ACTIVE" and cert_status(aws, new) == "ACTIVE"


@pytest.mark.parametrize("body, status", [('{"status": "DELETED"}', 400), ('{"status": "INACTIVE", "x": 1}', 400)])
def test_retire_refuses_bad_requests_unknown_rotations_and_non_admins(aws, issuer, rotations, body, status):
    issuer.rotations = rotations
    assert refused(issuer.retire, ADMIN, THING, None).status == 404  # no rotation recorded
    old, _ = rotated(aws, rotations, status="confirmed")
    assert refused(issuer.retire, ADMIN, THING, body).status == status
    assert refused(issuer.retire, ANALYST, THING, None).status == 403
    assert refused(issuer.retire, ADMIN, "bad thing", None).status == 400
    assert cert_status(aws, old) == "ACTIVE"
