"""The one typed configuration of a Fleetwarden deployment.

`cdk.json` context holds every stage's settings; `app.py` reads them once with
`load_config(context)` and hands the resulting `FleetConfig` to the stacks. A bad
value raises `ConfigError` whose message is one line naming the key and what is
allowed, so synthesis stops with a readable error instead of a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

PROJECT = "fleetwarden"
DEFAULT_STAGE = "dev"

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)
IOT_LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "DISABLED")
TLS_SECURITY_POLICIES = (
    "IoTSecurityPolicy_TLS13_1_3_2022_10",  # TLS 1.3 only (default)
    "IoTSecurityPolicy_TLS13_1_2_2022_10",  # TLS 1.2 and 1.3, for devices without TLS 1.3
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_LOG_GROUP_NAME = re.compile(r"^[\w#/.\-]{1,512}$")


class ConfigError(ValueError):
    """A configuration value is missing or not allowed. The message is one line."""


@dataclass(frozen=True)
class StageConfig:
    """Settings of one stage (one deployment of every stack)."""

    name: str
    account: str | None
    region: str | None
    owns_account_singletons: bool
    log_retention_days: int
    trail_retention_days: int
    access_log_retention_days: int
    iot_log_level: str
    ops_email: str | None
    tls_security_policy: str
    existing_trail_log_group: str | None
    termination_protection: bool

    @property
    def prefix(self) -> str:
        """Prefix for physical names, unique per stage within an account."""
        return f"{PROJECT}-{self.name}"

    @property
    def stack_prefix(self) -> str:
        return f"Fleetwarden-{self.name}"


@dataclass(frozen=True)
class FleetConfig:
    project: str
    stage: StageConfig
    stage_names: tuple[str, ...]


# Per-stage keys, their defaults, and the validator that checks each one.
_STAGE_DEFAULTS: dict[str, Any] = {
    "account": None,
    "region": None,
    "log_retention_days": 90,
    "trail_retention_days": 2557,  # 7 years: a common audit retention floor
    "access_log_retention_days": 365,
    "iot_log_level": "ERROR",
    "ops_email": None,
    "tls_security_policy": TLS_SECURITY_POLICIES[0],
    "existing_trail_log_group": None,
    "termination_protection": False,
}


def _one_of(key: str, value: Any, allowed: tuple) -> Any:
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{key} = {value!r} is not allowed; use one of: {shown}")
    return value


def _retention(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} = {value!r} must be a whole number of days")
    if value <= 0:
        raise ConfigError(f"{key} = {value!r} must be a positive number of days")
    return value


def _log_retention(key: str, value: Any) -> int:
    _retention(key, value)
    return _one_of(key, value, LOG_RETENTION_DAYS)


def _optional_match(key: str, value: Any, pattern: re.Pattern, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(f"{key} = {value!r} is not {what}")
    return value


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} = {value!r} must be true or false")
    return value


def _stage(name: str, raw: Mapping[str, Any], owner: str) -> StageConfig:
    where = f"stages.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object of settings")
    unknown = sorted(set(raw) - set(_STAGE_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]} is not a known setting; known: {', '.join(_STAGE_DEFAULTS)}"
        )
    v = {**_STAGE_DEFAULTS, **raw}
    level = v["iot_log_level"]
    return StageConfig(
        name=name,
        account=_optional_match(f"{where}.account", v["account"], _ACCOUNT, "a 12-digit AWS account id"),
        region=_optional_match(f"{where}.region", v["region"], _REGION, "an AWS region name such as eu-west-1"),
        owns_account_singletons=(name == owner),
        log_retention_days=_log_retention(f"{where}.log_retention_days", v["log_retention_days"]),
        trail_retention_days=_retention(f"{where}.trail_retention_days", v["trail_retention_days"]),
        access_log_retention_days=_retention(
            f"{where}.access_log_retention_days", v["access_log_retention_days"]
        ),
        iot_log_level=_one_of(
            f"{where}.iot_log_level", level.upper() if isinstance(level, str) else level, IOT_LOG_LEVELS
        ),
        ops_email=_optional_match(f"{where}.ops_email", v["ops_email"], _EMAIL, "a valid email address"),
        tls_security_policy=_one_of(
            f"{where}.tls_security_policy", v["tls_security_policy"], TLS_SECURITY_POLICIES
        ),
        existing_trail_log_group=_optional_match(
            f"{where}.existing_trail_log_group",
            v["existing_trail_log_group"],
            _LOG_GROUP_NAME,
            "a CloudWatch Logs log group name",
        ),
        termination_protection=_flag(f"{where}.termination_protection", v["termination_protection"]),
    )


def load_config(context: Mapping[str, Any]) -> FleetConfig:
    """Build the typed config from CDK context (`stage` plus the `fleetwarden` object)."""
    settings = context.get("fleetwarden")
    if not isinstance(settings, Mapping):
        raise ConfigError("context key 'fleetwarden' is missing; it belongs in cdk.json")
    stages = settings.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        raise ConfigError("fleetwarden.stages must name at least one stage")
    for stage_name in stages:
        if not _STAGE_NAME.match(stage_name):
            raise ConfigError(
                f"fleetwarden.stages.{stage_name}: a stage name is 1-12 lowercase letters or digits"
            )
    names = tuple(stages)
    stage_name = context.get("stage") or DEFAULT_STAGE
    _one_of("stage", stage_name, names)

    # Account-wide IoT settings exist once per account and region: one stage owns them.
    owner = settings.get("account_singletons_owner", "prod" if "prod" in names else names[0])
    _one_of("fleetwarden.account_singletons_owner", owner, names)

    return FleetConfig(project=PROJECT, stage=_stage(stage_name, stages[stage_name], owner), stage_names=names)
