"""The help screen: the workflow in four steps, then every key of every pane.

The key tables are read from the panes' own `BINDINGS`, so help can never disagree with what a key does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Label, Static

# One line a step, wrapped by the dialog at its own width (hard breaks wrapped again read raggedly).
WORKFLOW = [
    "1. Fill (F1): type a sentence with [MASK]; the top fills appear as you type.",
    "2. Chunks (F2): open your corpus (ctrl+o) and see how it is cut into pieces and chunks.",
    "3. Train (F3): fill in the form (f goes to it) and start a run (ctrl+s); it is its own process and "
    "keeps going if you quit. Watch loss and perplexity; cancel it from the runs table.",
    "4. Compare: pick a finished run in the runs table and press l (load) or k (compare); Fill then shows "
    "the base model and the run side by side.",
    "Words (F5) shows why a corpus needs adapting: its words cut into pieces, beside general English.",
]
# Keys Textual gives every app, shown with the app's own.
BUILT_IN: list[BindingType] = [
    Binding("ctrl+p", "command_palette", "Palette", tooltip="the command palette: every command by name"),
    Binding("tab,shift+tab", "focus_next", "Focus", tooltip="the next / previous box, table or chart"),
    Binding("ctrl+q", "quit", "Quit", tooltip="quit (a run keeps training in its own process)"),
]

Section = tuple[str, Sequence[BindingType]]


def key_label(key: str) -> str:
    """A binding's keys as a person types them: `right,n` → `→ / n`."""
    names = {"right": "→", "left": "←", "up": "↑", "down": "↓", "question_mark": "?", "escape": "esc",
             "space": "space", "delete": "del", "plus": "+", "minus": "-"}
    return " / ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def _bindings(items: Iterable[BindingType]) -> Iterable[Binding]:
    for item in items:
        if isinstance(item, Binding):
            yield item
        else:
            yield Binding(*item)


def bound_key(node: DOMNode, action: str) -> str:
    """` (key)` of the binding of `node` that runs `action`, or "" when no key does."""
    for binding in _bindings(type(node).BINDINGS):
        if binding.action == action:
            return f" ({key_label(binding.key)})"
    return ""


def keys_table(title: str, bindings: Sequence[BindingType]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None,
                  padding=(0, 2, 0, 0))
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("action")
    for binding in _bindings(bindings):
        description = binding.tooltip or binding.description
        if description:
            table.add_row(key_label(binding.key), description)
    return table


class HelpScreen(ModalScreen[None]):
    """Workflow and keys; any of escape, q, ? or F1 closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f10", "dismiss(None)", "Close")]

    def __init__(self, sections: Sequence[Section]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Label("mlm-tui: the workflow", classes="dialog-title")
            yield Static(Text("\n".join(WORKFLOW)), id="help-workflow")
            for title, bindings in self.sections:
                yield Static(keys_table(title, bindings), classes="help-keys")
            yield Label("esc: close · ↑/↓: scroll", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#help").focus()
