"""Errors that the CLI and the workbench turn into one readable line instead of a traceback."""

from __future__ import annotations


class MlmError(Exception):
    """A failure the user can act on; the message is the whole story (exit status 1)."""

    exit_code = 1


class UsageError(MlmError):
    """A bad flag, value or reference given by the user (exit status 2)."""

    exit_code = 2


class MissingTextField(UsageError):
    """A corpus without the asked-for text column. `columns` are the ones that hold text, so that the
    workbench can offer them to pick from and the CLI can name its flag."""

    def __init__(self, message: str, columns: list[str]) -> None:
        super().__init__(message)
        self.columns = columns


class RunCancelled(MlmError):
    """Training stopped on request (Ctrl+C or a cancel from the workbench)."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """An exception as one line: library messages can run to pages, a terminal line must not."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
