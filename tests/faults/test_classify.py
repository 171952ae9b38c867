"""The sweep's judge: each outcome from a hand-made clean run and faulted run, so the sweep's
verdicts rest on tested rules."""

from __future__ import annotations

from tests.faults.sweep import (
    DOUBLE, HARMLESS, LOST, RECORDED, STRANDED, WRONG, AsyncInvoke, Delivery, Run, Scenario, Synchronous, classify,
)

CLEAN = Run(calls=["dynamodb.put_item"], delivery=Delivery(results=[{}]), state={"items": ["a"], "copies": ["m"]},
            stranded=None, fired=False)
LOGGED = ["log: something failed; it will be retried"]


def scenario(source, **tolerated) -> Scenario:
    return Scenario(function="f", source=source, world=None, event=None, invoke=None, state=None,
                    tolerated=tolerated)


def faulted(state, results=("raised", {}), *, parked=(), told_failure=False, first_state=None, stranded=None,
            signals=LOGGED, attempts=1) -> Run:
    delivery = Delivery(results=list(results), parked=list(parked), told_failure=told_failure,
                        first_state=first_state)
    return Run(["dynamodb.put_item"], delivery, state, stranded, True, attempts, list(signals))


ASYNC, SYNC = AsyncInvoke("SNS"), Synchronous("API", ok=lambda answer: True)


def test_the_same_end_state_converged():
    assert classify(scenario(ASYNC), CLEAN, faulted(CLEAN.state), "lost")[0] == "converged"


def test_a_missing_effect_is_lost_unless_parked():
    assert classify(scenario(ASYNC), CLEAN, faulted({"items": [], "copies": ["m"]}), "lost")[0] == LOST
    parked = faulted({"items": [], "copies": ["m"]}, parked=[{}])
    assert classify(scenario(ASYNC), CLEAN, parked, "lost")[0] == RECORDED


def test_an_extra_effect_is_double_unless_declared_harmless_with_a_reason():
    twice = faulted({"items": ["a"], "copies": ["m", "m"]})
    assert classify(scenario(ASYNC), CLEAN, twice, "lost")[0] == DOUBLE
    assert classify(scenario(ASYNC, copies=(HARMLESS, "deduplicated by id")), CLEAN, twice, "lost") == (
        HARMLESS, "deduplicated by id")


def test_a_state_no_retry_finishes_is_stranded():
    assert classify(scenario(ASYNC), CLEAN, faulted(CLEAN.state, stranded="left in-progress"), "dies")[0] == STRANDED


def test_a_failure_answer_without_a_log_line_is_lost_even_if_the_retry_converged():
    silent = faulted(CLEAN.state, results=({"statusCode": 500}, {}), told_failure=True, signals=["metric: X"])
    assert classify(scenario(SYNC), CLEAN, silent, "lost")[0] == LOST
    # an invocation that raised or died is logged by the Lambda runtime
    assert classify(scenario(ASYNC), CLEAN, faulted(CLEAN.state, signals=[]), "lost")[0] == "converged"
    assert classify(scenario(SYNC), CLEAN, faulted(CLEAN.state, results=("died", {}), told_failure=True,
                                                   signals=[]), "dies")[0] == "converged"


def test_a_synchronous_success_answer_over_a_different_state_is_a_wrong_answer():
    assert classify(scenario(SYNC), CLEAN, faulted({"items": [], "copies": ["m"]}, results=({},)), "lost")[0] == WRONG


def test_a_failure_answer_for_work_the_re_sent_request_did_is_a_wrong_answer():
    told = faulted(CLEAN.state, results=({}, {}), told_failure=True, first_state=CLEAN.state, attempts=2)
    assert classify(scenario(SYNC), CLEAN, told, "resent")[0] == WRONG
    # under `lost` the function could not know: failing closed is right
    assert classify(scenario(SYNC), CLEAN, told, "lost")[0] == "converged"


# --- the custom resource's source: Lambda retries the invocation, CloudFormation reads the response ---

def _custom_resource_run(answers):
    """Deliver a Create whose invocations answer (the Status PUT) or fail as `answers` says, in order."""
    from tests.faults.injector import InvocationDied
    from tests.faults.sweep import CustomResource

    seen, waited = [], []

    def invoke(event):
        seen.append(event["RequestId"])
        outcome = answers.pop(0)
        if outcome == "raised":
            raise TimeoutError("the response PUT timed out")
        if outcome == "died":
            raise InvocationDied("timed out")
        return outcome

    event = {"RequestId": "r-1", "ResponseURL": "https://bucket/stack%7CPublicKey%7Cr-1?sig"}
    delivery = CustomResource().deliver(invoke, event, waited.append)
    return delivery, seen, waited


def test_a_custom_resource_answered_success_is_one_invocation():
    delivery, seen, _ = _custom_resource_run(["SUCCESS"])
    assert seen == ["r-1"] and not delivery.told_failure and not delivery.parked


def test_lambda_retries_a_custom_resource_invocation_that_raised_or_died():
    delivery, seen, waited = _custom_resource_run(["raised", "died", "SUCCESS"])
    assert seen == ["r-1"] * 3 and waited == [60, 120] and not delivery.told_failure


def test_a_failed_deployment_is_deployed_again_as_a_new_request():
    delivery, seen, _ = _custom_resource_run(["FAILED", "SUCCESS"])
    assert seen == ["r-1", "r-1-redeploy"] and delivery.told_failure and not delivery.parked
    # no response after Lambda's retries: CloudFormation fails the operation at ServiceTimeout; deployed again
    delivery, seen, _ = _custom_resource_run(["raised", "raised", "raised", "SUCCESS"])
    assert seen == ["r-1"] * 3 + ["r-1-redeploy"] and delivery.told_failure
