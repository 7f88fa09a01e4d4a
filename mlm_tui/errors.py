"""Errors that the CLI and the workbench turn into one readable line instead of a traceback."""

from __future__ import annotations


class MlmError(Exception):
    """A failure the user can act on; the message is the whole story (exit status 1)."""

    exit_code = 1


class UsageError(MlmError):
    """A bad flag, value or reference given by the user (exit status 2)."""

    exit_code = 2


class RunCancelled(MlmError):
    """Training stopped on request (Ctrl+C or a cancel from the workbench)."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """An exception as one line: library messages can run to pages, a terminal line must not."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
