"""Small widget variants the panes share."""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.strip import Strip
from textual.widgets import Input


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
