"""One fault at one AWS call, injected where the SDK meets the wire.

Every boto3 client of `session` (the functions build theirs from boto3's default session, which
the sweep points here) gets two botocore event hooks:

* `before-call` (once per API call the function makes, whatever botocore's retries do): numbers
  the calls in order, `service.operation`, so a clean run yields the list the sweep walks;
* `before-send` (once per HTTP attempt): this hook IS the server. It hands the request to moto's
  request dispatcher (or to a `fake` for an operation moto lacks) and returns the answer, so
  moto's own built-in hook is switched off while the injector runs (otherwise botocore's `emit`
  would run both and apply every request twice).

Arming call i with a fault kind changes what the attempts of that one call see:

  fail      every attempt fails before the service applies it: a modeled service error
            (ThrottlingException, InternalFailure: botocore parses it as the service's answer) or a
            connection error, so botocore's own retries fail too and the function sees the error;
  lost      the first attempt is applied, its answer lost (ReadTimeoutError); any re-send botocore
            makes fails before it is applied: the function sees the timeout;
  resent    the first attempt is applied, its answer lost; botocore's retry re-sends the same
            request, which is applied again and answered: the function sees the second answer
            (a client with one attempt, like the provisioning hook's, never re-sends: as `lost`);
  dies      the first attempt is applied, then the invocation dies (timeout, out of memory): a
            BaseException the function's `except Exception` cannot catch.

botocore's retry backoff is real time: the sweep sets it to zero (`no_backoff`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore import xform_name
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

FAIL_THROTTLED, FAIL_INTERNAL, FAIL_CONNECTION = "throttled", "internal", "connection"
LOST, RESENT, DIES = "lost", "resent", "dies"
# (a) fail before applied: a service error the function reads as a ClientError (ThrottlingException
# at even calls, InternalFailure at odd ones: botocore retries both and the functions treat them
# alike) and a connection error (a BotoCoreError); (b) lost; (c) resent; (d) dies.
SERVICE_ERROR = "service-error"
KINDS = (SERVICE_ERROR, FAIL_CONNECTION, LOST, RESENT, DIES)
SERVICE_ERRORS = {FAIL_THROTTLED: ("ThrottlingException", 400, "Rate exceeded"),
                  FAIL_INTERNAL: ("InternalFailure", 500, "An internal error occurred")}


class InvocationDied(BaseException):
    """The Lambda runtime killed the invocation (timeout, out of memory): no handler code runs after."""


class Body:
    """The raw body botocore reads an answer from."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def answer(request: Any, status: int, body: dict | None = None, headers: dict | None = None) -> AWSResponse:
    """An HTTP answer to `request` (a `fake` builds its answers with this)."""
    data = json.dumps(body).encode() if body is not None else b""
    return AWSResponse(request.url, status, {"Content-Type": "application/json", **(headers or {})}, Body(data))


def service_error(request: Any, protocol: str, code: str, status: int, message: str) -> AWSResponse:
    """The error as the service's protocol carries it, so botocore parses code and modeled class."""
    if protocol in ("query", "ec2"):
        xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
               f"</Error><RequestId>00000000-fault</RequestId></ErrorResponse>")
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, Body(xml.encode()))
    if protocol == "rest-xml":
        xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, Body(xml.encode()))
    # json / rest-json (the x-amzn-ErrorType header is what rest-json services send)
    return answer(request, status, {"__type": code, "message": message}, {"x-amzn-ErrorType": code})


@dataclass
class Fault:
    call: int  # index into the calls of the run
    kind: str


@dataclass
class Injector:
    """Numbers the calls, serves them (moto, or `fakes` by 'service.Operation'), injects one fault."""

    fakes: dict[str, Callable[[Any], AWSResponse]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fault: Fault | None = None
    attempts: int = 0  # attempts made of the faulted call
    fired: bool = False
    protocol: str = "json"
    serving: bool = False  # inside moto_served_by

    HOOK = "fault-injector"

    def install(self, session: Any) -> None:
        """On a botocore session: every client it creates from now on carries both hooks."""
        session.register("before-call", self._before_call, unique_id=f"{self.HOOK}-call")
        session.register("before-send", self._before_send, unique_id=f"{self.HOOK}-send")

    def arm(self, fault: Fault | None) -> None:
        self.calls, self.fault, self.attempts, self.fired = [], fault, 0, False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made inside are neither numbered nor faulted (the sweep reading the world back)."""
        saved = self.calls, self.fault
        self.calls, self.fault = [], None
        try:
            yield
        finally:
            self.calls, self.fault = saved

    # ---- hooks ----------------------------------------------------------------------------------

    def _before_call(self, model: Any, **_: Any) -> None:
        self.calls.append(f"{model.service_model.service_name}.{xform_name(model.name)}")
        self.protocol = model.service_model.protocol  # how this call's errors are written

    def wrap(self, name: str, send: Callable[..., Any], apply_error: Callable[[], BaseException]) -> Callable[..., Any]:
        """A call that is not boto3's (the classifier's HTTP POST) as one more numbered call. Its
        caller's own retry is a new call, so `resent` is `lost` here: applied, then `apply_error()`
        (e.g. a timeout) instead of the answer; `fail*` raise `apply_error()` before sending."""

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if not self._faulted():
                return send(*args, **kwargs)
            self.fired = True
            self.attempts += 1
            if self.fault.kind in (SERVICE_ERROR, FAIL_THROTTLED, FAIL_INTERNAL, FAIL_CONNECTION):
                raise ConnectionRefusedError(f"injected: {name} not reached")
            send(*args, **kwargs)
            if self.fault.kind == DIES:
                raise InvocationDied(f"invocation died after {name} was applied")
            raise apply_error()

        return call

    def _faulted(self) -> bool:
        return self.fault is not None and len(self.calls) - 1 == self.fault.call

    def _before_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        if not self.serving:
            return None  # outside moto_served_by: not ours to answer
        service_operation = ".".join(event_name.split(".")[1:])  # before-send.<service-id>.<Operation>
        if not self._faulted():
            return self._serve(service_operation, request)
        self.fired = True
        self.attempts += 1
        kind = self.fault.kind
        if kind == SERVICE_ERROR:
            kind = (FAIL_THROTTLED, FAIL_INTERNAL)[self.fault.call % 2]
        if kind in SERVICE_ERRORS:
            code, status, message = SERVICE_ERRORS[kind]
            return service_error(request, self.protocol, code, status, message)
        if kind == FAIL_CONNECTION or (kind == LOST and self.attempts > 1):
            raise EndpointConnectionError(endpoint_url=request.url)
        if kind == RESENT and self.attempts > 1:
            return self._serve(service_operation, request)
        self._serve(service_operation, request)  # applied: the first attempt reached the service
        if kind == DIES:
            raise InvocationDied(f"invocation died after {self.calls[-1]} was applied")
        raise ReadTimeoutError(endpoint_url=request.url)

    # ---- the server ---------------------------------------------------------------------------------

    def _serve(self, service_operation: str, request: Any) -> AWSResponse:
        fake = self.fakes.get(service_operation)
        if fake is not None:
            return fake(request)
        return self.moto(service_operation, request)

    @staticmethod
    def moto(service_operation: str, request: Any) -> AWSResponse:
        """moto's answer (a fake that only corrects moto passes the request on here)."""
        from moto.core.botocore_stubber import MockRawResponse
        from moto.core.models import botocore_stubber

        served = botocore_stubber.process_request(request)
        if served is None:
            raise AssertionError(f"moto does not serve {service_operation} ({request.url})")
        status, headers, body = served
        return AWSResponse(request.url, status, headers, MockRawResponse(body))


@contextlib.contextmanager
def moto_served_by(injector: Injector) -> Iterator[None]:
    """Inside mock_aws(): moto's own before-send hook stands aside; the injector serves instead."""
    from moto.core.models import botocore_stubber

    was = botocore_stubber.enabled
    botocore_stubber.enabled, injector.serving = False, True
    try:
        yield
    finally:
        botocore_stubber.enabled, injector.serving = was, False


@contextlib.contextmanager
def no_backoff() -> Iterator[None]:
    """botocore's retries, without their sleeps (standard and legacy modes)."""
    from botocore.retries import standard

    original = standard.ExponentialBackoff.delay_amount
    standard.ExponentialBackoff.delay_amount = lambda self, context: 0  # type: ignore[method-assign]
    try:
        yield
    finally:
        standard.ExponentialBackoff.delay_amount = original  # type: ignore[method-assign]
