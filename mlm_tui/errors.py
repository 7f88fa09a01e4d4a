"""Errors that the CLI and the workbench turn into one readable line instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable


class MlmError(Exception):
    """A failure the user can act on; the message is the whole story (exit status 1)."""

    exit_code = 1


class UsageError(MlmError):
    """A bad flag, value or reference given by the user (exit status 2)."""

    exit_code = 2


class FieldError(UsageError):
    """A bad value of one named setting (a `TrainConfig` field, or any option by its dest name).

    The message is worded without a flag so each face names the setting its own way: the CLI says
    `--chunk-size`, the Train form marks its Chunk size box and says "Chunk size". A message may place the
    name with `{field}`, else the name leads it ("chunk size must be at least 2 (got 0)"); a message that
    also names other settings places each as `{name}` and lists it in `also`.
    """

    def __init__(self, field: str, message: str, *, also: tuple[str, ...] = ()) -> None:
        self.field = field
        self.also = also
        self.template = message if "{field}" in message else "{field} " + message
        super().__init__(self.named(in_words))

    def named(self, name: Callable[[str], str]) -> str:
        """The message with each setting called what `name` calls it: its flag, its form label, its words."""
        text = self.template.replace("{field}", name(self.field))
        for other in self.also:
            text = text.replace("{" + other + "}", name(other))
        return text


def in_words(name: str) -> str:
    """A setting's name as a message says it when no face names it: `chunk_size` is "chunk size"."""
    return name.replace("_", " ")


class MissingTextField(FieldError):
    """A corpus without the asked-for text column, or whose column of that name holds no text (numbers).
    `columns` are the ones that hold text, so that the workbench can offer them, and only them, to pick
    from."""

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


def told(exc: BaseException, name: Callable[[str], str] = in_words) -> str:
    """An error as a face tells it: a bad setting called what `name` calls it (`run_settings.flag` in the
    CLI, `run_settings.label` in the workbench). Our own messages are one line already, though data they
    quote may hold a newline (each face shows it escaped); a library's may run to pages."""
    if isinstance(exc, FieldError):
        return exc.named(name)
    return str(exc) if isinstance(exc, MlmError) else first_line(exc)
