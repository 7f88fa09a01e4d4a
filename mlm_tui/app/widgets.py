"""Small widget variants the panes share."""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.strip import Strip
from textual.widgets import Footer, Input
from textual.widgets._footer import FooterKey


class TextBox(Input):
    """An input whose placeholder, in a box too narrow for it, ends with "…" where it is cut: Textual's
    stops mid-word ("auto: 200 on cp"), which reads as the whole hint."""

    def render_line(self, y: int) -> Strip:
        full = self.placeholder
        width = self.scrollable_content_region.width
        if self.value or cell_len(full) <= width:
            return super().render_line(y)
        cut = Text(full)
        cut.truncate(width, overflow="ellipsis")
        self.set_reactive(Input.placeholder, cut.plain)  # for this line only: no refresh, no watchers
        try:
            return super().render_line(y)
        finally:
            self.set_reactive(Input.placeholder, full)


class KeysFooter(Footer):
    """A footer that gives the command palette's key up under `WIDE` columns.

    At 80 columns the palette key, docked on the right, took the room of the pane's last keys: the runs
    table's footer ended in "f10 Hel". Ctrl+p still opens the palette, and the help screen lists it."""

    WIDE = 100

    def compose(self) -> ComposeResult:
        # Each key's `compact`, bound to the footer's, sets its class when the key is built, and with it
        # restyles the key on its own: the key arrives with the class instead.
        for widget in super().compose():
            if isinstance(widget, FooterKey):
                widget.set_class(self.compact, "-compact", update=False)
            yield widget

    def on_resize(self, event: events.Resize) -> None:
        wide = event.size.width >= self.WIDE
        if wide != self.show_command_palette:
            self.show_command_palette = wide
            self.refresh(recompose=True)
