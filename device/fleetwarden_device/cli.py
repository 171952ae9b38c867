"""`fleetwarden-device`: keygen (key + CSR made on the device), run (the agent), alert (queue an alert),
provision (fleet provisioning with a claim certificate and a one-time token).

    fleetwarden-device keygen --config device.json   # key_file (0600) and csr_file; never overwrites a key
    fleetwarden-device run --config device.json      # connects and serves until SIGTERM / Ctrl-C
    fleetwarden-device alert --config device.json --code 1042 --field 3=17.5 --trace-file dump.bin
    fleetwarden-device provision --config device.json --claim-cert claim.pem --claim-key claim.key \\
        --template fleetwarden-prod-field --token=<the one-time token>   # "=": a token may begin with "-"
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import sys
from pathlib import Path

from . import identity
from .config import ConfigError, load
from .provisioning import ProvisioningRefused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetwarden-device", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("keygen", "run", "alert", "provision"):
        command = sub.add_parser(name)
        command.add_argument("--config", required=True, type=Path)
    alert = sub.choices["alert"]
    alert.add_argument("--code", required=True, type=int)
    alert.add_argument("--field", action="append", default=[], help="ID=NUMBER, repeatable")
    alert.add_argument("--trace-file", type=Path, help="raw trace bytes (sent base64; stays in your account)")
    provision = sub.choices["provision"]
    provision.add_argument(
        "--claim-cert", required=True, type=Path, help="the shared claim certificate (PEM)"
    )
    provision.add_argument("--claim-key", required=True, type=Path)
    provision.add_argument("--template", required=True, help="the fleet-provisioning template name")
    provision.add_argument(
        "--token", required=True, help="the one-time token an admin obtained for this serial; pass it as --token=TOKEN, since a token may begin with '-'"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s fleetwarden-device %(levelname)s %(message)s",
    )
    try:
        config = load(args.config)
        if args.action == "keygen":
            return _keygen(config)
        if args.action == "alert":
            return _alert(config, args)
        if args.action == "provision":
            return _provision(config, args)
        return _run(config)
    except (ConfigError, ValueError, OSError, ProvisioningRefused) as error:
        print(f"fleetwarden-device: {error}", file=sys.stderr)
        return 2


def _keygen(config) -> int:
    if config.key_file.exists():
        raise ValueError(
            f"{config.key_file} exists: the device key is made once (rotation makes the next one)"
        )
    key = identity.new_key(config.key_file)
    identity.write_public(config.csr_file, identity.csr_pem(key, config.thing))
    print(f"key {config.key_file} (0600), CSR {config.csr_file} (CN={config.thing})")
    return 0


def _alert(config, args) -> int:
    from .agent import write_outbox

    fields = {}
    for item in args.field:
        key, _, value = item.partition("=")
        try:
            fields[key] = float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            raise ValueError(f"--field {item!r}: expected ID=NUMBER") from None
    trace = args.trace_file.read_bytes() if args.trace_file else b""
    body = {
        "header": {"fw": config.firmware_version, "code": args.code, "fields": fields},
        "trace": base64.b64encode(trace).decode("ascii"),
    }
    print(write_outbox(config, "alert", body))
    return 0


def _provision(config, args) -> int:
    from .provisioning import provision

    thing = provision(
        config, claim_cert=args.claim_cert, claim_key=args.claim_key, template=args.template, token=args.token
    )
    print(f"provisioned as {thing}: certificate {config.cert_file}")
    return 0


def _run(config) -> int:
    from .agent import Agent

    agent = Agent(config)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop())
    agent.run()
    return 0
