"""The shutdown-command seam of containment.

Today there is no command capability, so the step is recorded as `skipped:not-available`. When
signed jobs arrive, replace `queue_shutdown_command` (same signature): return "queued" once the
job exists (creating it must be idempotent per incident, e.g. a job id derived from the violation
id, because a retried containment calls it again until the step is recorded as done), or raise
botocore's ClientError to fail the step so Lambda retries it.
"""

from __future__ import annotations

from typing import Any

NOT_AVAILABLE = "not-available"
QUEUED = "queued"


def queue_shutdown_command(thing: str, iot: Any, *, incident_id: str | None = None) -> str:
    """Queue a signed shutdown command for `thing`; returns QUEUED or a reason it was not queued."""
    del thing, iot, incident_id  # no command capability yet
    return NOT_AVAILABLE
