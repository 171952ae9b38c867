"""A small evaluator of AWS IoT Core policies, for tests over the synthesised documents.

It implements what the device policies rely on: `*` and `?` wildcards in resources (and
actions), policy variables `${iot:Connection.Thing.ThingName}` / `${iot:ClientId}`, the
`Bool` / `StringEquals` condition operators (a key the request does not carry fails both),
the `iot:DomainName` the client connected through, default deny, and explicit deny winning
over any allow. MQTT wildcards (`+`, `#`) in a resource are plain characters, as in IoT Core.
CloudFormation intrinsics (`Fn::Join`, `Ref` of pseudo parameters, and `Fn::GetAtt` of values
only known at deploy time: the value the caller supplies, else a stand-in) are resolved first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012"}
ARN_PREFIX = f"arn:aws:iot:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}"


def resolve(value: Any, deployed: dict[tuple[str, str], str] | None = None) -> Any:
    """Resolve the intrinsics CDK emits in policy documents into plain strings.

    `deployed` maps (logical id, attribute) of an `Fn::GetAtt` to the value CloudFormation
    would put there; an attribute it does not name becomes the stand-in `<logical id.attribute>`,
    equal only to itself."""
    deployed = deployed or {}
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return PSEUDO[value["Ref"]]
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            return separator.join(resolve(p, deployed) for p in parts)
        if set(value) == {"Fn::GetAtt"}:
            logical_id, attribute = value["Fn::GetAtt"]
            return deployed.get((logical_id, attribute), f"<{logical_id}.{attribute}>")
        return {k: resolve(v, deployed) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, deployed) for v in value]
    return value


@dataclass
class Connection:
    """Who is asking: the client id (None for an HTTPS request), the thing its certificate is
    attached to (if any), and the domain name it connected through (its TLS server name)."""

    client_id: str | None
    attached_thing: str | None = None
    domain_name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        values = {} if self.domain_name is None else {"iot:DomainName": self.domain_name}
        if self.client_id is None:
            # HTTPS publish carries no client id ("HTTPS publish", developerguide/http.html),
            # and thing variables exist only over MQTT or MQTT over WebSocket ("Thing policy
            # variables", developerguide/thing-policy-variables.html).
            return {**values, **self.extra}
        values["iot:ClientId"] = self.client_id
        # Thing variables exist only when the client id equals a thing attached to the cert.
        if self.attached_thing is not None and self.attached_thing == self.client_id:
            values["iot:Connection.Thing.ThingName"] = self.attached_thing
            values["iot:Connection.Thing.IsAttached"] = "true"
        else:
            values["iot:Connection.Thing.IsAttached"] = "false"
        return {**values, **self.extra}


_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _substitute(pattern: str, variables: dict[str, str]) -> str | None:
    """Replace policy variables; a variable with no value makes the statement not apply."""
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        if match.group(1) not in variables:
            missing = True
            return ""
        return variables[match.group(1)]

    result = _VARIABLE.sub(value, pattern)
    return None if missing else result


def _matches(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, flags=re.DOTALL) is not None


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _conditions_hold(conditions: dict, variables: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            actual = variables.get(key)
            wanted = [str(e).lower() if operator == "Bool" else str(e) for e in _as_list(expected)]
            if operator == "Bool":
                if actual is None or actual.lower() not in wanted:
                    return False
            elif operator == "StringEquals":
                if actual not in wanted:
                    return False
            else:
                raise NotImplementedError(f"condition operator {operator}")
    return True


def _statement_applies(statement: dict, action: str, resource: str, variables: dict[str, str]) -> bool:
    if not any(_matches(a, action) for a in _as_list(statement["Action"])):
        return False
    if not _conditions_hold(statement.get("Condition", {}), variables):
        return False
    for pattern in _as_list(statement["Resource"]):
        concrete = _substitute(pattern, variables)
        if concrete is not None and _matches(concrete, resource):
            return True
    return False


def is_allowed(documents: list[dict], action: str, resource: str, connection: Connection) -> bool:
    """Default deny; any matching Deny wins; otherwise any matching Allow allows."""
    variables = connection.variables()
    statements = [s for d in documents for s in _as_list(resolve(d)["Statement"])]
    applying = [s for s in statements if _statement_applies(s, action, resource, variables)]
    if any(s["Effect"] == "Deny" for s in applying):
        return False
    return any(s["Effect"] == "Allow" for s in applying)


def client(name: str) -> str:
    return f"{ARN_PREFIX}:client/{name}"


def topic(name: str) -> str:
    return f"{ARN_PREFIX}:topic/{name}"


def topicfilter(name: str) -> str:
    return f"{ARN_PREFIX}:topicfilter/{name}"
