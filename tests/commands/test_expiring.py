"""The daily rotation starter: audit findings of DEVICE_CERTIFICATE_EXPIRING_CHECK become signed
rotate-certificate jobs for this stage's devices, once per certificate and thing.

moto has no Device Defender audit: ListAuditFindings is answered by botocore's Stubber (on a client of its
own) with the documented response shape (https://docs.aws.amazon.com/iot/latest/apireference/
API_ListAuditFindings.html); every other call goes to moto."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from commands.expiring.start import CHECK, RotationStarter
from shared import commands
from shared.command_jobs import JobSettings, KmsSigner
from tests.commands.conftest import NOW, OTHER, REGION, THING
from tests.commands.test_rotation import POLICY, self_signed
from tests.helpers import Calls, Clock, scan


def finding(certificate_id, n=1):
    return {"findingId": f"f-{n}", "taskId": "t-1", "checkName": CHECK, "severity": "MEDIUM",
            "nonCompliantResource": {"resourceType": "DEVICE_CERTIFICATE",
                                     "resourceIdentifier": {"deviceCertificateId": certificate_id}},
            "reasonForNonCompliance": "Certificate is expiring", "reasonForNonComplianceCode": "CERTIFICATE_EXPIRING"}


@pytest.fixture
def starter(aws):
    aws.iot.create_policy(policyName=POLICY, policyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
    certs = {}
    for thing, policy in ((THING, POLICY), (OTHER, None)):
        cert = aws.iot.register_certificate_without_ca(certificatePem=self_signed(thing), status="ACTIVE")
        aws.iot.attach_thing_principal(thingName=thing, principal=cert["certificateArn"])
        if policy:
            aws.iot.attach_policy(policyName=policy, target=cert["certificateArn"])
        certs[thing] = cert["certificateId"]
    audit_iot = boto3.client("iot", region_name=REGION)
    with Stubber(audit_iot) as stub:
        run = RotationStarter(iot=aws.iot, audit_iot=audit_iot, signer=KmsSigner(aws.kms, aws.key_arn),
                              audit_table=aws.audit, device_policy_name=POLICY,
                              thing_arn_prefix="arn:aws:iot:eu-west-1:123456789012:thing/",
                              jobs=JobSettings(timeout_minutes=60, retry_attempts=0), lifetime_seconds=7 * 24 * 3600,
                              now=Clock(NOW))
        yield run, stub, certs


def expect_findings(stub, *findings):
    stub.add_response("list_audit_findings", {"findings": list(findings)},
                      {"checkName": CHECK, "listSuppressedFindings": False, "startTime": ANY, "endTime": ANY})


def test_an_expiring_certificate_starts_a_signed_rotation_job_once(aws, starter, trusted):
    run, stub, certs = starter
    expect_findings(stub, finding(certs[THING]))
    assert run.run()["started"] == [f"{THING}:started"]
    [execution] = aws.iot.list_job_executions_for_thing(thingName=THING)["executionSummaries"]
    document = json.loads(aws.iot.get_job_document(jobId=execution["jobId"])["document"])["command"]
    fields = commands.verify(document, trusted_keys=trusted, thing=THING, now=NOW + 1)
    assert fields["command"] == "rotate-certificate" and fields["issuer"] == "daily-audit"
    assert [r["action"] for r in scan(aws.audit)] == ["certificate.rotation-started"]
    # The same finding the next day: the job id is the same, and CreateJob answers as the docs say for an
    # existing id ("ResourceAlreadyExistsException", API_CreateJob.html Errors; moto overwrites instead).
    expect_findings(stub, finding(certs[THING]))
    exists = ClientError({"Error": {"Code": "ResourceAlreadyExistsException", "Message": "exists"}}, "CreateJob")
    calls = Calls(aws.iot, fail={"create_job": [exists]})
    assert run.run() == {"started": [], "skipped": [f"{THING}:already-started"]}
    assert calls.calls.count("create_job") == 1 and len(scan(aws.audit)) == 1
    assert len(aws.iot.list_job_executions_for_thing(thingName=THING)["executionSummaries"]) == 1
    stub.assert_no_pending_responses()


def test_other_stages_inactive_and_unknown_certificates_get_no_job(aws, starter):
    run, stub, certs = starter
    aws.iot.update_certificate(certificateId=certs[THING], newStatus="INACTIVE")
    no_id = {**finding("x"), "nonCompliantResource": {"resourceType": "CA_CERTIFICATE", "resourceIdentifier": {}}}
    expect_findings(stub, finding(certs[THING]), finding(certs[OTHER], 2), finding("f" * 64, 3), no_id)
    assert run.run() == {"started": [], "skipped": [
        f"{certs[THING]}:not-active", f"{certs[OTHER]}:other-stage", f"{'f' * 64}:no-certificate"]}
    assert aws.iot.list_jobs()["jobs"] == []
