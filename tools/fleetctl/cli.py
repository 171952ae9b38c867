"""fleetctl command line: argument parsing and exit codes only; the work is in pki/tokens/files.

Exit codes: 0 ok, 2 bad usage or input (flags, files, CSR contents), 1 the remote API failed.
Every failure is one `fleetctl: ...` line on stderr, never a traceback.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from . import commands, defense, files, pki, telemetry, tokens
from .errors import InputError, RemoteError
from .serials import DEFAULT_SERIAL_PATTERN, validate_serial

PROG = "fleetctl"


class _Parser(argparse.ArgumentParser):
    """argparse prints usage and calls sys.exit on bad flags; raise instead so main() returns 2."""

    def error(self, message: str):
        where = self.prog.removeprefix(PROG).strip()
        raise InputError(f"{where}: {message}" if where else message)


# --- command handlers: each returns an exit code --------------------------------------------------

def _ca_create(args) -> int:
    key, cert = pki.create_ca(args.name, args.days, args.key_type)
    out_dir = files.ensure_dir(args.out_dir)
    key_path, cert_path = out_dir / pki.CA_KEY_FILE, out_dir / pki.CA_CERT_FILE
    files.refuse_overwrite([key_path, cert_path], args.force)
    files.write_private_key(key_path, key, args.force)
    files.write_public_pem(cert_path, cert, args.force)
    print(f"wrote {key_path} (mode 0600, keep it offline) and {cert_path}")
    print(f"next: aws iot get-registration-code, then {PROG} ca verification-cert --ca-dir {out_dir} ...")
    return 0


def _ca_verification_cert(args) -> int:
    ca_key, ca_cert = pki.load_ca(args.ca_dir)
    cert = pki.verification_cert(ca_key, ca_cert, args.registration_code)
    out = Path(args.out)
    files.refuse_overwrite([out], args.force)
    files.write_public_pem(out, cert, args.force)
    ca_cert_path = Path(args.ca_dir) / pki.CA_CERT_FILE
    print(f"wrote {out}; register the CA with:")
    print(f"  aws iot register-ca-certificate --ca-certificate file://{ca_cert_path} "
          f"--verification-cert file://{out}")
    return 0


def _device_csr(args) -> int:
    serial = validate_serial(args.serial, args.serial_pattern)
    key, csr = pki.build_csr(serial, args.key_type)
    out_dir = files.ensure_dir(args.out_dir)
    key_path, csr_path = out_dir / f"{serial}.key.pem", out_dir / f"{serial}.csr.pem"
    files.refuse_overwrite([key_path, csr_path], args.force)
    files.write_private_key(key_path, key, args.force)
    files.write_public_pem(csr_path, csr, args.force)
    print(f"wrote {key_path} (mode 0600, stays on the device) and {csr_path}")
    return 0


def _device_sign(args) -> int:
    csr = files.load_csr(args.csr)
    ca_key, ca_cert = pki.load_ca(args.ca_dir)
    cert = pki.sign_device_csr(csr, ca_key, ca_cert, args.days, args.serial_pattern)
    out = Path(args.out)
    files.refuse_overwrite([out], args.force)
    files.write_public_pem(out, cert, args.force)
    print(f"wrote {out}: serial number {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


def _token_issue(args) -> int:
    serial = validate_serial(args.serial, args.serial_pattern)
    id_token = args.id_token or os.environ.get(tokens.ID_TOKEN_ENV)
    reply = tokens.issue_token(args.api_url, serial, id_token)
    # The API shows the token only once: print the whole reply, machine-readable.
    print(json.dumps(reply, indent=2))
    return 0


def _incidents_list(args) -> int:
    items = defense.list_incidents(args.table, thing=args.thing, since=args.since, limit=args.limit,
                                   region=args.region)
    print(defense.incidents_json(items) if args.json else defense.incidents_table(items))
    return 0


def _device_admin(args) -> int:
    reply = defense.device_action(args.device_command, args.thing, function=args.function,
                                  reason=args.reason, region=args.region)
    print(defense.format_device_reply(args.device_command, args.thing, reply))
    return 0


def _id_token(args) -> str | None:
    return args.id_token or os.environ.get(tokens.ID_TOKEN_ENV)


def _lifetime(args) -> int | None:
    return None if args.lifetime_hours is None else args.lifetime_hours * 3600


def _command_send(args) -> int:
    reply = commands.send(args.api_url, _id_token(args), command=args.type,
                          target_=commands.target(args.thing, args.group),
                          params=commands.parse_params(args.param, args.desired_file), lifetime_seconds=_lifetime(args))
    # A remote-access reply carries the tunnel's source token: shown once, to this operator only.
    print(json.dumps({k: v for k, v in reply.items() if k != "document"}, indent=2))
    return 0


def _command_software_update(args) -> int:
    reply = commands.software_update(args.api_url, _id_token(args), file=args.file, version=args.version,
                                     target_=commands.target(args.thing, args.group), lifetime_seconds=_lifetime(args))
    print(json.dumps({k: v for k, v in reply.items() if k != "document"}, indent=2))
    return 0


def _command_list(args) -> int:
    query = {"thing": args.thing, "group": args.group}
    print(json.dumps(commands.call(args.api_url, _id_token(args), "GET", "/commands", query=query), indent=2))
    return 0


def _command_status(args) -> int:
    reply = commands.call(args.api_url, _id_token(args), "GET", f"/commands/{args.job_id}", query={"thing": args.thing})
    print(json.dumps(reply, indent=2))
    return 0


def _command_cancel(args) -> int:
    reply = commands.call(args.api_url, _id_token(args), "POST", f"/commands/{args.job_id}/cancel",
                          body={"reason": args.reason})
    print(json.dumps(reply, indent=2))
    return 0


def _command_retire(args) -> int:
    reply = commands.call(args.api_url, _id_token(args), "POST", f"/rotations/{args.thing}/retire",
                          body={"status": "REVOKED" if args.revoke else "INACTIVE"})
    print(json.dumps(reply, indent=2))
    return 0


def _command_public_key(args) -> int:
    reply = commands.call(args.api_url, _id_token(args), "GET", "/public-key")
    pem = reply.get("pem")
    if not isinstance(pem, str) or "BEGIN PUBLIC KEY" not in pem:
        raise RemoteError("command API returned no public key")
    if args.out:
        out = Path(args.out)
        files.refuse_overwrite([out], args.force)
        out.write_text(pem)
        print(f"wrote {out} (key id {reply.get('key_id')})")
    else:
        print(pem, end="")
    return 0


def _telemetry_query(args) -> int:
    header, rows = telemetry.query(defense.client_factory(args.region), thing=args.thing, start=args.start,
                                   end=args.end, metric=args.metric, database=args.database,
                                   workgroup=args.workgroup, table=args.table)
    print(telemetry.format_rows(header, rows, args.json))
    return 0


# --- parser -------------------------------------------------------------------------------------------

def _add_force(parser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _add_serial_pattern(parser) -> None:
    parser.add_argument("--serial-pattern", default=DEFAULT_SERIAL_PATTERN,
                        help="regular expression a serial must match (default: %(default)s)")


def _add_key_type(parser) -> None:
    parser.add_argument("--key-type", choices=pki.KEY_TYPES, default="ec",
                        help="ec = P-256 (default), rsa = RSA 2048")


def _ca_parsers(commands) -> None:
    ca = commands.add_parser("ca", help="development/manufacturer CA")
    sub = ca.add_subparsers(dest="ca_command", metavar="{create,verification-cert}", required=True)

    create = sub.add_parser("create", help="create a CA key and self-signed CA certificate")
    create.add_argument("--out-dir", required=True, help="writes ca.key.pem (0600) and ca.cert.pem here")
    create.add_argument("--name", default="Fleetwarden Dev CA", help="CA CommonName (default: %(default)s)")
    create.add_argument("--days", type=int, default=3650, help=f"validity, 1..{pki.MAX_CA_DAYS} (default: 3650)")
    _add_key_type(create)
    _add_force(create)
    create.set_defaults(handler=_ca_create)

    verify = sub.add_parser("verification-cert", help="certificate proving CA key possession to AWS IoT")
    verify.add_argument("--ca-dir", required=True, help="directory holding ca.key.pem and ca.cert.pem")
    verify.add_argument("--registration-code", required=True, help="output of `aws iot get-registration-code`")
    verify.add_argument("--out", required=True, help="where to write the verification certificate")
    _add_force(verify)
    verify.set_defaults(handler=_ca_verification_cert)


def _device_parsers(commands) -> None:
    device = commands.add_parser("device", help="device keys, CSRs and certificates")
    sub = device.add_subparsers(dest="device_command", metavar="{csr,sign,quarantine,reinstate}",
                                required=True)

    csr = sub.add_parser("csr", help="generate a device key pair and CSR (CN = serial)")
    csr.add_argument("--serial", required=True, help="device serial; becomes the IoT thing name")
    csr.add_argument("--out-dir", required=True, help="writes <serial>.key.pem (0600) and <serial>.csr.pem")
    _add_key_type(csr)
    _add_serial_pattern(csr)
    _add_force(csr)
    csr.set_defaults(handler=_device_csr)

    sign = sub.add_parser("sign", help="sign a device CSR with the CA (clientAuth certificate)")
    sign.add_argument("--csr", required=True, help="device CSR (PEM)")
    sign.add_argument("--ca-dir", required=True, help="directory holding ca.key.pem and ca.cert.pem")
    sign.add_argument("--out", required=True, help="where to write the device certificate")
    sign.add_argument("--days", type=int, default=365, help=f"validity, 1..{pki.MAX_DEVICE_DAYS} (default: 365)")
    _add_serial_pattern(sign)
    _add_force(sign)
    sign.set_defaults(handler=_device_sign)
    _device_admin_parsers(sub)


def _add_region(parser) -> None:
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, profile)")


def _device_admin_parsers(sub) -> None:
    for action, text in (("quarantine", "contain a device (via the device-admin function)"),
                         ("reinstate", "end a quarantine (revoked certificates stay revoked)")):
        parser = sub.add_parser(action, help=text)
        parser.add_argument("thing", metavar="THING", help="IoT thing name (the device serial)")
        parser.add_argument("--function", required=True, help="device-admin Lambda function name or ARN")
        parser.add_argument("--reason", default="",
                            help=f"why, for the audit record (at most {defense.MAX_REASON} characters)")
        _add_region(parser)
        parser.set_defaults(handler=_device_admin)


def _incidents_parsers(commands) -> None:
    incidents = commands.add_parser("incidents", help="security incidents recorded by the auto-response")
    sub = incidents.add_subparsers(dest="incidents_command", metavar="{list}", required=True)

    listing = sub.add_parser("list", help="list incidents, newest first")
    listing.add_argument("--table", required=True, help="incidents DynamoDB table name")
    listing.add_argument("--thing", help="only this thing's incidents")
    listing.add_argument("--since", metavar="ISO-8601",
                         help="only incidents received at or after this time (UTC if it has no offset)")
    listing.add_argument("--limit", metavar="N", type=int, default=defense.DEFAULT_LIMIT,
                         help=f"at most this many, 1..{defense.MAX_LIMIT} (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    _add_region(listing)
    listing.set_defaults(handler=_incidents_list)


def _telemetry_parsers(subcommands) -> None:
    group = subcommands.add_parser("telemetry", help="device telemetry in S3, queried through Athena")
    sub = group.add_subparsers(dest="telemetry_command", metavar="{query}", required=True)

    q = sub.add_parser("query", help="one device's telemetry in a time range (reads only its shard)")
    q.add_argument("--thing", required=True, help="IoT thing name (the device serial)")
    q.add_argument("--from", dest="start", required=True, metavar="ISO-8601",
                   help="from this instant, inclusive (UTC if it has no offset)")
    q.add_argument("--to", dest="end", required=True, metavar="ISO-8601",
                   help="to this instant, exclusive (UTC if it has no offset)")
    q.add_argument("--metric", help="only this metric's value (rows that have it)")
    q.add_argument("--database", required=True, help="Glue database (stack output TelemetryDatabase)")
    q.add_argument("--workgroup", required=True, help="Athena workgroup (stack output TelemetryWorkGroup)")
    q.add_argument("--table", default=telemetry.DEFAULT_TABLE, help="Glue table (default: %(default)s)")
    q.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    _add_region(q)
    q.set_defaults(handler=_telemetry_query)


def _token_parsers(commands) -> None:
    token = commands.add_parser("token", help="provisioning tokens")
    sub = token.add_subparsers(dest="token_command", metavar="{issue}", required=True)

    issue = sub.add_parser("issue", help="issue a one-time provisioning token for a serial (admins only)")
    issue.add_argument("--serial", required=True, help="device serial the token is for")
    issue.add_argument("--api-url", required=True, help="provisioning API base URL, e.g. https://.../prod")
    issue.add_argument("--id-token", help=f"Cognito ID token (prefer env {tokens.ID_TOKEN_ENV}: "
                                          "command lines are visible to other local users)")
    _add_serial_pattern(issue)
    issue.set_defaults(handler=_token_issue)


def _command_parsers(commands_parser) -> None:
    command = commands_parser.add_parser("command", help="signed cloud-to-device commands (admins only)")
    sub = command.add_subparsers(dest="command_verb", required=True,
                                 metavar="{send,software-update,list,status,cancel,retire-certificate,public-key}")

    def api(parser):
        parser.add_argument("--api-url", required=True, help="command API base URL (stack output CommandApiUrl)")
        parser.add_argument("--id-token", help=f"Cognito ID token (prefer env {tokens.ID_TOKEN_ENV})")

    def targets(parser):
        parser.add_argument("thing", metavar="THING", nargs="?", help="the thing (omit with --group)")
        parser.add_argument("--group", help="a thing group instead of one thing")
        parser.add_argument("--lifetime-hours", type=int, help="how long it waits for an offline device")

    send = sub.add_parser("send", help="sign and queue a command for a thing or a group")
    targets(send)
    send.add_argument("type", metavar="TYPE", choices=commands.COMMAND_TYPES,
                      help=", ".join(commands.COMMAND_TYPES))
    send.add_argument("--param", action="append", metavar="KEY=VALUE", help="a command parameter (repeatable)")
    send.add_argument("--desired-file", help="config: the desired state (a JSON object)")
    api(send)
    send.set_defaults(handler=_command_send)

    update = sub.add_parser("software-update", help="upload an artifact and send the signed update")
    targets(update)
    update.add_argument("--file", required=True, help="the artifact (its SHA-256 and size are signed)")
    update.add_argument("--version", required=True, help="the version the device reports")
    api(update)
    update.set_defaults(handler=_command_software_update)

    listing = sub.add_parser("list", help="commands of a thing or a group (or the newest)")
    listing.add_argument("--thing")
    listing.add_argument("--group")
    api(listing)
    listing.set_defaults(handler=_command_list)

    status = sub.add_parser("status", help="a command's job status (and a thing's execution)")
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--thing")
    api(status)
    status.set_defaults(handler=_command_status)

    cancel = sub.add_parser("cancel", help="cancel a queued command")
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.add_argument("--reason", default="", help="why, for the audit record")
    api(cancel)
    cancel.set_defaults(handler=_command_cancel)

    retire = sub.add_parser("retire-certificate",
                            help="retire a rotated thing's old certificate (after the grace period, or --revoke)")
    retire.add_argument("thing", metavar="THING")
    retire.add_argument("--revoke", action="store_true", help="REVOKED instead of INACTIVE")
    api(retire)
    retire.set_defaults(handler=_command_retire)

    public_key = sub.add_parser("public-key", help="the PEM devices verify commands with")
    public_key.add_argument("--out", help="write the PEM here instead of printing it")
    _add_force(public_key)
    api(public_key)
    public_key.set_defaults(handler=_command_public_key)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fleetwarden operator CLI: device PKI and provisioning tokens.")
    subcommands = parser.add_subparsers(dest="command", metavar="{ca,device,token,incidents,command,telemetry}", required=True)
    _ca_parsers(subcommands)
    _device_parsers(subcommands)
    _token_parsers(subcommands)
    _incidents_parsers(subcommands)
    _command_parsers(subcommands)
    _telemetry_parsers(subcommands)
    return parser


def _fail(message: str) -> None:
    # Exactly one line, whatever the message contains.
    print(f"{PROG}: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except SystemExit as exc:  # only argparse's --help exits; pass its code through
        return exc.code if isinstance(exc.code, int) else 0
    except (InputError, RemoteError) as exc:
        _fail(str(exc))
        return exc.exit_code
    except OSError as exc:  # local file-system trouble not already explained by files.py
        _fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        return 2
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
