"""A confirmation modal for irreversible actions (cancel a run, delete a run).

It names what it acts on, starts with the safe button focused, and takes no single-letter answers: text
the user meant to type elsewhere can never confirm it. Tab (or the arrows) then enter, or a click, does.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class ConfirmScreen(ModalScreen[bool]):
    """Ask before doing `action` (e.g. "Cancel run 20261130-101500-ab12"); dismisses with True to go on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "keep", "Keep"),
        Binding("left,right", "app.focus_previous", show=False),
    ]

    def __init__(self, title: str, detail: str, action: str, keep: str = "Keep") -> None:
        super().__init__()
        self.title_text, self.detail, self.action_label, self.keep_label = title, detail, action, keep

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Label(self.detail, classes="dialog-hint", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.keep_label, id="keep", variant="primary")
                yield Button(self.action_label, id="confirm", variant="error")
            yield Label("tab: choose · enter: press · esc: keep", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_keep(self) -> None:
        self.dismiss(False)
