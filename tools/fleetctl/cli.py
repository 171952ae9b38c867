"""fleetctl command line (click): options, defaults from the configured stage, and exit codes only; the work
is in the modules beside it (pki, tokens, commands, defense, telemetry, settings, ...).

Exit codes: 0 ok; 1 the remote side failed (an API, AWS, a download); 2 bad usage or input (flags, files,
their contents), or no usable sign-in (`run fleetctl login`); 130 interrupted.
Every failure is one `fleetctl: ...` line on stderr, never a traceback.

Shell completion (click's own): `eval "$(_FLEETCTL_COMPLETE=bash_source fleetctl)"` in ~/.bashrc
(zsh_source, fish_source for the other shells).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import alerts, commands, defense, files, fleet, pki, session, settings, telemetry, tokens
from .errors import InputError, RemoteError
from .serials import DEFAULT_SERIAL_PATTERN, validate_serial

PROG = "fleetctl"
COMPLETE_VAR = "_FLEETCTL_COMPLETE"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


# --- shared options ---------------------------------------------------------------------------------------

def _option(*decls, **attrs):
    return click.option(*decls, **attrs)


def force_option(f):
    return _option("--force", is_flag=True, help="overwrite existing output files")(f)


def serial_pattern_option(f):
    return _option("--serial-pattern", default=DEFAULT_SERIAL_PATTERN, show_default=True,
                   help="regular expression a serial must match")(f)


def key_type_option(f):
    return _option("--key-type", type=click.Choice(pki.KEY_TYPES), default="ec", show_default=True,
                   help="ec = P-256, rsa = RSA 2048")(f)


def stage_option(f):
    return _option("--stage", metavar="STAGE",
                   help=f"the configured stage (default: ${settings.STAGE_ENV}, else the one configured last)")(f)


def region_option(f):
    return _option("--region", help="AWS region (default: the stage's, else AWS_REGION/profile)")(f)


def json_option(f):
    return _option("--json", "as_json", is_flag=True, help="print JSON instead of a table")(f)


def api_options(output_key: str):
    """--api-url (default: the stage's stack output) and --id-token (default: env, else the signed-in session)."""
    def decorate(f):
        f = _option("--id-token", help=f"Cognito ID token for scripts (prefer env {tokens.ID_TOKEN_ENV}; "
                                       "default: the session of fleetctl login)")(f)
        f = _option("--api-url", help=f"API base URL (default: the stage's stack output {output_key})")(f)
        return stage_option(f)
    return decorate


# --- defaults from the configured stage -------------------------------------------------------------------

def _stage_value(explicit: str | None, stage: str | None, output_key: str) -> str:
    """An explicit flag wins; otherwise the stage's stack output (configure stored it)."""
    return explicit if explicit else settings.load(stage).get(output_key)


def _stage_resource(explicit: str | None, stage: str | None, output_key: str, region: str | None):
    """(name, region) of an AWS resource: the flag, else the stage's output in the stage's region."""
    if explicit:
        return explicit, region
    stored = settings.load(stage)
    return stored.get(output_key), region or stored.region


def _api(api_url: str | None, id_token: str | None, stage: str | None, output_key: str) -> tuple[str, str]:
    """(API base URL, ID token) for an operator API call."""
    url = _stage_value(api_url, stage, output_key)
    return url, _id_token(id_token, stage)


def _id_token(id_token: str | None, stage: str | None) -> str:
    """--id-token, else $FLEETWARDEN_ID_TOKEN (scripts), else the session of `fleetctl login` (refreshed)."""
    explicit = id_token or os.environ.get(tokens.ID_TOKEN_ENV)
    if explicit:
        return tokens.clean_id_token(explicit)
    try:
        stored = settings.load(stage)
    except InputError as exc:
        if "run fleetctl configure" not in str(exc):
            raise
        raise InputError(f"{exc}, then fleetctl login (scripts: --id-token or "
                         f"{tokens.ID_TOKEN_ENV})") from None
    return session.id_token(_cognito, stored)


def _cognito(region: str):
    """A cognito-idp client. Sign-in operations are unauthenticated: no AWS credentials are needed."""
    return defense.client_factory(region)("cognito-idp")


def _ask(label: str) -> str:
    return click.prompt(label, type=str)


def _ask_secret(label: str) -> str:
    # Passwords are only ever typed (hidden), never a flag: a flag would land in the shell history and `ps`.
    return click.prompt(label, type=str, hide_input=True)


class _Echo:
    """session's `out`: a text stream written through click.echo."""

    @staticmethod
    def write(text: str) -> None:
        click.echo(text, nl=False)

    @staticmethod
    def isatty() -> bool:
        return sys.stdout.isatty()


def _print_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


# --- root ---------------------------------------------------------------------------------------------------

@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Fleetwarden operator CLI: the factory (CA, device keys), the field (tokens), incidents, commands,
    telemetry, alerts and the fleet at a glance. Start with `fleetctl configure --stage STAGE`."""


@cli.command("configure")
@click.option("--stage", required=True, help="the stage to read (stacks Fleetwarden-<STAGE>-*)")
@region_option
def configure_cmd(stage: str, region: str | None) -> int:
    """Read the stage's stack outputs once (CloudFormation DescribeStacks) and store them."""
    clients = defense.client_factory(region)
    with defense.aws_errors(f"read the stacks of stage {stage}"):
        cloudformation = clients("cloudformation")
        stored, missing = settings.configure(cloudformation, stage, cloudformation.meta.region_name)
    click.echo(f"stage {stored.stage} ({stored.region}): {len(stored.outputs)} stack outputs stored in "
               f"{settings.stage_dir(stored.stage)}; it is now the default stage")
    for name in missing:
        click.echo(f"  {name} is not deployed: the commands that need it will say so")
    return 0


@cli.command("login")
@click.option("--username", help="your operator user name or email (asked if absent)")
@click.option("--setup-mfa", is_flag=True,
              help="enrol a new authenticator app (prints an otpauth:// URI and a QR code); signs in first "
                   "if needed")
@stage_option
def login_cmd(username: str | None, setup_mfa: bool, stage: str | None) -> int:
    """Sign in to the stage's operator pool: password (SRP, never sent) and authenticator code. The first
    sign-in also replaces the invitation's temporary password and enrols the authenticator app. The session
    is cached 0600 in the config directory and refreshed on its own until it expires (12 h)."""
    stored = settings.load(stage)
    if setup_mfa and session.signed_in(_cognito, stored):
        session.setup_mfa(_cognito, stored, _ask, _Echo())
        click.echo(f"the new authenticator app is now the one {stored.stage} asks codes from")
        return 0
    username = username or _ask("Username")
    enrolled = session.login(_cognito(stored.region), stored, username, password_prompt=_ask_secret,
                             code_prompt=_ask, new_password_prompt=_ask_secret, out=_Echo())
    if setup_mfa and not enrolled:
        session.setup_mfa(_cognito, stored, _ask, _Echo())
    click.echo(f"signed in to {stored.stage} as {username}; session cached in "
               f"{session.session_path(stored.stage)}")
    return 0


@cli.command("logout")
@stage_option
def logout_cmd(stage: str | None) -> int:
    """Revoke the cached session at Cognito and delete it."""
    stored = settings.load(stage)
    if session.logout(_cognito, stored, _Echo()):
        click.echo(f"signed out of {stored.stage}: session deleted")
    else:
        click.echo(f"not signed in to {stored.stage}")
    return 0


# --- ca -----------------------------------------------------------------------------------------------------

@cli.group("ca")
def ca() -> None:
    """Development/manufacturer CA."""


@ca.command("create")
@click.option("--out-dir", required=True, help="writes ca.key.pem (0600) and ca.cert.pem here")
@click.option("--name", default="Fleetwarden Dev CA", show_default=True, help="CA CommonName")
@click.option("--days", type=int, default=3650, show_default=True, help=f"validity, 1..{pki.MAX_CA_DAYS}")
@key_type_option
@force_option
def ca_create(out_dir: str, name: str, days: int, key_type: str, force: bool) -> int:
    """Create a CA key and self-signed CA certificate."""
    key, cert = pki.create_ca(name, days, key_type)
    directory = files.ensure_dir(out_dir)
    key_path, cert_path = directory / pki.CA_KEY_FILE, directory / pki.CA_CERT_FILE
    files.refuse_overwrite([key_path, cert_path], force)
    files.write_private_key(key_path, key, force)
    files.write_public_pem(cert_path, cert, force)
    click.echo(f"wrote {key_path} (mode 0600, keep it offline) and {cert_path}")
    click.echo(f"next: aws iot get-registration-code, then {PROG} ca verification-cert --ca-dir {directory} ...")
    return 0


@ca.command("verification-cert")
@click.option("--ca-dir", required=True, help="directory holding ca.key.pem and ca.cert.pem")
@click.option("--registration-code", required=True, help="output of `aws iot get-registration-code`")
@click.option("--out", required=True, help="where to write the verification certificate")
@force_option
def ca_verification_cert(ca_dir: str, registration_code: str, out: str, force: bool) -> int:
    """Certificate proving CA key possession to AWS IoT."""
    ca_key, ca_cert = pki.load_ca(ca_dir)
    cert = pki.verification_cert(ca_key, ca_cert, registration_code)
    out_path = Path(out)
    files.refuse_overwrite([out_path], force)
    files.write_public_pem(out_path, cert, force)
    click.echo(f"wrote {out_path}; register the CA with:")
    click.echo(f"  aws iot register-ca-certificate --ca-certificate file://{Path(ca_dir) / pki.CA_CERT_FILE} "
               f"--verification-cert file://{out_path}")
    return 0


# --- device -------------------------------------------------------------------------------------------------

@cli.group("device")
def device() -> None:
    """Device keys, CSRs and certificates; quarantine and reinstatement."""


@device.command("csr")
@click.option("--serial", required=True, help="device serial; becomes the IoT thing name")
@click.option("--out-dir", required=True, help="writes <serial>.key.pem (0600) and <serial>.csr.pem")
@key_type_option
@serial_pattern_option
@force_option
def device_csr(serial: str, out_dir: str, key_type: str, serial_pattern: str, force: bool) -> int:
    """Generate a device key pair and CSR (CN = serial)."""
    serial = validate_serial(serial, serial_pattern)
    key, csr = pki.build_csr(serial, key_type)
    directory = files.ensure_dir(out_dir)
    key_path, csr_path = directory / f"{serial}.key.pem", directory / f"{serial}.csr.pem"
    files.refuse_overwrite([key_path, csr_path], force)
    files.write_private_key(key_path, key, force)
    files.write_public_pem(csr_path, csr, force)
    click.echo(f"wrote {key_path} (mode 0600, stays on the device) and {csr_path}")
    return 0


@device.command("sign")
@click.option("--csr", required=True, help="device CSR (PEM)")
@click.option("--ca-dir", required=True, help="directory holding ca.key.pem and ca.cert.pem")
@click.option("--out", required=True, help="where to write the device certificate")
@click.option("--days", type=int, default=365, show_default=True, help=f"validity, 1..{pki.MAX_DEVICE_DAYS}")
@serial_pattern_option
@force_option
def device_sign(csr: str, ca_dir: str, out: str, days: int, serial_pattern: str, force: bool) -> int:
    """Sign a device CSR with the CA (clientAuth certificate)."""
    request = files.load_csr(csr)
    ca_key, ca_cert = pki.load_ca(ca_dir)
    cert = pki.sign_device_csr(request, ca_key, ca_cert, days, serial_pattern)
    out_path = Path(out)
    files.refuse_overwrite([out_path], force)
    files.write_public_pem(out_path, cert, force)
    click.echo(f"wrote {out_path}: serial number {cert.serial_number:x}, "
               f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


def _device_admin_command(action: str, text: str) -> None:
    @device.command(action, help=text)
    @click.argument("thing", metavar="THING")
    @click.option("--function", help="device-admin Lambda (default: the stage's DeviceAdminFunctionName)")
    @click.option("--reason", default="", help=f"why, for the audit record (at most {defense.MAX_REASON} characters)")
    @stage_option
    @region_option
    def admin(thing: str, function: str | None, reason: str, stage: str | None, region: str | None) -> int:
        function, region = _stage_resource(function, stage, "DeviceAdminFunctionName", region)
        reply = defense.device_action(action, thing, function=function, reason=reason, region=region)
        click.echo(defense.format_device_reply(action, thing, reply))
        return 0


_device_admin_command("quarantine", "Contain a device (via the device-admin function).")
_device_admin_command("reinstate", "End a quarantine (revoked certificates stay revoked).")


@device.command("show")
@click.argument("thing", metavar="THING")
@json_option
@stage_option
@region_option
def device_show(thing: str, as_json: bool, stage: str | None, region: str | None) -> int:
    """A device in full: thing, certificates and their states, groups, last seen, open incidents, audit."""
    stored = settings.load(stage)
    shown = fleet.device_show(defense.client_factory(region or stored.region), stored, thing)
    click.echo(fleet.as_json(shown) if as_json else fleet.device_table(shown))
    return 0


# --- fleet --------------------------------------------------------------------------------------------------

@cli.group("fleet")
def fleet_group() -> None:
    """The fleet at a glance."""


@fleet_group.command("status")
@json_option
@stage_option
@region_option
def fleet_status(as_json: bool, stage: str | None, region: str | None) -> int:
    """Devices registered and connected now, quarantined, open incidents, alerts, rejected telemetry (24 h)."""
    stored = settings.load(stage)
    status = fleet.fleet_status(defense.client_factory(region or stored.region), stored)
    click.echo(fleet.as_json(status) if as_json else fleet.status_table(status))
    return 0


# --- alerts -------------------------------------------------------------------------------------------------

@cli.group("alerts")
def alerts_group() -> None:
    """Device alerts and their traces (members of analysts or admins)."""


@alerts_group.command("list")
@click.option("--thing", required=True, help="IoT thing name (the device serial)")
@click.option("--from", "start", metavar="ISO-8601", help="from this instant, inclusive (UTC if no offset)")
@click.option("--to", "end", metavar="ISO-8601", help="to this instant, inclusive (UTC if no offset)")
@click.option("--code", type=click.IntRange(0, alerts.MAX_CODE), help="only alerts with this code")
@click.option("--limit", metavar="N", type=int, default=alerts.DEFAULT_LIMIT, show_default=True,
              help=f"at most this many, 1..{alerts.MAX_LIMIT}")
@json_option
@api_options("AlertsApiUrl")
def alerts_list(thing, start, end, code, limit, as_json, api_url, id_token, stage) -> int:
    """A thing's alerts, newest first (follows the API's pages)."""
    url, bearer = _api(api_url, id_token, stage, "AlertsApiUrl")
    listing = alerts.list_alerts(url, bearer, thing, start=start, end=end, code=code, limit=limit)
    click.echo(alerts.alerts_json(listing) if as_json else alerts.alerts_table(listing))
    return 0


@alerts_group.command("trace")
@click.argument("alert_id", metavar="ALERT_ID")
@click.option("--out", required=True, help="file to write the alert object to (mode 0600)")
@force_option
@api_options("AlertsApiUrl")
def alerts_trace(alert_id, out, force, api_url, id_token, stage) -> int:
    """Download one alert's stored object (the trace) through a short-lived URL; the API audits it."""
    url, bearer = _api(api_url, id_token, stage, "AlertsApiUrl")
    result = alerts.fetch_trace(url, bearer, alert_id, out, progress=sys.stderr.isatty(), force=force)
    click.echo(f"wrote {result['path']} ({result['size']} bytes, mode 0600, sha256 {result['sha256']})")
    return 0


# --- incidents ----------------------------------------------------------------------------------------------

@cli.group("incidents")
def incidents() -> None:
    """Security incidents recorded by the auto-response."""


@incidents.command("list")
@click.option("--table", help="incidents DynamoDB table (default: the stage's IncidentsTableName)")
@click.option("--thing", help="only this thing's incidents")
@click.option("--since", metavar="ISO-8601", help="only incidents received at or after this time (UTC if no offset)")
@click.option("--limit", metavar="N", type=int, default=defense.DEFAULT_LIMIT, show_default=True,
              help=f"at most this many, 1..{defense.MAX_LIMIT}")
@json_option
@stage_option
@region_option
def incidents_list(table: str | None, thing: str | None, since: str | None, limit: int, as_json: bool,
                   stage: str | None, region: str | None) -> int:
    """List incidents, newest first."""
    table, region = _stage_resource(table, stage, "IncidentsTableName", region)
    items = defense.list_incidents(table, thing=thing, since=since, limit=limit, region=region)
    click.echo(defense.incidents_json(items) if as_json else defense.incidents_table(items))
    return 0


# --- token --------------------------------------------------------------------------------------------------

@cli.group("token")
def token() -> None:
    """Provisioning tokens."""


@token.command("issue")
@click.option("--serial", required=True, help="device serial the token is for")
@serial_pattern_option
@api_options("ProvisioningTokenApiUrl")
def token_issue(serial: str, serial_pattern: str, api_url: str | None, id_token: str | None,
                stage: str | None) -> int:
    """Issue a one-time provisioning token for a serial (admins only)."""
    serial = validate_serial(serial, serial_pattern)
    url, bearer = _api(api_url, id_token, stage, "ProvisioningTokenApiUrl")
    # The API shows the token only once: print the whole reply, machine-readable.
    _print_json(tokens.issue_token(url, serial, bearer))
    return 0


# --- command ------------------------------------------------------------------------------------------------

@cli.group("command")
def command() -> None:
    """Signed cloud-to-device commands (admins only)."""


def _lifetime(hours: int | None) -> int | None:
    return None if hours is None else hours * 3600


def _thing_and_type(words: tuple[str, ...], group: str | None) -> tuple[str | None, str]:
    """`[THING] TYPE`: click has no optional positional before a required one, so both come as words."""
    if len(words) == 1:
        return None, words[0]
    if len(words) == 2:
        return words[0], words[1]
    raise InputError("command send: expected [THING] TYPE (TYPE one of " + ", ".join(commands.COMMAND_TYPES) + ")")


def _without_document(reply: dict) -> dict:
    # A remote-access reply carries the tunnel's source token: shown once, to this operator only.
    return {k: v for k, v in reply.items() if k != "document"}


@command.command("send")
@click.argument("words", nargs=-1, required=True, metavar="[THING] TYPE")
@click.option("--group", help="a thing group instead of one thing")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="a command parameter (repeatable)")
@click.option("--desired-file", help="config: the desired state (a JSON object)")
@click.option("--lifetime-hours", type=int, help="how long it waits for an offline device")
@api_options("CommandApiUrl")
def command_send(words, group, params, desired_file, lifetime_hours, api_url, id_token, stage) -> int:
    """Sign and queue a command for a thing or a group. TYPE: config, reboot, shutdown, software-update,
    remote-access, rotate-certificate."""
    thing, kind = _thing_and_type(words, group)
    if kind not in commands.COMMAND_TYPES:
        raise InputError(f"command send: invalid TYPE {kind!r} (choose from {', '.join(commands.COMMAND_TYPES)})")
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    reply = commands.send(url, bearer, command=kind, target_=commands.target(thing, group),
                          params=commands.parse_params(list(params), desired_file),
                          lifetime_seconds=_lifetime(lifetime_hours))
    _print_json(_without_document(reply))
    return 0


@command.command("software-update")
@click.argument("thing", required=False, metavar="[THING]")
@click.option("--group", help="a thing group instead of one thing")
@click.option("--file", "artifact", required=True, help="the artifact (its SHA-256 and size are signed)")
@click.option("--version", required=True, help="the version the device reports")
@click.option("--lifetime-hours", type=int, help="how long it waits for an offline device")
@api_options("CommandApiUrl")
def command_software_update(thing, group, artifact, version, lifetime_hours, api_url, id_token, stage) -> int:
    """Upload an artifact and send the signed update."""
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    reply = commands.software_update(url, bearer, file=artifact, version=version,
                                     target_=commands.target(thing, group), lifetime_seconds=_lifetime(lifetime_hours))
    _print_json(_without_document(reply))
    return 0


@command.command("list")
@click.option("--thing")
@click.option("--group")
@api_options("CommandApiUrl")
def command_list(thing, group, api_url, id_token, stage) -> int:
    """Commands of a thing or a group (or the newest). Prints JSON."""
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    _print_json(commands.call(url, bearer, "GET", "/commands", query={"thing": thing, "group": group}))
    return 0


@command.command("status")
@click.argument("job_id", metavar="JOB_ID")
@click.option("--thing")
@api_options("CommandApiUrl")
def command_status(job_id, thing, api_url, id_token, stage) -> int:
    """A command's job status (and a thing's execution). Prints JSON."""
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    _print_json(commands.call(url, bearer, "GET", f"/commands/{job_id}", query={"thing": thing}))
    return 0


@command.command("cancel")
@click.argument("job_id", metavar="JOB_ID")
@click.option("--reason", default="", help="why, for the audit record")
@api_options("CommandApiUrl")
def command_cancel(job_id, reason, api_url, id_token, stage) -> int:
    """Cancel a queued command."""
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    _print_json(commands.call(url, bearer, "POST", f"/commands/{job_id}/cancel", body={"reason": reason}))
    return 0


@command.command("retire-certificate")
@click.argument("thing", metavar="THING")
@click.option("--revoke", is_flag=True, help="REVOKED instead of INACTIVE")
@api_options("CommandApiUrl")
def command_retire(thing, revoke, api_url, id_token, stage) -> int:
    """Retire a rotated thing's old certificate (after the grace period, or --revoke)."""
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    _print_json(commands.call(url, bearer, "POST", f"/rotations/{thing}/retire",
                              body={"status": "REVOKED" if revoke else "INACTIVE"}))
    return 0


@command.command("public-key")
@click.option("--out", help="write the PEM here instead of printing it")
@force_option
@api_options("CommandApiUrl")
def command_public_key(out, force, api_url, id_token, stage) -> int:
    """The PEM devices verify commands with."""
    url, bearer = _api(api_url, id_token, stage, "CommandApiUrl")
    reply = commands.call(url, bearer, "GET", "/public-key")
    pem = reply.get("pem")
    if not isinstance(pem, str) or "BEGIN PUBLIC KEY" not in pem:
        raise RemoteError("command API returned no public key")
    if out:
        out_path = Path(out)
        files.refuse_overwrite([out_path], force)
        out_path.write_text(pem)
        click.echo(f"wrote {out_path} (key id {reply.get('key_id')})")
    else:
        click.echo(pem, nl=False)
    return 0


# --- telemetry ----------------------------------------------------------------------------------------------

@cli.group("telemetry")
def telemetry_group() -> None:
    """Device telemetry in S3, queried through Athena."""


@telemetry_group.command("query")
@click.option("--thing", required=True, help="IoT thing name (the device serial)")
@click.option("--from", "start", required=True, metavar="ISO-8601", help="from this instant, inclusive (UTC if no offset)")
@click.option("--to", "end", required=True, metavar="ISO-8601", help="to this instant, exclusive (UTC if no offset)")
@click.option("--metric", help="only this metric's value (rows that have it)")
@click.option("--database", help="Glue database (default: the stage's TelemetryDatabase)")
@click.option("--workgroup", help="Athena workgroup (default: the stage's TelemetryWorkGroup)")
@click.option("--table", default=telemetry.DEFAULT_TABLE, show_default=True, help="Glue table")
@json_option
@stage_option
@region_option
def telemetry_query(thing, start, end, metric, database, workgroup, table, as_json, stage, region) -> int:
    """One device's telemetry in a time range (reads only its shard)."""
    database, region = _stage_resource(database, stage, "TelemetryDatabase", region)
    workgroup, region = _stage_resource(workgroup, stage, "TelemetryWorkGroup", region)
    header, rows = telemetry.query(defense.client_factory(region), thing=thing, start=start, end=end,
                                   metric=metric, database=database, workgroup=workgroup, table=table)
    click.echo(telemetry.format_rows(header, rows, as_json))
    return 0


# --- entry point --------------------------------------------------------------------------------------------

def _fail(message: str) -> None:
    # Exactly one line, whatever the message contains.
    print(f"{PROG}: {' '.join(str(message).split())}", file=sys.stderr)


def _usage_line(exc: click.UsageError) -> str:
    where = exc.ctx.command_path.removeprefix(PROG).strip() if exc.ctx else ""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        message = f"a command is required: {exc.ctx.command_path} --help lists them"
    else:
        message = exc.format_message()
    return f"{where}: {message}" if where else message


def main(argv: list[str] | None = None) -> int:
    try:
        result = cli.main(args=argv, prog_name=PROG, standalone_mode=False, complete_var=COMPLETE_VAR)
        return result if isinstance(result, int) else 0
    except click.UsageError as exc:
        _fail(_usage_line(exc))
        return 2
    except (InputError, RemoteError) as exc:
        _fail(str(exc))
        return exc.exit_code
    except click.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code
    except click.Abort:
        _fail("interrupted")
        return 130
    except SystemExit as exc:  # click's shell completion prints the script and exits
        return exc.code if isinstance(exc.code, int) else 0
    except OSError as exc:  # local file-system trouble not already explained by files.py
        _fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        return 2
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
