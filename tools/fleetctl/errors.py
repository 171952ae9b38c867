"""Exceptions the CLI turns into one `fleetctl: ...` line and an exit code (never a traceback)."""


class InputError(ValueError):
    """Bad input from the operator: a flag, a file or its contents. Exit code 2."""

    exit_code = 2


class RemoteError(Exception):
    """The remote API refused or failed the request, or could not be reached. Exit code 1."""

    exit_code = 1
