"""Commands arrive as IoT jobs; each is verified before anything acts on it, and its status is reported.

The device side of the IoT Jobs MQTT API ("Jobs device MQTT API operations",
https://docs.aws.amazon.com/iot/latest/developerguide/jobs-mqtt-api.html, and "Jobs workflow",
jobs-workflow-jobs-online.html):
* subscribe `$aws/things/<thing>/jobs/notify-next` (a NextNotification whenever the first pending execution
  changes: `{"timestamp", "execution": {"jobId", "status", "jobDocument", "versionNumber", ...}}`, no
  `execution` when the queue is empty) and the replies to what it asks;
* on every connection publish `$aws/things/<thing>/jobs/$next/get` (DescribeJobExecution of `$next`): the
  answer on `.../$next/get/accepted` carries the same `execution`, so a job queued while the device was
  offline is picked up on its next connection;
* report with `$aws/things/<thing>/jobs/<jobId>/update` `{"status", "statusDetails", "clientToken"}`, status
  IN_PROGRESS, then SUCCEEDED / FAILED, or REJECTED when the document is refused (the JobExecution statuses,
  "Jobs device MQTT and HTTPS API operations and data types", jobs-mqtt-https-api.html).
"Your client must also confirm that the thingName in the incoming message topic applies to the client's thing
name before the client acts on the message" (jobs-mqtt-api.html): only this thing's topics are handled.

Every document goes through `commands.parse` (duplicate keys and floats refused on the whole message) and
`commands.verify` with the trusted keys, this thing's name and groups, the clock and the on-disk nonce store;
a refusal is reported REJECTED with `statusDetails.reason` = `CommandRefused.reason`. A job that was started
but not finished before the agent stopped is reported FAILED `interrupted` (its nonce is spent: running it
again would look like a replay, and a half-done command is not repeated blindly). A final report IoT Jobs
never received (the connection dropped) is kept in the journal and sent again when the execution is
redelivered.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleetwarden_contracts import commands, topics

from .handlers import Context, HandlerFailed

log = logging.getLogger("fleetwarden_device.jobs")

QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED = "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"
# UpdateJobExecution statusDetails: keys [a-zA-Z0-9:_-]{1,128}, values 1-1024 characters with no control
# characters (API_iot-jobs-data_UpdateJobExecution, "statusDetails").
_DETAIL_KEY = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # CreateJob jobId


def status_details(values: Mapping[str, Any]) -> dict[str, str]:
    details = {}
    for key, value in values.items():
        text = _CONTROL.sub(" ", str(value))[:1024].strip()
        if _DETAIL_KEY.match(key) and text:
            details[key] = text
    return details


class JobRunner:
    def __init__(
        self,
        *,
        thing: str,
        groups: tuple[str, ...],
        trusted_keys: Mapping[str, Any],
        nonces,
        handlers: Mapping[str, Callable],
        context: Context,
        publish: Callable[[str, dict], None],
        clock: Callable[[], float],
        journal: Path,
    ):
        self.thing = thing
        self.groups = groups
        self.trusted_keys = trusted_keys
        self.nonces = nonces
        self.handlers = handlers
        self.context = context
        self.publish = publish
        self.clock = clock
        self.journal = journal  # one file per started job: a restart knows what it was doing
        self.prefix = topics.jobs_prefix(thing)
        self.reported: dict[str, str] = {}  # jobId -> last status this agent reported
        # Final answers are kept as long as a document can live (commands.MAX_LIFETIME_SECONDS), then dropped.
        horizon = clock() - commands.MAX_LIFETIME_SECONDS - commands.CLOCK_SKEW_SECONDS
        for old in journal.glob("*.done") if journal.exists() else ():
            if old.stat().st_mtime < horizon:
                old.unlink(missing_ok=True)

    def subscriptions(self) -> list[str]:
        return [
            f"{self.prefix}/notify-next",
            f"{self.prefix}/$next/get/accepted",
            f"{self.prefix}/$next/get/rejected",
            f"{self.prefix}/+/update/accepted",
            f"{self.prefix}/+/update/rejected",
        ]

    def request_next(self) -> None:
        self.publish(f"{self.prefix}/$next/get", {"clientToken": uuid.uuid4().hex})

    def on_message(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix + "/"):
            return  # not this thing's: never acted on
        rest = topic[len(self.prefix) + 1 :]
        if rest in ("notify-next", "$next/get/accepted"):
            self._execution(payload)
        elif rest.endswith("/rejected"):
            log.warning("jobs API refused a request on %s: %s", topic, payload[:512])

    def _execution(self, payload: bytes) -> None:
        try:
            message = commands.parse(payload)
        except commands.CommandRefused as refused:
            job_id = _job_id_of(payload)
            if job_id:
                self._report(job_id, REJECTED, {"reason": refused.reason, "detail": refused.detail})
            else:
                log.warning("unreadable jobs message refused: %s", refused)
            return
        execution = message.get("execution")
        if not isinstance(execution, dict):
            return  # no pending job
        job_id = execution.get("jobId")
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            log.warning("jobs message without a valid jobId ignored")
            return
        if execution.get("status") not in (QUEUED, IN_PROGRESS) or self.reported.get(job_id) in (
            SUCCEEDED,
            FAILED,
            REJECTED,
        ):
            return  # already finished here (notify-next and $next/get may both announce one job)
        done = self.journal / f"{job_id}.done"
        if (
            done.exists()
        ):  # finished before, but IoT Jobs never got the report (lost with a connection): resend it
            final = json.loads(done.read_text())
            self._report(job_id, final["status"], final["statusDetails"])
            return
        started = self.journal / f"{job_id}.started"
        if started.exists():
            self._report(
                job_id, FAILED, {"reason": "interrupted", "detail": "the agent stopped while running it"}
            )
            return
        document = execution.get("jobDocument")
        try:
            if not isinstance(document, dict):
                raise commands.CommandRefused(commands.MALFORMED, "the job document is not an object")
            fields = commands.verify(
                document.get("command"),
                trusted_keys=self.trusted_keys,
                thing=self.thing,
                groups=self.groups,
                now=self.clock(),
                nonces=self.nonces,
            )
        except commands.CommandRefused as refused:
            log.warning("job %s refused: %s", job_id, refused)
            self._report(job_id, REJECTED, {"reason": refused.reason, "detail": refused.detail})
            return
        self.journal.mkdir(parents=True, exist_ok=True)
        started.write_text(fields["nonce"])
        self._report(job_id, IN_PROGRESS, {"command": fields["command"], "issuer": fields["issuer"]})
        handler = self.handlers.get(fields["command"])
        try:
            if handler is None:
                raise HandlerFailed("not-supported", f"this device has no handler for {fields['command']}")
            details = handler(fields, document, self.context) or {}
            self._report(job_id, SUCCEEDED, {"command": fields["command"], **details})
        except HandlerFailed as failure:
            log.warning("job %s failed: %s", job_id, failure)
            self._report(job_id, FAILED, {"reason": failure.reason, "detail": failure.detail})
        except Exception as error:  # a handler bug must still end the job, not leave it IN_PROGRESS
            log.exception("job %s: handler error", job_id)
            self._report(job_id, FAILED, {"reason": "handler-error", "detail": type(error).__name__})
        finally:
            started.unlink(missing_ok=True)

    def _report(self, job_id: str, status: str, details: Mapping[str, Any]) -> None:
        self.reported[job_id] = status
        details = status_details(details)
        if status != IN_PROGRESS:  # kept, so a redelivered execution gets the same answer, never a second run
            self.journal.mkdir(parents=True, exist_ok=True)
            (self.journal / f"{job_id}.done").write_text(
                json.dumps({"status": status, "statusDetails": details})
            )
        self.publish(
            f"{self.prefix}/{job_id}/update",
            {"status": status, "statusDetails": details, "clientToken": uuid.uuid4().hex},
        )
        if status != IN_PROGRESS:
            self.request_next()


def _job_id_of(payload: bytes) -> str | None:
    """The jobId of a message `commands.parse` refused, read leniently only to address the REJECTED report."""
    try:
        execution = json.loads(payload).get("execution", {})
        job_id = execution.get("jobId")
    except (ValueError, AttributeError):
        return None
    return job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None
