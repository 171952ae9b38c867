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
