"""Daily: a device whose certificate the Device Defender audit found expiring gets a signed
`rotate-certificate` job, so it starts a rotation (cmd/<thing>/certs/request) before the old
certificate stops working.

The findings are read with ListAuditFindings for the check DEVICE_CERTIFICATE_EXPIRING_CHECK over the
last day ("You must specify either the startTime and endTime or the taskId, but not both",
https://docs.aws.amazon.com/iot/latest/apireference/API_ListAuditFindings.html); each finding names the
certificate in `nonCompliantResource.resourceIdentifier.deviceCertificateId` ("ResourceIdentifier",
API_ResourceIdentifier.html). Only ACTIVE certificates carrying this stage's device policy count
(audit findings are account-wide; another stage's devices trust another key), and each of the
certificate's things gets one job whose id is derived from the certificate and thing, so a finding
repeated on later days (until the rotation is confirmed) makes no second job. Each started rotation is
audited (actor `daily-audit`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from shared import audit
from shared.command_jobs import JobSettings, KmsSigner, job_request, new_job_id, sign_command

CHECK = "DEVICE_CERTIFICATE_EXPIRING_CHECK"
ACTOR = "daily-audit"
DAY_SECONDS = 24 * 3600
STARTED_METRIC = "RotationsStarted"
_quiet = logging.getLogger(__name__)


class RotationStarter:
    def __init__(self, *, iot: Any, signer: KmsSigner, audit_table: Any, device_policy_name: str,
                 thing_arn_prefix: str, jobs: JobSettings, lifetime_seconds: int, now: Callable[[], float],
                 count: Callable[..., None] = lambda *a, **k: None, logger: Any = _quiet, audit_iot: Any = None):
        """`audit_iot`: the client that reads audit findings (default `iot`; a separate one in tests)."""
        self.iot, self.signer, self.audit_table = iot, signer, audit_table
        self.audit_iot = audit_iot or iot
        self.device_policy_name, self.thing_arn_prefix = device_policy_name, thing_arn_prefix
        self.jobs, self.lifetime_seconds, self.now, self.count, self.log = jobs, lifetime_seconds, now, count, logger

    def run(self, window_seconds: int = DAY_SECONDS) -> dict[str, list[str]]:
        from datetime import datetime, timezone

        end = self.now()
        pages = self.audit_iot.get_paginator("list_audit_findings").paginate(
            checkName=CHECK, listSuppressedFindings=False,
            startTime=datetime.fromtimestamp(end - window_seconds, tz=timezone.utc),
            endTime=datetime.fromtimestamp(end, tz=timezone.utc))
        started, skipped = [], []
        for page in pages:
            for finding in page.get("findings", []):
                certificate_id = ((finding.get("nonCompliantResource") or {}).get("resourceIdentifier") or {}) \
                    .get("deviceCertificateId")
                if not certificate_id:
                    continue
                for thing, outcome in self._start(certificate_id, finding.get("findingId", "")):
                    (started if outcome == "started" else skipped).append(f"{thing}:{outcome}")
        return {"started": started, "skipped": skipped}

    def _start(self, certificate_id: str, finding_id: str) -> list[tuple[str, str]]:
        try:
            description = self.iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
        except self.iot.exceptions.ResourceNotFoundException:
            return [(certificate_id, "no-certificate")]
        if description.get("status") != "ACTIVE":
            return [(certificate_id, "not-active")]
        arn = description["certificateArn"]
        policies = {p["policyName"] for p in self.iot.list_attached_policies(target=arn).get("policies", [])}
        if self.device_policy_name not in policies:
            return [(certificate_id, "other-stage")]
        results = []
        for thing in self.iot.list_principal_things(principal=arn).get("things", []):
            now = self.now()
            signed = sign_command(self.signer, command="rotate-certificate", params={"reason": "certificate expiring"},
                                  issuer=ACTOR, lifetime_seconds=self.lifetime_seconds, now=now, thing=thing)
            job_id = new_job_id("rotate-certificate", seed=f"expiring:{certificate_id}:{thing}")
            try:
                self.iot.create_job(**job_request(job_id=job_id, target_arn=f"{self.thing_arn_prefix}{thing}",
                                                  signed=signed, settings=self.jobs, now=now))
                started = True
            except self.iot.exceptions.ResourceAlreadyExistsException:
                started = False
            # One record per job (its id derived from the job id), written whether the job is new or was
            # found: an earlier run whose CreateJob answer was lost, or that died before this record,
            # would otherwise leave a job nobody audited (the fault sweep, tests/faults, found it).
            audit.record(self.audit_table, action="certificate.rotation-started", actor=ACTOR, target=thing,
                         details={"certificate_id": certificate_id, "job_id": job_id, "finding_id": finding_id or "-"},
                         now=self.now, logger=self.log, event_id=f"rotation-started:{job_id}")
            if started:
                self.count(STARTED_METRIC)
            results.append((thing, "started" if started else "already-started"))
        return results
