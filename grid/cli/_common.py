"""What every ``grid`` subcommand shares: the user-facing error, the exit
statuses and small readers of user input."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CliError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_LOST",
           "read_token_file", "want"]

#: Exit statuses (listed in :mod:`grid.cli`'s docstring).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_LOST = 0, 1, 2, 3, 4


class CliError(Exception):
    """A user-facing error: printed as ``grid CMD: message``; exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        #: The exit status of the command that failed.
        self.status = status


def read_token_file(path: Path) -> str:
    """The token stored in ``path``, stripped; :class:`CliError` if the file
    cannot be read or is empty."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise CliError(f"token file {path} is empty")
    return token


def want(cond: bool, message: str) -> None:
    """Raise :class:`CliError` (usage, exit 2) with ``message`` unless ``cond``."""
    if not cond:
        raise CliError(message)
