"""Errors a user can cause, with the exit code the CLI turns them into.

Every package may raise these; the CLI prints ``str(error)`` on one line and exits with ``exit_code``.
"""
from __future__ import annotations


class PcsegError(Exception):
    """Base class: an error whose message is meant for the user."""

    exit_code = 1


class UsageError(PcsegError):
    """The command line itself is wrong (unknown option value, conflicting flags)."""

    exit_code = 2


class BadInputError(PcsegError):
    """Input data is wrong: unreadable, truncated, inconsistent. Names the file when one is known."""

    exit_code = 3

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
