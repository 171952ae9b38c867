"""`fleetwarden-device`: keygen (key + CSR made on the device), run (the agent), alert (queue an alert).

fleetwarden-device keygen --config device.json     # writes key_file (0600) and csr_file; never overwrites
fleetwarden-device run --config device.json        # connects and serves until SIGTERM / Ctrl-C
fleetwarden-device alert --config device.json --code 1042 --field 3=17.5 --trace-file dump.bin
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetwarden-device", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("keygen", "run", "alert"):
        command = sub.add_parser(name)
        command.add_argument("--config", required=True, type=Path)
    alert = sub.choices["alert"]
    alert.add_argument("--code", required=True, type=int)
    alert.add_argument("--field", action="append", default=[], help="ID=NUMBER, repeatable")
    alert.add_argument("--trace-file", type=Path, help="raw trace bytes (sent base64; stays in your account)")
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
        return _run(config)
    except (ConfigError, ValueError, OSError) as error:
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


def _run(config) -> int:
    from .agent import Agent

    agent = Agent(config)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stop())
    agent.run()
    return 0
