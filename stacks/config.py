"""The one typed configuration of a Fleetwarden deployment.

`cdk.json` context holds every stage's settings; `app.py` reads them once with
`load_config(context)` and hands the resulting `FleetConfig` to the stacks. A bad
value raises `ConfigError` whose message is one line naming the key and what is
allowed, so synthesis stops with a readable error instead of a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lambdas.identity.tokens import CLAIM_CLIENT_PREFIX, DEFAULT_SERIAL_PATTERN

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
class DeclaredDevice:
    """A device registered by CloudFormation from its CSR (the key stays on the device)."""

    name: str
    csr_pem: str


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
    serial_pattern: str
    provisioning_token_ttl_minutes: int
    ca_certificate_pem: str | None
    ca_verification_certificate_pem: str | None
    declared_devices: tuple[DeclaredDevice, ...]
    powertools_layer_version: int
    telemetry_buffer_seconds: int
    telemetry_infrequent_access_days: int
    telemetry_retention_days: int
    alert_retention_days: int
    max_telemetry_bytes: int
    classifier_url: str
    detect: str
    revocation: str
    dry_run: bool
    exempt_group: str | None
    detection_window_seconds: int
    limits: "DetectionLimits"

    @property
    def prefix(self) -> str:
        """Prefix for physical names, unique per stage within an account."""
        return f"{PROJECT}-{self.name}"

    @property
    def stack_prefix(self) -> str:
        return f"Fleetwarden-{self.name}"


@dataclass(frozen=True)
class DetectionLimits:
    """Per device, per detection window: above these a device is in violation. Both detection
    sources (Device Defender profile, built-in detector) use the same numbers."""

    messages: int
    message_bytes: int
    authorization_failures: int
    connection_attempts: int
    disconnects: int
    established_tcp_connections: int


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
    # null: the stage named by account_singletons_owner owns them; true/false overrides that,
    # e.g. true for every stage when each stage has an account of its own.
    "owns_account_singletons": None,
    "serial_pattern": DEFAULT_SERIAL_PATTERN,
    "provisioning_token_ttl_minutes": 15,
    "ca_certificate_file": None,
    "ca_verification_certificate_file": None,
    "declared_devices": [],
    "declared_devices_cap": 100,
    # Version of the AWS-managed "Powertools for AWS Lambda (Python) V3" layer.
    "powertools_layer_version": 38,
    "telemetry_buffer_seconds": 300,
    "telemetry_infrequent_access_days": 30,
    "telemetry_retention_days": 365,
    "alert_retention_days": 2557,
    "max_telemetry_bytes": 8192,
    # The external classification service that receives alert headers (never traces).
    "classifier_url": "https://classifier.example.com/v1/alerts",
    # Detection and containment (DefenseStack).
    "detect": "both",
    "revocation": "deactivate",
    "dry_run": False,
    "exempt_group": None,
    "detection_window_seconds": 300,
    "max_messages_per_window": 600,
    "max_message_bytes_per_window": 5_242_880,
    "max_authorization_failures_per_window": 10,
    "max_connection_attempts_per_window": 10,
    "max_disconnects_per_window": 10,
    "max_established_tcp_connections": 10,
}
DETECT_SOURCES = ("defender", "builtin", "both")
REVOCATION_MODES = ("quarantine-only", "deactivate", "revoke")
_THING_GROUP = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")


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


def _whole(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key} = {value!r} must be a whole number from {low} to {high}")
    return value


def _https_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https://[A-Za-z0-9.-]+(:\d+)?(/[^\s]*)?$", value):
        raise ConfigError(f"{key} = {value!r} must be an https:// URL")
    return value


def _serial_pattern(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("^") or not value.endswith("$"):
        raise ConfigError(f"{key} = {value!r} must be a regular expression anchored with ^ and $")
    try:
        re.compile(value)
    except re.error as err:
        raise ConfigError(f"{key} = {value!r} is not a valid regular expression: {err}") from None
    return value


def _pem_file(key: str, value: Any, base_dir: Path, marker: str) -> str | None:
    """Read a PEM file named relative to the project; it must hold `marker` and no private key."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} = {value!r} must be a file path")
    path = (base_dir / value).resolve()
    if not path.is_file():
        raise ConfigError(f"{key} = {value!r}: no such file ({path})")
    text = path.read_text(errors="replace")
    if "PRIVATE KEY" in text:
        raise ConfigError(f"{key} = {value!r} contains a private key; only the public part belongs here")
    if f"-----BEGIN {marker}-----" not in text:
        raise ConfigError(f"{key} = {value!r} is not a PEM {marker.lower()}")
    return text


def _declared_devices(where: str, value: Any, cap: int, pattern: str, base_dir: Path) -> tuple:
    key = f"{where}.declared_devices"
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of {{name, csr_file}} objects")
    if len(value) > cap:
        raise ConfigError(
            f"{key} lists {len(value)} devices, over the cap of {cap}: register fleets at run time "
            "with the factory CA (JITP) or fleet provisioning instead of CloudFormation"
        )
    devices, seen = [], set()
    for index, entry in enumerate(value):
        item = f"{key}[{index}]"
        if not isinstance(entry, Mapping) or set(entry) != {"name", "csr_file"}:
            raise ConfigError(f"{item} must be an object with exactly 'name' and 'csr_file'")
        name = entry["name"]
        if not isinstance(name, str) or not re.match(pattern, name) or name.startswith(CLAIM_CLIENT_PREFIX):
            raise ConfigError(f"{item}.name = {name!r} does not match serial_pattern {pattern}")
        if name in seen:
            raise ConfigError(f"{item}.name = {name!r} is declared twice")
        seen.add(name)
        csr_pem = _pem_file(f"{item}.csr_file", entry["csr_file"], base_dir, "CERTIFICATE REQUEST")
        _check_csr_subject(f"{item}.csr_file", csr_pem, name)
        devices.append(DeclaredDevice(name=name, csr_pem=csr_pem))
    return tuple(devices)


def _check_csr_subject(key: str, csr_pem: str, name: str) -> None:
    from cryptography import x509  # only needed when devices are declared
    from cryptography.x509.oid import NameOID

    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise ConfigError(f"{key}: the CSR cannot be parsed") from None
    if not csr.is_signature_valid:
        raise ConfigError(f"{key}: the CSR signature is invalid")
    common_names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common_names != [name]:
        raise ConfigError(f"{key}: the CSR common name {common_names} must be the device name {name!r}")


def _stage(name: str, raw: Mapping[str, Any], owner: str, base_dir: Path) -> StageConfig:
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
        owns_account_singletons=(name == owner) if v["owns_account_singletons"] is None else _flag(
            f"{where}.owns_account_singletons", v["owns_account_singletons"]),
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
        serial_pattern=_serial_pattern(f"{where}.serial_pattern", v["serial_pattern"]),
        provisioning_token_ttl_minutes=_whole(
            f"{where}.provisioning_token_ttl_minutes", v["provisioning_token_ttl_minutes"], 1, 1440
        ),
        ca_certificate_pem=_pem_file(
            f"{where}.ca_certificate_file", v["ca_certificate_file"], base_dir, "CERTIFICATE"
        ),
        ca_verification_certificate_pem=_pem_file(
            f"{where}.ca_verification_certificate_file", v["ca_verification_certificate_file"],
            base_dir, "CERTIFICATE",
        ),
        declared_devices=_declared_devices(
            where,
            v["declared_devices"],
            _whole(f"{where}.declared_devices_cap", v["declared_devices_cap"], 0, 1000),
            v["serial_pattern"],
            base_dir,
        ),
        powertools_layer_version=_whole(
            f"{where}.powertools_layer_version", v["powertools_layer_version"], 1, 10_000
        ),
        # Firehose buffers 60-900 s before writing a partition's file.
        telemetry_buffer_seconds=_whole(
            f"{where}.telemetry_buffer_seconds", v["telemetry_buffer_seconds"], 60, 900),
        telemetry_infrequent_access_days=_whole(
            f"{where}.telemetry_infrequent_access_days", v["telemetry_infrequent_access_days"], 30, 36500),
        telemetry_retention_days=_retention(
            f"{where}.telemetry_retention_days", v["telemetry_retention_days"]),
        alert_retention_days=_retention(f"{where}.alert_retention_days", v["alert_retention_days"]),
        max_telemetry_bytes=_whole(f"{where}.max_telemetry_bytes", v["max_telemetry_bytes"], 256, 131072),
        classifier_url=_https_url(f"{where}.classifier_url", v["classifier_url"]),
        detect=_one_of(f"{where}.detect", v["detect"], DETECT_SOURCES),
        revocation=_one_of(f"{where}.revocation", v["revocation"], REVOCATION_MODES),
        dry_run=_flag(f"{where}.dry_run", v["dry_run"]),
        exempt_group=_optional_match(f"{where}.exempt_group", v["exempt_group"], _THING_GROUP,
                                     "a thing group name"),
        # Lambda tumbling windows and Defender durations both stop at 15 minutes.
        detection_window_seconds=_one_of(
            f"{where}.detection_window_seconds", v["detection_window_seconds"], (60, 300, 600, 900)),
        limits=DetectionLimits(
            messages=_whole(f"{where}.max_messages_per_window", v["max_messages_per_window"], 1, 10**9),
            message_bytes=_whole(f"{where}.max_message_bytes_per_window",
                                 v["max_message_bytes_per_window"], 1, 10**12),
            authorization_failures=_whole(f"{where}.max_authorization_failures_per_window",
                                          v["max_authorization_failures_per_window"], 1, 10**6),
            connection_attempts=_whole(f"{where}.max_connection_attempts_per_window",
                                       v["max_connection_attempts_per_window"], 1, 10**6),
            disconnects=_whole(f"{where}.max_disconnects_per_window", v["max_disconnects_per_window"],
                               1, 10**6),
            established_tcp_connections=_whole(f"{where}.max_established_tcp_connections",
                                               v["max_established_tcp_connections"], 0, 10**5),
        ),
    )


def load_config(context: Mapping[str, Any], base_dir: Path | None = None) -> FleetConfig:
    """Build the typed config from CDK context (`stage` plus the `fleetwarden` object).

    File settings (CA certificate, device CSRs) are read relative to `base_dir`
    (default: the project root, where cdk.json lives)."""
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

    base_dir = base_dir or Path(__file__).resolve().parent.parent
    stage = _stage(stage_name, stages[stage_name], owner, base_dir)
    return FleetConfig(project=PROJECT, stage=stage, stage_names=names)
