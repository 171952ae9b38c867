"""Names the auto-response handler and its logic share: incident statuses, the outcome of one
message, metric names. No boto3, no pydantic here, so the handler can import it at module load."""

# Final incident statuses (and the outcome of the message that set them).
CONTAINED = "contained"
RECORDED = "recorded"
DRY_RUN = "dry-run"
EXEMPT = "exempt"
UNKNOWN_THING = "unknown-thing"
UNKNOWN_CERTIFICATE = "unknown-certificate"
REPORTED = "reported"  # attribution unproven: recorded and reported, never contained
REPEAT = "repeat"  # the subject is already contained by an open incident: recorded there
PROTECTED = "protected"  # a certificate shared by the fleet (the claim certificate): reported, never contained
# The status while steps remain; never an outcome.
IN_PROGRESS = "in-progress"
# Outcomes of one message that are not incident statuses.
DUPLICATE = "duplicate"
MALFORMED = "malformed"

# Metric names (all Count); the reason dimension, where given, comes from a fixed set.
RECEIVED = "ViolationsReceived"
MALFORMED_METRIC = "ViolationsMalformed"  # reason: not-sns | not-json | invalid
DUPLICATE_METRIC = "ViolationsDuplicate"
RECORDED_METRIC = "ViolationsRecorded"
RESUMED_METRIC = "ContainmentsResumed"
STEP_FAILED_METRIC = "ContainmentStepFailures"  # reason: lookup | quarantine | shutdown_command | certificate | disconnect | repeat | notify
NOT_HANDLED = "ViolationsNotHandled"  # the invocation raised: Lambda retries it, then the on-failure destination
# One per final status of an in-alarm incident.
OUTCOME_METRIC = {
    CONTAINED: "DevicesContained",
    EXEMPT: "ViolationsExempt",
    DRY_RUN: "ViolationsDryRun",
    UNKNOWN_THING: "ViolationsUnknownThing",
    UNKNOWN_CERTIFICATE: "ViolationsUnknownCertificate",
    REPORTED: "ViolationsReportedOnly",
    REPEAT: "ViolationsRepeated",
    PROTECTED: "ViolationsProtectedCertificate",
}
