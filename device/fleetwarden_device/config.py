"""The agent's one config file (JSON). Relative paths are relative to the file's directory.

    {
      "thing": "SN-0001",                  # thing name = MQTT client id = certificate CN
      "endpoint": "abc-ats.iot.eu-west-1.amazonaws.com",   # the DeviceEndpointHost stack output
      "port": 8883,                        # or 443 (ALPN x-amzn-mqtt-ca is then sent)
      "stage": "prod",                     # names the Basic Ingest rules (topics.rule_name)
      "ca_file": "endpoint-ca.pem",        # the CA that signed the ENDPOINT's certificate (pinned)
      "cert_file": "device.cert.pem", "key_file": "device.key.pem", "csr_file": "device.csr.pem",
      "command_keys": ["command-signing.pem"],   # the Commands stack's public key(s), PEM
      "state_dir": "state",                # nonce store, outbox, downloads (persist across reboots)
      "tls_min_version": "1.2",            # "1.2" or "1.3"; 1.3 is preferred whenever the server offers it
      "groups": [], "firmware_version": "1.4.2",
      "telemetry_interval": 60, "metrics_interval": 300, "keepalive": 60,
      "backoff_base": 1.0, "backoff_cap": 120.0,
      "artifact_schemes": ["https"]
    }

A bad file is one clear line (`ConfigError`), before any connection is attempted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fleetwarden_contracts.topics import THING_NAME

# Thing names (CreateThing): 1-128 of [a-zA-Z0-9:_-]. A name outside that set could also break out of a topic
# level ('/', '+', '#'), so it is refused here rather than trusted.
TLS_VERSIONS = ("1.2", "1.3")  # AWS IoT Core: "TLS version 1.2 and TLS version 1.3" (protocols.html)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    thing: str
    endpoint: str
    port: int
    stage: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    csr_file: Path
    state_dir: Path
    command_keys: tuple[Path, ...] = ()
    groups: tuple[str, ...] = ()
    tls_min_version: str = "1.2"
    firmware_version: str = "1.0.0"
    telemetry_interval: float = 60.0
    metrics_interval: float = 300.0
    keepalive: int = 60
    backoff_base: float = 1.0
    backoff_cap: float = 120.0
    artifact_schemes: tuple[str, ...] = ("https",)
    source: Path = field(default=Path("."), compare=False)

    @property
    def outbox(self) -> Path:
        return self.state_dir / "outbox"


_REQUIRED = ("thing", "endpoint", "stage", "ca_file", "cert_file", "key_file")
_KNOWN = set(_REQUIRED) | {
    "port",
    "csr_file",
    "state_dir",
    "command_keys",
    "groups",
    "tls_min_version",
    "firmware_version",
    "telemetry_interval",
    "metrics_interval",
    "keepalive",
    "backoff_base",
    "backoff_cap",
    "artifact_schemes",
}


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(f"config {path} is not JSON: {error}") from None
    return from_dict(raw, path.parent, path)


def from_dict(raw: object, base: Path, source: Path | None = None) -> Config:
    where = source or base
    if not isinstance(raw, dict):
        raise ConfigError(f"config {where}: not a JSON object")
    missing = [key for key in _REQUIRED if key not in raw]
    unknown = sorted(set(raw) - _KNOWN)
    if missing or unknown:
        raise ConfigError(f"config {where}: missing {missing}, unknown {unknown}")

    def text(key: str, default: str | None = None) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config {where}: {key} must be a non-empty string")
        return value

    def number(key: str, default: float, low: float, high: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"config {where}: {key} must be a number in [{low}, {high}]")
        return value

    def file(key: str, default: str | None = None) -> Path:
        return (base / text(key, default)).resolve()

    thing = text("thing")
    if not THING_NAME.fullmatch(thing):
        raise ConfigError(f"config {where}: thing {thing!r} is not a thing name (1-128 of A-Za-z0-9:_-)")
    if raw.get("tls_min_version", "1.2") not in TLS_VERSIONS:
        raise ConfigError(
            f"config {where}: tls_min_version must be one of {TLS_VERSIONS} (AWS IoT speaks no older)"
        )
    groups = raw.get("groups", [])
    keys = raw.get("command_keys", [])
    schemes = raw.get("artifact_schemes", ["https"])
    for key, value in (("groups", groups), ("command_keys", keys), ("artifact_schemes", schemes)):
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ConfigError(f"config {where}: {key} must be a list of strings")
    if not set(schemes) <= {"https", "http"}:
        raise ConfigError(f"config {where}: artifact_schemes may only hold https and http")
    backoff_base = number("backoff_base", 1.0, 0.01, 60)
    return Config(
        thing=thing,
        endpoint=text("endpoint"),
        port=int(number("port", 8883, 1, 65535)),
        stage=text("stage"),
        ca_file=file("ca_file"),
        cert_file=file("cert_file"),
        key_file=file("key_file"),
        csr_file=file("csr_file", "device.csr.pem"),
        state_dir=file("state_dir", "state"),
        command_keys=tuple((base / key).resolve() for key in keys),
        groups=tuple(groups),
        tls_min_version=raw.get("tls_min_version", "1.2"),
        firmware_version=text("firmware_version", "1.0.0"),
        telemetry_interval=number("telemetry_interval", 60, 0.05, 86400),
        metrics_interval=number("metrics_interval", 300, 0.05, 86400),
        keepalive=int(
            number("keepalive", 60, 5, 1200)
        ),  # AWS IoT clamps keep-alive to its own range (iot-core.html)
        backoff_base=backoff_base,
        backoff_cap=number("backoff_cap", 120, backoff_base, 3600),
        artifact_schemes=tuple(schemes),
        source=where,
    )
