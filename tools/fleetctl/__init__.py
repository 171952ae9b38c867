"""fleetctl: the Fleetwarden operator CLI (the factory, the field, incidents, commands, telemetry, alerts).

Logic lives in plain modules so it can be tested without the command line:
`settings` (a stage's stack outputs, read once by `fleetctl configure`), `session` (Cognito sign-in and the
token cache), `serials` (thing-name rules), `files` (PEM loading and safe writes), `pki` (certificates),
`tokens` and `commands` (operator API clients), `defense` (incidents, quarantine), `telemetry` (Athena).
`cli` only declares the commands (click) and maps errors to exit codes.
"""
