"""The sweep: run a scenario clean, then once per (call, fault kind), replay the event as its
source retries it, and compare the world with the clean run's.

A scenario (see scenarios.py) says how to build the world the stack creates (inside mock_aws),
the event exactly as its source delivers it, how to invoke the handler, how to read the world's
state back, and which Source delivers it. A new function joins with one Scenario entry.

Outcomes (the issue's words):
  converged     the final state equals the clean run's (a caller told of a failure re-sent its request);
  recorded      the event is parked where its source puts failures (DLQ, on-failure destination) and
                the state says what is missing; redriving it completes the work;
  double, harmless  an effect twice that the scenario declares harmless, with its reason (the
                receiver deduplicates on a key the function sends);
  lost / double / stranded / wrong answer  defects: the sweep fails on any.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto import mock_aws

from tests.helpers import captured_logs
from tests.faults.injector import RESENT, KINDS, Fault, Injector, InvocationDied, moto_served_by, no_backoff

CONVERGED, RECORDED, HARMLESS = "converged", "recorded", "double, harmless"
LIMIT = "double, known limit"  # declared per (call, kind) by its scenario, with the reason; README, Reliability
LOST, DOUBLE, STRANDED, WRONG = "lost", "double", "stranded", "wrong answer"
DEFECTS = frozenset({LOST, DOUBLE, STRANDED, WRONG})
REGION = "eu-west-1"


# ---- how each source delivers an event, and retries it ------------------------------------------


@dataclass
class Delivery:
    """What the source saw: each invocation's result ('ok', 'raised', 'died' or the answer) and
    whether the event (or some of its items) ended parked in the source's failure destination."""

    results: list[Any] = field(default_factory=list)
    parked: list[Any] = field(default_factory=list)
    told_failure: bool = False  # a synchronous caller was answered with a failure
    first_state: dict[str, list[str]] | None = None  # the world as the failure answer left it


def _invoke(invoke: Callable[[Any], Any], event: Any) -> tuple[str, Any]:
    try:
        return "answered", invoke(event)
    except InvocationDied:
        return "died", None
    except Exception as exc:  # noqa: BLE001 - the source sees a function error
        return "raised", exc


@dataclass(frozen=True)
class Synchronous:
    """API Gateway, the IoT provisioning hook, `aws lambda invoke`: nothing retries for the caller
    ("When you invoke a function directly ... Lambda does not automatically retry": "Understanding
    retry behavior in Lambda", https://docs.aws.amazon.com/lambda/latest/dg/invocation-retries.html).
    The answer must say failure when the work was not done; a caller told so re-sends its request
    once (`ok(answer)` reads the answer)."""

    name: str
    ok: Callable[[Any], bool]

    def deliver(self, invoke: Callable[[Any], Any], event: Any, time_passes: Callable[[float], None],
                snapshot: Callable[[], dict[str, list[str]]]) -> Delivery:
        delivery = Delivery()
        how, answer = _invoke(invoke, event)
        delivery.results.append(answer if how == "answered" else how)
        if how == "answered" and self.ok(answer):
            return delivery
        delivery.told_failure = True  # an error answer, a 5xx (raised), or a timeout (died)
        delivery.first_state = snapshot()
        time_passes(30)
        how, answer = _invoke(invoke, event)
        delivery.results.append(answer if how == "answered" else how)
        return delivery


@dataclass(frozen=True)
class SqsPartialBatch:
    """SQS event source mapping with ReportBatchItemFailures: the items reported failed (all of them
    if the invocation raised or died) come back after the visibility timeout with their receive
    count + 1; after `max_receives` they go to the DLQ ("Handling errors for an SQS event source in
    Lambda", https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html)."""

    visibility_seconds: float
    max_receives: int
    name: str = "SQS (partial batch)"

    def deliver(self, invoke: Callable[[Any], Any], event: Any, time_passes: Callable[[float], None]) -> Delivery:
        delivery = Delivery()
        records = event["Records"]
        for receive in range(1, self.max_receives + 1):
            batch = {**event, "Records": [_received(r, receive) for r in records]}
            how, answer = _invoke(invoke, batch)
            delivery.results.append(answer if how == "answered" else how)
            if how == "answered":
                failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
                records = [r for r in records if r["messageId"] in failed]
            if not records:
                return delivery
            time_passes(self.visibility_seconds)
        delivery.parked = records
        return delivery


def _received(record: dict, count: int) -> dict:
    record = copy.deepcopy(record)
    record.setdefault("attributes", {})["ApproximateReceiveCount"] = str(count)
    return record


@dataclass(frozen=True)
class AsyncInvoke:
    """Asynchronous invocation (SNS, CloudWatch Logs subscriptions): a function error or a dead
    invocation is retried with the same event, `retries` times (1 minute, then 2 minutes later),
    then the event goes to the on-failure destination ("How Lambda handles errors and retries with
    asynchronous invocation", https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html).
    A dead invocation (timeout) is a function error there too."""

    name: str
    retries: int = 2

    def deliver(self, invoke: Callable[[Any], Any], event: Any, time_passes: Callable[[float], None]) -> Delivery:
        return _whole_event_retried(invoke, event, self.retries, lambda attempt: 60 * (attempt + 1), time_passes)


@dataclass(frozen=True)
class KinesisBatch:
    """Kinesis event source mapping (tumbling window): an error or a dead invocation retries the
    same batch with the same previous state, `retries` times (no bisect: `bisect`=False as the
    stack configures it), then the batch's metadata goes to the on-failure destination (event source
    mappings that read from streams "retry the entire batch": "Understanding retry behavior in
    Lambda", https://docs.aws.amazon.com/lambda/latest/dg/invocation-retries.html)."""

    retries: int
    bisect: bool = False
    name: str = "Kinesis (tumbling window)"

    def deliver(self, invoke: Callable[[Any], Any], event: Any, time_passes: Callable[[float], None]) -> Delivery:
        assert not self.bisect, "a bisecting Kinesis source is not modelled: add it here"
        return _whole_event_retried(invoke, event, self.retries, lambda attempt: 1, time_passes)


def _whole_event_retried(invoke: Callable[[Any], Any], event: Any, retries: int, pause: Callable[[int], float],
                         time_passes: Callable[[float], None]) -> Delivery:
    """The same event again after each error or dead invocation, `retries` times, then parked on failure."""
    delivery = Delivery()
    for attempt in range(retries + 1):
        how, answer = _invoke(invoke, event)
        delivery.results.append(answer if how == "answered" else how)
        if how == "answered":
            return delivery
        time_passes(pause(attempt))
    delivery.parked = [event]
    return delivery


@dataclass(frozen=True)
class FirehoseTransform:
    """Firehose data transformation: a failed invocation is retried (3 times by default), then its
    records are delivered to the processing-failed error prefix ("Handle failure in data
    transformation", https://docs.aws.amazon.com/firehose/latest/dev/data-transformation-failure-handling.html)."""

    retries: int = 3
    name: str = "Firehose transform"

    def deliver(self, invoke: Callable[[Any], Any], event: Any, time_passes: Callable[[float], None]) -> Delivery:
        return KinesisBatch(self.retries).deliver(invoke, event, time_passes)


@dataclass(frozen=True)
class CustomResource:
    """A Lambda-backed custom resource (AWS::CloudFormation::CustomResource whose ServiceToken is the
    function itself; no provider framework): "CloudFormation invokes your Lambda function
    asynchronously with an event that includes a callback URL" ("Using AWS Lambda with
    CloudFormation", https://docs.aws.amazon.com/lambda/latest/dg/services-cloudformation.html), so a
    function error or a dead invocation is retried by Lambda as any asynchronous event (AsyncInvoke:
    twice). CloudFormation itself never re-sends the request: it reads the response PUT to the
    presigned ResponseURL, and a FAILED one, or none before ServiceTimeout (default 3600 s), fails the
    stack operation ("CloudFormation custom resource request and response reference",
    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref.html), which rolls back.
    The operator then deploys again: a new Create (new RequestId, new ResponseURL), delivered the same
    way. `invoke` returns the Status the function PUT for the request (None if it sent none)."""

    name: str = "CloudFormation custom resource (Create)"
    retries: int = 2

    def deliver(self, invoke: Callable[[Any], Any], event: Any, time_passes: Callable[[float], None]) -> Delivery:
        delivery = Delivery()
        for deployment in range(2):
            request = event if deployment == 0 else {
                **event, "RequestId": f"{event['RequestId']}-redeploy",
                "ResponseURL": event["ResponseURL"].replace(event["RequestId"], f"{event['RequestId']}-redeploy")}
            status = None
            for attempt in range(self.retries + 1):
                how, answer = _invoke(invoke, request)
                delivery.results.append(answer if how == "answered" else how)
                if how == "answered":
                    status = answer
                    break
                time_passes(60 * (attempt + 1))
            if status == "SUCCESS":
                return delivery
            delivery.told_failure = True  # FAILED, or no response by ServiceTimeout: the deployment failed
        delivery.parked = [event]  # failed twice: the operator reads the stack events
        return delivery


# ---- scenarios and runs ---------------------------------------------------------------------------


@dataclass
class Scenario:
    """One function fed by one event source. `world()` builds, inside mock_aws, what the stack
    creates and returns a handle; `event(world)` is the event as the source delivers it;
    `invoke(world, event)` calls the handler; `state(world)` reads back every effect as
    {effect: [canonical text, ...]} with volatile fields (ids, times) removed; `stranded(world)`
    names a state no retry will finish, if any; `time_passes(world, seconds)` moves the clocks
    the function's leases and locks read; `tolerated` maps an effect to the outcome an extra copy
    of it is (RECORDED: a record of an attempt; HARMLESS: say where the reader deduplicates) and why."""

    function: str
    source: Any
    world: Callable[[Injector], Any]
    event: Callable[[Any], Any]
    invoke: Callable[[Any, Any], Any]
    state: Callable[[Any], dict[str, list[str]]]
    stranded: Callable[[Any], str | None] = lambda world: None
    time_passes: Callable[[Any, float], None] = lambda world, seconds: None
    tolerated: dict[str, tuple[str, str]] = field(default_factory=dict)
    # (call, kind) -> why a double there cannot be prevented by the function (a known, documented limit)
    limits: dict[tuple[str, str], str] = field(default_factory=dict)
    fakes: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    teardown: Callable[[Any], None] = lambda world: None

    @property
    def name(self) -> str:
        return f"{self.function} <- {self.source.name}"


@dataclass
class Run:
    calls: list[str]
    delivery: Delivery
    state: dict[str, list[str]]
    stranded: str | None
    fired: bool
    attempts: int = 0  # HTTP attempts of the faulted call (2: botocore re-sent it)
    signals: list[str] = field(default_factory=list)  # warning/error log lines and metrics emitted


def signals(output: str) -> list[str]:
    """What an operator would see of a run: its WARNING/ERROR log messages and the metrics it emitted
    (Powertools writes both as JSON lines)."""
    seen = []
    for line in output.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            seen.append(f"log: {doc.get('message')}")
        for directive in (doc.get("_aws") or {}).get("CloudWatchMetrics", []):
            seen += [f"metric: {m['Name']}" for m in directive.get("Metrics", []) if doc.get(m["Name"])]
    return seen


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


_session: boto3.Session | None = None


def _shared_session(injector: Injector) -> boto3.Session:
    """One boto3 session for the whole sweep (building service models per run costs more than the
    runs), with the injector's hooks on it; moto resets boto3's default session when it starts."""
    global _session
    if _session is None:
        _session = boto3.Session(region_name=REGION)
        injector.install(_session._session)
    return _session


INJECTOR = Injector()


@functools.cache
def client(service: str) -> Any:
    """A client of the sweep's session, for building and reading worlds (clients are the slow part
    of a run; they hold no state of moto's, so one per service serves every run)."""
    return _shared_session(INJECTOR).client(service)


@functools.cache
def resource(service: str) -> Any:
    return _shared_session(INJECTOR).resource(service)


def run(scenario: Scenario, fault: Fault | None) -> Run:
    injector = INJECTOR
    injector.fakes = scenario.fakes
    output = io.StringIO()  # the handlers' log lines and EMF metrics: one run's, read by `state`
    with mock_aws(), moto_served_by(injector), no_backoff(), contextlib.redirect_stdout(output):
        boto3.DEFAULT_SESSION = _shared_session(injector)
        injector.arm(None)
        world = scenario.world(injector)
        world.output = output
        try:
            event = scenario.event(world)
            injector.arm(fault)
            def snapshot() -> dict[str, list[str]]:
                with injector.paused():  # reading the world back is not the function's call
                    return scenario.state(world)

            with captured_logs(world.handler.logger) as logs:  # bound to the real stdout at import
                extra = {"snapshot": snapshot} if isinstance(scenario.source, Synchronous) else {}
                delivery = scenario.source.deliver(lambda e: scenario.invoke(world, e), event,
                                                   lambda seconds: scenario.time_passes(world, seconds), **extra)
            calls, fired, attempts = list(injector.calls), injector.fired, injector.attempts
            injector.arm(None)
            return Run(calls, delivery, scenario.state(world), scenario.stranded(world), fired, attempts,
                       signals(logs.getvalue() + output.getvalue()))
        finally:
            injector.arm(None)
            scenario.teardown(world)
            boto3.DEFAULT_SESSION = None  # the sweep's session (with its hooks) stays the sweep's


def _diff(want_state: dict[str, list[str]], got_state: dict[str, list[str]]) -> tuple[list[str], list[tuple[str, str]]]:
    missing, extra = [], []
    for effect in sorted(set(want_state) | set(got_state)):
        want, got = Counter(want_state.get(effect, [])), Counter(got_state.get(effect, []))
        missing += [f"{effect}: {k}" for k in (want - got)]
        extra += [(effect, k) for k in (got - want)]
    return missing, extra


def classify(scenario: Scenario, clean: Run, faulted: Run, kind: str) -> tuple[str, str]:
    """The outcome of a faulted run against the clean one, and a short reason."""
    if faulted.stranded:
        return STRANDED, faulted.stranded
    results = faulted.delivery.results
    # An invocation that raised or died is logged by the Lambda runtime and counted in its Errors
    # metric; a failure the function ANSWERS (a 5xx, a denial, ok: false) must say so itself.
    answered_failure = faulted.delivery.told_failure and results[0] not in ("raised", "died")
    if answered_failure and not any(s.startswith("log: ") for s in faulted.signals):
        return LOST, "a failure left no warning or error log line"  # principle 4: nothing silent
    missing, extra = _diff(clean.state, faulted.state)
    delivery = faulted.delivery
    synchronous = isinstance(scenario.source, Synchronous)
    if synchronous and not delivery.told_failure and (missing or extra):
        return WRONG, f"answered success, yet {(missing or [e for _, e in extra])[0]}"[:160]
    if synchronous and delivery.told_failure and kind == RESENT and faulted.attempts > 1 \
            and delivery.first_state == clean.state:
        # The function had the answer (its own write, re-sent by botocore) and called it a failure.
        return WRONG, "answered failure, yet the work was done"
    if missing:
        if delivery.parked:
            return RECORDED, f"parked in the failure destination; missing {missing[0]}"[:160]
        return LOST, missing[0][:160]
    defects = [f"{effect}: {text}" for effect, text in extra if effect not in scenario.tolerated]
    if defects:
        return DOUBLE, defects[0][:160]
    if extra:
        outcome, reason = scenario.tolerated[extra[0][0]]
        return outcome, reason[:160]
    if delivery.parked:
        return RECORDED, "parked in the failure destination with nothing missing"
    return CONVERGED, ""


@dataclass
class Row:
    function: str
    source: str
    call: int
    name: str
    kind: str
    outcome: str
    detail: str


def sweep(scenario: Scenario, kinds: tuple[str, ...] = KINDS) -> tuple[Run, list[Row]]:
    """The clean run, then one run per (call, kind) of it."""
    clean = run(scenario, None)
    assert not any(r in ("raised", "died") for r in clean.delivery.results), f"{scenario.name}: clean run failed"
    assert not clean.stranded and not clean.delivery.parked and not clean.delivery.told_failure, scenario.name
    rows = []
    for i, name in enumerate(clean.calls):
        for kind in kinds:
            faulted = run(scenario, Fault(i, kind))
            assert faulted.fired, f"{scenario.name}: call {i} ({name}) was not reached under {kind}"
            outcome, detail = classify(scenario, clean, faulted, kind)
            if outcome == DOUBLE and (name, kind) in scenario.limits:
                outcome, detail = LIMIT, scenario.limits[(name, kind)]
            rows.append(Row(scenario.function, scenario.source.name, i, name, kind, outcome, detail))
    return clean, rows


def table(results: list[tuple[Scenario, Run, list[Row]]]) -> str:
    """The outcomes as a markdown table: one line per (function, call), one column per fault kind."""
    lines = ["| function <- source | # | call | " + " | ".join(KINDS) + " |",
             "|---|---|---|" + "---|" * len(KINDS)]
    for scenario, clean, rows in results:
        if not clean.calls:
            lines.append(f"| {scenario.name} | - | (no AWS call) | " + " | ".join("-" for _ in KINDS) + " |")
        by_call: dict[int, dict[str, str]] = {}
        for row in rows:
            by_call.setdefault(row.call, {})[row.kind] = row.outcome
        for i, name in enumerate(clean.calls):
            cells = " | ".join(by_call.get(i, {}).get(kind, "") for kind in KINDS)
            lines.append(f"| {scenario.name} | {i} | `{name}` | {cells} |")
    counts = Counter(row.outcome for _, _, rows in results for row in rows)
    calls = sum(len(clean.calls) for _, clean, _ in results)
    lines.append("")
    functions = len({scenario.function for scenario, _, _ in results})
    lines.append(f"{functions} functions in {len(results)} scenarios, {calls} calls swept, "
                 f"{sum(counts.values())} faulted runs: "
                 + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
    return "\n".join(lines)
