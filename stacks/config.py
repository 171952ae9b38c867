"""The one typed configuration of a Fleetwarden deployment.

`cdk.json` context holds every stage's settings; `app.py` reads them once with
`load_config(context)` and hands the resulting `FleetConfig` to the stacks. A bad
value raises `ConfigError` whose message is one line naming the key and what is
allowed, so synthesis stops with a readable error instead of a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from re import _constants as sre, _parser as sre_parse  # the standard library's regex parser
from typing import Any, Callable, Iterator, Mapping

from lambdas.alerts.model import MAX_ALERT_BYTES
from lambdas.identity.tokens import DEFAULT_SERIAL_PATTERN, SERIAL_ALPHABET, validate_serial

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
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
# IoT Core rejects a PUBLISH payload over 128 KB ("AWS IoT Core endpoints and quotas", message
# broker limits), so no device message is larger, whatever the path behind it accepts.
MQTT_MAX_PAYLOAD_BYTES = 131_072
# Detection windows each source can take. Device Defender behaviour durations: 300, 600, 900, 1800
# or 3600 s (Device Defender developer guide, "Cloud-side metrics" and "Device-side metrics");
# the built-in detector's Lambda tumbling windows stop at 900 s.
DEFENDER_WINDOWS = (300, 600, 900, 1800, 3600)
BUILTIN_WINDOWS = (60, 300, 600, 900)
WINDOWS_BY_DETECT = {"defender": DEFENDER_WINDOWS, "builtin": BUILTIN_WINDOWS,
                     "both": tuple(w for w in BUILTIN_WINDOWS if w in DEFENDER_WINDOWS)}


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
    device_domain_name: str | None
    device_domain_certificate_arn: str | None
    device_domain_validation_certificate_arn: str | None
    existing_trail_log_group: str | None
    termination_protection: bool
    serial_pattern: str
    provisioning_token_ttl_minutes: int
    hook_provisioned_concurrency: int
    ca_certificate_pem: str | None
    ca_verification_certificate_pem: str | None
    declared_devices: tuple[DeclaredDevice, ...]
    powertools_layer_version: int
    telemetry_buffer_seconds: int
    telemetry_processing_seconds: int
    telemetry_shards: int
    telemetry_format: str
    telemetry_infrequent_access_days: int
    telemetry_glacier_ir_days: int | None
    telemetry_retention_days: int
    athena_bytes_scanned_limit_mb: int
    alert_retention_days: int
    max_telemetry_bytes: int
    max_alert_bytes: int
    classifier_url: str
    detect: str
    revocation: str
    dry_run: bool
    protect_claim_certificate: bool
    exempt_group: str | None
    detection_window_seconds: int
    limits: "DetectionLimits"
    command_lifetime_hours: int = 168
    command_timeout_minutes: int = 60
    command_retry_attempts: int = 2
    tunnel_lifetime_minutes: int = 60
    max_artifact_mb: int = 512
    artifact_url_seconds: int = 3600
    rotation_grace_hours: int = 72
    fleet_indexing: bool = False

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


# --- validators: each takes a value and returns it (perhaps normalised) or raises Refused -------

Check = Callable[[Any], Any]


class Refused(Exception):
    """A validator's verdict; the message reads "<key> = <value> <why>"."""

    def __init__(self, value: Any, why: str):
        super().__init__(why)
        self.value, self.why = value, why


def one_of(allowed: tuple) -> Check:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise Refused(value, f"is not allowed; use one of: {', '.join(str(a) for a in allowed)}")
        return value
    return check


def whole(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Refused(value, f"must be a whole number from {low} to {high}")
        return value
    return check


def matches(pattern: str, why: str) -> Check:
    """A string matching `pattern`; `why` says what it must be."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.match(value):
            raise Refused(value, why)
        return value
    return check


def optional(check: Check) -> Check:
    """None (the feature is off) or a value `check` accepts."""
    return lambda value: None if value is None else check(value)


def all_of(*checks: Check) -> Check:
    """Each check in turn, on what the one before returned."""
    def check(value: Any) -> Any:
        for step in checks:
            value = step(value)
        return value
    return check


def days(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(value, "must be a whole number of days")
    if value <= 0:
        raise Refused(value, "must be a positive number of days")
    return value


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Refused(value, "must be true or false")
    return value


def upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def anchored_regex(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("^") or not value.endswith("$"):
        raise Refused(value, "must be a regular expression anchored with ^ and $")
    try:
        re.compile(value)
    except re.error as err:
        raise Refused(value, f"is not a valid regular expression: {err}") from None
    return value


# What a serial_pattern could match is read from Python's own parse of it: every node that consumes
# one character is compiled alone, with the flags in force there, and run over every code point
# outside SERIAL_ALPHABET. So the regex engine itself answers for IGNORECASE folding ('k' also
# matches U+212A KELVIN SIGN), for \d and \w (Unicode digits and letters unless ASCII) and for
# negated classes. Assertions consume nothing and a backreference repeats its group's characters.
_CATEGORIES = {sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D", sre.CATEGORY_SPACE: r"\s",
               sre.CATEGORY_NOT_SPACE: r"\S", sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W"}
_ENGINE_FLAGS = re.IGNORECASE | re.ASCII | re.UNICODE | re.DOTALL  # all that can change one character's match
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def _char(code: int) -> str:
    return f"\\U{code:08x}"  # means the same inside and outside a class, whatever the flags


def _one_character(op: Any, av: Any) -> str:
    """The regex of one consuming node on its own."""
    if op is sre.LITERAL:
        return _char(av)
    if op is sre.NOT_LITERAL:
        return f"[^{_char(av)}]"
    if op is sre.IN:
        parts = []
        for item_op, item in av:
            if item_op is sre.NEGATE:
                parts.insert(0, "^")
            elif item_op is sre.LITERAL:
                parts.append(_char(item))
            elif item_op is sre.RANGE:
                parts.append(f"{_char(item[0])}-{_char(item[1])}")
            elif item_op is sre.CATEGORY and item in _CATEGORIES:
                parts.append(_CATEGORIES[item])
            else:
                return "."  # an item this reading does not know: assume the worst
        return f"[{''.join(parts)}]"
    return "."  # ANY


def _consumers(items: Any, flags: int, groups: dict[int, tuple[Any, int]]) -> Iterator[tuple[str, int]]:
    """(regex, flags) of every node of `items` that consumes one character."""
    for op, av in items:
        if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            yield _one_character(op, av), flags
        elif op is sre.SUBPATTERN:
            group, add, remove, sub = av
            inner = (flags | add) & ~remove
            if group is not None:
                groups[group] = (sub, inner)
            yield from _consumers(sub, inner, groups)
        elif op is sre.BRANCH:
            for alternative in av[1]:
                yield from _consumers(alternative, flags, groups)
        elif op in _REPEATS:
            yield from _consumers(av[2], flags, groups)
        elif op is sre.ATOMIC_GROUP:
            yield from _consumers(av, flags, groups)
        elif op is sre.GROUPREF_EXISTS:
            for branch in av[1:]:
                if branch is not None:
                    yield from _consumers(branch, flags, groups)
        elif op is sre.GROUPREF:
            sub, group_flags = groups.get(av, ([(sre.ANY, None)], flags))
            yield from _consumers(sub, group_flags | (flags & re.IGNORECASE), {})
        elif op not in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            yield ".", flags  # a construct this reading does not know: assume the worst


@lru_cache(maxsize=1)
def _outside_alphabet() -> str:
    """Every code point, surrogates included, that is not in SERIAL_ALPHABET."""
    return "".join(map(chr, range(0x110000))).translate(dict.fromkeys(map(ord, SERIAL_ALPHABET)))


def unsafe_serial_characters(pattern: str, limit: int = 3) -> list[str]:
    """Up to `limit` characters outside SERIAL_ALPHABET that `pattern` can match, in code point order."""
    parsed = sre_parse.parse(pattern)
    found: set[str] = set()
    for regex, flags in _consumers(parsed, parsed.state.flags, {}):
        flags &= _ENGINE_FLAGS
        if flags & re.ASCII:
            flags &= ~re.UNICODE
        compiled = re.compile(regex, flags)
        found.update(m.group() for m in islice(compiled.finditer(_outside_alphabet()), limit))
    return sorted(found)[:limit]


def safe_serial_pattern(value: str) -> str:
    """An anchored serial_pattern that can match only SERIAL_ALPHABET: a serial is the thing name, an
    MQTT topic level and an S3 key segment, and the data paths carry only those characters."""
    unsafe = unsafe_serial_characters(value)
    if unsafe:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unsafe)
        hint = r" (\d and \w also match non-ASCII digits and letters: write [0-9], [A-Za-z])" if any(
            not c.isascii() for c in unsafe) else ""
        raise Refused(value, f"can match {shown}; a serial becomes the thing name, topic level and S3 key, "
                             f"so it may use only A-Z, a-z, 0-9, '_' and '-'{hint}")
    return value


def checked_below(value: Any) -> Any:
    """Checked after the table pass, with the settings and files it depends on."""
    return value


def _checked(key: str, value: Any, check: Check) -> Any:
    try:
        return check(value)
    except Refused as refused:
        raise ConfigError(f"{key} = {refused.value!r} {refused.why}") from None


# --- the per-stage settings: key in cdk.json -> default and check ---------------------------

@dataclass(frozen=True)
class Setting:
    default: Any
    check: Check
    limit: str | None = None  # the DetectionLimits field it fills, if any


DETECT_SOURCES = ("defender", "builtin", "both")
REVOCATION_MODES = ("quarantine-only", "deactivate", "revoke")
_up_to_a_million = whole(1, 10**6)
_acm_certificate_arn = matches(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$",
                               "is not an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID)")

# Each key is the StageConfig field of the same name unless handled in `_stage` after the pass.
SETTINGS: dict[str, Setting] = {
    "account": Setting(None, optional(matches(r"^\d{12}$", "is not a 12-digit AWS account id"))),
    "region": Setting(None, optional(matches(
        r"^[a-z]{2}(-gov)?-[a-z]+-\d$", "is not an AWS region name such as eu-west-1"))),
    "log_retention_days": Setting(90, all_of(days, one_of(LOG_RETENTION_DAYS))),
    "trail_retention_days": Setting(2557, days),  # 7 years: a common audit retention floor
    "access_log_retention_days": Setting(365, days),
    "iot_log_level": Setting("ERROR", all_of(upper, one_of(IOT_LOG_LEVELS))),
    "ops_email": Setting(None, optional(matches(
        r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", "is not a valid email address"))),
    "tls_security_policy": Setting(TLS_SECURITY_POLICIES[0], one_of(TLS_SECURITY_POLICIES)),
    # A customer-owned device endpoint name (unset: the AWS-managed name IoT Core assigns) and
    # its ACM server certificate; a validation certificate only for a privately signed one.
    "device_domain_name": Setting(None, optional(matches(
        r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        "is not a lowercase fully qualified domain name such as devices.example.com"))),
    "device_domain_certificate_arn": Setting(None, optional(_acm_certificate_arn)),
    "device_domain_validation_certificate_arn": Setting(None, optional(_acm_certificate_arn)),
    "existing_trail_log_group": Setting(None, optional(matches(
        r"^[\w#/.\-]{1,512}$", "is not a CloudWatch Logs log group name"))),
    "termination_protection": Setting(False, flag),
    # null: the stage named by account_singletons_owner owns them; true/false overrides that,
    # e.g. true for every stage when each stage has an account of its own.
    "owns_account_singletons": Setting(None, optional(flag)),
    # IoT fleet indexing (registry + connectivity status: `fleetctl fleet status` counts the
    # devices connected now) is account-wide: null turns it on in the stage that owns the account
    # singletons and off elsewhere; true in another stage is refused (README, Operators).
    "fleet_indexing": Setting(None, optional(flag)),
    "serial_pattern": Setting(DEFAULT_SERIAL_PATTERN, all_of(anchored_regex, safe_serial_pattern)),
    "provisioning_token_ttl_minutes": Setting(15, whole(1, 1440)),
    # Warm instances of the pre-provisioning hook (its 5-second deadline includes a cold start);
    # 0 (no provisioned concurrency, no cost when idle) suits a dev stage.
    "hook_provisioned_concurrency": Setting(1, whole(0, 100)),
    "ca_certificate_file": Setting(None, checked_below),
    "ca_verification_certificate_file": Setting(None, checked_below),
    "declared_devices": Setting([], checked_below),
    "declared_devices_cap": Setting(100, whole(0, 1000)),
    # Version of the AWS-managed "Powertools for AWS Lambda (Python) V3" layer.
    "powertools_layer_version": Setting(38, whole(1, 10_000)),
    # Firehose buffers 60-900 s before writing a partition's file: the longer, the fewer objects
    # (each costs a dynamic-partitioning object fee and an S3 PUT; see bench/README.md).
    "telemetry_buffer_seconds": Setting(900, whole(60, 900)),
    # Firehose buffers up to this long (or 1 MB) before invoking the transform: the first term of
    # the detection latency (README, Telemetry). "ProcessorParameter" (Firehose API reference)
    # gives only the default, 60 s; 0-900 is BufferingHints' range, unverified for processors.
    "telemetry_processing_seconds": Setting(30, whole(0, 900)),
    # N of the stable hash shard (lambdas/telemetry/layout.py): partitions per hour.
    "telemetry_shards": Setting(16, whole(1, 100)),
    # json (default): GZIP JSON lines, with the same partitions, Glue table, projection and queries;
    # it meets issue 11's <= $0.50 per million messages (detection included) at every corner.
    # parquet: Firehose converts to Parquet (columnar, for fleets that query a lot); conversion is
    # billed per 5 KB-rounded record: about $0.07 more per million (bench/README.md).
    "telemetry_format": Setting("json", one_of(("json", "parquet"))),
    "telemetry_infrequent_access_days": Setting(30, whole(30, 36500)),
    # Standard-IA -> Glacier Instant Retrieval (null: stay in Standard-IA); after the IA transition.
    "telemetry_glacier_ir_days": Setting(90, optional(whole(31, 36500))),
    # Athena cancels a query of the telemetry workgroup that would scan more (10 MB is its minimum:
    # "BytesScannedCutoffPerQuery", Athena API reference).
    "athena_bytes_scanned_limit_mb": Setting(10_240, whole(10, 10**7)),
    "telemetry_retention_days": Setting(365, days),
    "alert_retention_days": Setting(2557, days),
    "max_telemetry_bytes": Setting(8192, whole(256, MQTT_MAX_PAYLOAD_BYTES)),
    # Largest alert message before a device is in violation; default: what the alert path takes
    # (the processor reads objects up to MAX_ALERT_BYTES; MQTT caps a message lower).
    "max_alert_bytes": Setting(min(MAX_ALERT_BYTES, MQTT_MAX_PAYLOAD_BYTES),
                               whole(256, MQTT_MAX_PAYLOAD_BYTES)),
    # The external classification service that receives alert headers (never traces).
    "classifier_url": Setting("https://classifier.example.com/v1/alerts", matches(
        r"^https://[A-Za-z0-9.-]+(:\d+)?(/[^\s]*)?$", "must be an https:// URL")),
    # Detection and containment (DefenseStack).
    "detect": Setting("both", one_of(DETECT_SOURCES)),
    "revocation": Setting("deactivate", one_of(REVOCATION_MODES)),
    "dry_run": Setting(False, flag),
    # The claim certificate ships on every field device: deactivating it on a violation would stop
    # field provisioning for the whole fleet, and anyone holding it could trigger that.
    "protect_claim_certificate": Setting(True, flag),
    "exempt_group": Setting(None, optional(matches(r"^[A-Za-z0-9:_-]{1,128}$", "is not a thing group name"))),
    # Which of these the stage's `detect` can take is checked in `_stage` (_check_window).
    "detection_window_seconds": Setting(300, one_of(tuple(sorted({*BUILTIN_WINDOWS, *DEFENDER_WINDOWS})))),
    "max_messages_per_window": Setting(600, whole(1, 10**9), limit="messages"),
    "max_message_bytes_per_window": Setting(5_242_880, whole(1, 10**12), limit="message_bytes"),
    "max_authorization_failures_per_window": Setting(10, _up_to_a_million, limit="authorization_failures"),
    "max_connection_attempts_per_window": Setting(10, _up_to_a_million, limit="connection_attempts"),
    "max_disconnects_per_window": Setting(10, _up_to_a_million, limit="disconnects"),
    "max_established_tcp_connections": Setting(10, whole(0, 10**5), limit="established_tcp_connections"),
    # Commands (CommandStack). How long a signed command waits for an offline device (not_after, and the
    # job's end time); at most 30 days, the verifier's MAX_LIFETIME_SECONDS.
    "command_lifetime_hours": Setting(168, whole(1, 720)),
    # A started job execution not finished in time becomes TIMED_OUT (timeoutConfig: 1 to 10080 minutes).
    "command_timeout_minutes": Setting(60, whole(1, 10080)),
    # Retries of a TIMED_OUT execution (jobExecutionsRetryConfig: 0 to 10).
    "command_retry_attempts": Setting(2, whole(0, 10)),
    # Secure tunnel lifetime (OpenTunnel timeoutConfig.maxLifetimeTimeoutMinutes: 1 to 720).
    "tunnel_lifetime_minutes": Setting(60, whole(1, 720)),
    "max_artifact_mb": Setting(512, whole(1, 5000)),
    # How long the presigned artifact URL in a job document is valid (presignedUrlConfig: 60 to 3600 s).
    "artifact_url_seconds": Setting(3600, whole(60, 3600)),
    # After this long without the device's confirmation an operator may retire the old certificate.
    "rotation_grace_hours": Setting(72, whole(1, 720)),
}


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
        if not validate_serial(name, pattern):  # the hook's rule: fullmatch, alphabet, no claim-*
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


def _check_window(where: str, v: dict) -> None:
    """The window must be one every chosen detection source can take (60 s fails Device
    Defender at deploy; over 900 s is no Lambda tumbling window)."""
    window, detect = v["detection_window_seconds"], v["detect"]
    allowed = WINDOWS_BY_DETECT[detect]
    if window not in allowed:
        raise ConfigError(f"{where}.detection_window_seconds = {window!r} is not allowed with "
                          f"detect = {detect!r}; use one of: {', '.join(map(str, allowed))}")


def _check_telemetry_tiers(where: str, v: dict) -> None:
    """Glacier Instant Retrieval comes after Standard-IA, or not at all."""
    glacier, ia = v["telemetry_glacier_ir_days"], v["telemetry_infrequent_access_days"]
    if glacier is not None and glacier <= ia:
        raise ConfigError(f"{where}.telemetry_glacier_ir_days = {glacier} must be later than "
                          f"telemetry_infrequent_access_days = {ia} (or null)")


def _check_device_domain(where: str, v: dict) -> None:
    """A customer-owned domain needs its server certificate, and only it takes a validation one."""
    named, certified = v["device_domain_name"] is not None, v["device_domain_certificate_arn"] is not None
    if named != certified:
        raise ConfigError(f"{where}.device_domain_name and {where}.device_domain_certificate_arn "
                          "go together: set both for your own device domain, or neither")
    if v["device_domain_validation_certificate_arn"] is not None and not named:
        raise ConfigError(f"{where}.device_domain_validation_certificate_arn needs device_domain_name")


def _stage(name: str, raw: Mapping[str, Any], owner: str, base_dir: Path) -> StageConfig:
    where = f"stages.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object of settings")
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not a known setting; known: {', '.join(SETTINGS)}")
    v = {key: _checked(f"{where}.{key}", raw.get(key, setting.default), setting.check)
         for key, setting in SETTINGS.items()}

    # The settings that depend on other settings, the stage's name or files.
    if v["owns_account_singletons"] is None:
        v["owns_account_singletons"] = name == owner
    if v["fleet_indexing"] is None:
        v["fleet_indexing"] = v["owns_account_singletons"]
    elif v["fleet_indexing"] and not v["owns_account_singletons"]:
        raise ConfigError(f"{where}.fleet_indexing = true: fleet indexing is account-wide; "
                          "turn it on in the stage that owns the account singletons")
    _check_device_domain(where, v)
    _check_window(where, v)
    _check_telemetry_tiers(where, v)
    for file_key, pem_field in (("ca_certificate_file", "ca_certificate_pem"),
                                ("ca_verification_certificate_file", "ca_verification_certificate_pem")):
        v[pem_field] = _pem_file(f"{where}.{file_key}", v.pop(file_key), base_dir, "CERTIFICATE")
    v["declared_devices"] = _declared_devices(
        where, v["declared_devices"], v.pop("declared_devices_cap"), v["serial_pattern"], base_dir)
    limits = DetectionLimits(**{s.limit: v.pop(key) for key, s in SETTINGS.items() if s.limit})
    return StageConfig(name=name, limits=limits, **v)


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
    _checked("stage", stage_name, one_of(names))

    # Account-wide IoT settings exist once per account and region: one stage owns them.
    owner = settings.get("account_singletons_owner", "prod" if "prod" in names else names[0])
    _checked("fleetwarden.account_singletons_owner", owner, one_of(names))

    base_dir = base_dir or Path(__file__).resolve().parent.parent
    stage = _stage(stage_name, stages[stage_name], owner, base_dir)
    return FleetConfig(project=PROJECT, stage=stage, stage_names=names)
