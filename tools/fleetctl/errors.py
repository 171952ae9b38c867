"""Exceptions the CLI turns into one `fleetctl: ...` line and an exit code (never a traceback)."""


class InputError(ValueError):
    """Bad input from the operator: a flag, a file or its contents. Exit code 2."""

    exit_code = 2


class RemoteError(Exception):
    """The remote API refused or failed the request, or could not be reached. Exit code 1."""

    exit_code = 1


class AuthRequired(InputError):
    """No usable operator session (never signed in, expired, revoked). Exit code 2."""

    def __init__(self, message: str = "not signed in or the session expired: run fleetctl login") -> None:
        super().__init__(message)
