"""The workbench's command-palette provider: every app action by name (ctrl+p)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from mlm_tui.app.workbench import WorkbenchApp


class WorkbenchCommands(Provider):
    """Pane switching, corpus and model choice, history and settings, as palette commands."""

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        return cast("WorkbenchApp", self.app).palette_commands()

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
