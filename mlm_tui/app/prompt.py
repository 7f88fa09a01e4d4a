"""Small modal dialogs: a one-line prompt (with optional path completion) and a pick-from-list."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Label, OptionList

from mlm_tui.app.widgets import TextBox


class PathSuggester(Suggester):
    """Completes the last path component from the file system (accept with the right arrow)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        path = Path(os.path.expanduser(value))
        folder, stem = (path, "") if value.endswith(os.sep) else (path.parent, path.name)
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.name.startswith(stem) and
                           (not e.name.startswith(".") or stem.startswith(".")))
        except OSError:
            return None
        if not names:
            return None
        suffix = names[0][len(stem):]
        if (folder / names[0]).is_dir():
            suffix += os.sep
        return value + suffix if suffix else None


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value; Enter answers, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "", paths: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.paths = paths

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield TextBox(self.value, placeholder=self.placeholder,
                        suggester=PathSuggester() if self.paths else None, id="prompt-input")
            hint = "enter: ok · esc: cancel" + (" · →: complete path" if self.paths else "")
            yield Label(hint, classes="dialog-hint")

    @on(Input.Submitted)
    def answer(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[str | None]):
    """Pick one string from a list (newest first); Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, items: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.items = items

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*(Text(item) for item in self.items), id="pick-list")  # `[MASK]` is no markup
            yield Label("enter: pick · esc: cancel", classes="dialog-hint")

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.items[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


class ModelPickScreen(ModalScreen[str | None]):
    """Ask for a model: type a folder, a hub id or `starter`, or pick a finished run from the list.

    Runs are what people fine-tune here, and their ids are long: picking one by its corpus, date and
    perplexity beats typing `20261130-093008-9db6`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str, runs: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text, self.value, self.runs = title, value, runs

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield TextBox(self.value, placeholder="folder, hub id or starter", suggester=PathSuggester(),
                        id="prompt-input")
            if self.runs:
                yield Label("or a finished run (↓ to the list):", classes="dialog-hint")
                yield OptionList(*(Text(label) for _, label in self.runs), id="pick-list")
            yield Label("enter: ok · esc: cancel · →: complete path", classes="dialog-hint")

    @on(Input.Submitted)
    def answer(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.runs[event.option_index][0])

    def key_down(self) -> None:
        if self.focused is self.query_one("#prompt-input") and self.runs:
            self.query_one("#pick-list").focus()

    def action_cancel(self) -> None:
        self.dismiss(None)
