"""The operator APIs (API Gateway REST, Cognito user-pool authoriser) on Powertools'
APIGatewayRestResolver, and what every answer of theirs has in common:

* JSON with `Cache-Control: no-store` (answers carry trace URLs, provisioning tokens and private
  lists), one log line and one outcome metric per request;
* one error type, `ApiError(status, message, outcome)`: the route logic raises it for anything
  but success, and the caller gets `{"message": ...}`;
* 404 for an unknown route, 405 with `Allow` for a known one asked with another method
  (Powertools alone answers a method mismatch with a 404);
* a generic 500 for any other exception: logged here, never a stack trace, token or URL in the answer.

Routes are API Gateway's resource templates (`/alerts/{id}/trace`) and are matched against the
event's `resource`, the route API Gateway itself matched, not its `path`, which also carries a
custom domain's base path and the client's percent-escapes. Read path parameters from
`pathParameters`, which API Gateway has decoded.
"""

from __future__ import annotations

from typing import Any, Mapping

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from shared.operators import authoriser_claims, caller
from shared.runtime import Runtime


class ApiError(Exception):
    """Any answer but a route's success: the status, a message for the caller and the metric
    counted for the request."""

    def __init__(self, status: int, message: str, outcome: str):
        super().__init__(message)
        self.status, self.message, self.outcome = status, message, outcome


class OperatorApi(APIGatewayRestResolver):
    """`name` prefixes the per-request log lines; `invalid` is the outcome of a 404 or 405;
    `failed` and `failed_message` make the generic 500."""

    def __init__(self, runtime: Runtime, *, name: str, invalid: str, failed: str,
                 failed_message: str = "internal error"):
        super().__init__()
        self.runtime, self.name = runtime, name
        self.invalid, self.failure = invalid, ApiError(500, failed_message, failed)
        self.methods: dict[str, set[str]] = {}  # resource template -> its methods, for 405's Allow
        self.exception_handler(ApiError)(self._refused)
        self.exception_handler(Exception)(self._failed)
        self.not_found(self._no_route)

    def route(self, rule: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        methods = [method] if isinstance(method, str) else method
        self.methods.setdefault(rule, set()).update(m.upper() for m in methods)
        return super().route(rule, method, *args, **kwargs)

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        username, _ = caller(authoriser_claims(event))
        self.runtime.logger.append_keys(caller=username or "unknown",
                                        route=f"{event.get('httpMethod')} {event.get('resource')}")
        return super().resolve({**event, "path": event.get("resource") or ""}, context)

    @property
    def claims(self) -> Any:
        return authoriser_claims(self.current_event.raw_event)

    def answer(self, status: int, body: dict[str, Any], outcome: str, **headers: str) -> Response:
        self.runtime.count(outcome)
        self.runtime.logger.info(f"{self.name} request answered",
                                 extra={"status": status, "outcome": outcome})
        return Response(status_code=status, content_type="application/json", body=body,
                        headers={"Cache-Control": "no-store", **headers})

    def _refused(self, error: ApiError) -> Response:
        return self.answer(error.status, {"message": error.message}, error.outcome)

    def _no_route(self, _: NotFoundError) -> Response:
        allowed = self.methods.get(self.current_event.get("resource"))
        if allowed:
            return self.answer(405, {"message": "method not allowed"}, self.invalid,
                               Allow=", ".join(sorted(allowed)))
        return self.answer(404, {"message": "not found"}, self.invalid)

    def _failed(self, _: Exception) -> Response:
        self.runtime.logger.exception(f"{self.name} request failed")
        return self._refused(self.failure)
