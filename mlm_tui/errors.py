"""Errors that the CLI and the workbench turn into one readable line instead of a traceback."""

from __future__ import annotations


class MlmError(Exception):
    """A failure the user can act on; the message is the whole story (exit status 1)."""

    exit_code = 1


class UsageError(MlmError):
    """A bad flag, value or reference given by the user (exit status 2)."""

    exit_code = 2


class FieldError(UsageError):
    """A bad value of one named setting (a `TrainConfig` field, or any option by its dest name).

    The message is worded without a flag so each front end names the setting its own way: the CLI says
    `--chunk-size`, the Train form marks its Chunk size box. A message may place the name with `{field}`;
    else the name leads it ("chunk size must be at least 2 (got 0)").
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.template = message if "{field}" in message else "{field} " + message
        super().__init__(self.named(field.replace("_", " ")))

    def named(self, name: str) -> str:
        """The message with the setting called `name` (a flag, a form label)."""
        return self.template.replace("{field}", name)


class MissingTextField(FieldError):
    """A corpus without the asked-for text column. `columns` are the ones that hold text, so that the
    workbench can offer them to pick from."""

    def __init__(self, message: str, columns: list[str]) -> None:
        super().__init__("text_field", message)
        self.columns = columns


class RunCancelled(MlmError):
    """Training stopped on request (Ctrl+C or a cancel from the workbench)."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """An exception as one line: library messages can run to pages, a terminal line must not."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
