"""Detector settings from the environment the stack sets, read the same way by both detectors.

A missing or invalid value keeps its default and is named in `problems` (the handler logs them
and counts DetectorConfigInvalid): a typo in one limit must not stop detection for the fleet."""

from __future__ import annotations

import re
from typing import Any, Mapping

_PROFILE = re.compile(r"[A-Za-z0-9:_-]{1,128}")


def read_limits(env: Mapping[str, str], integers: Mapping[str, tuple[str, int, int]],
                optional: frozenset[str] = frozenset()) -> tuple[dict[str, Any], list[str]]:
    """`integers`: ENV_NAME -> (attribute, lowest, highest). Also PROFILE_NAME -> `profile`.
    Returns the values that are valid (by attribute) and one problem line per other setting;
    a name in `optional` may be absent without a problem."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, (attr, low, high) in integers.items():
        raw = env.get(name)
        if raw in (None, ""):
            if name not in optional:
                problems.append(f"{name} is not set")
            continue
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            problems.append(f"{name} is not an integer in {low}..{high}")
            continue
        values[attr] = value
    profile = env.get("PROFILE_NAME")
    if profile and _PROFILE.fullmatch(profile):
        values["profile"] = profile
    else:
        problems.append("PROFILE_NAME is not set to a security profile name")
    return values, problems
