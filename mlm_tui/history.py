"""Sentences tried in the Fill pane, newest last: always in memory, on disk only when the user opts in.

People type clinical and legal text into the workbench, so nothing is written to disk unless the
`keep_history` setting is on. A history file left from a time it was on is kept, but neither read nor
written while it is off; `clear_file` removes it on request.
"""

from __future__ import annotations

from mlm_tui import atomic
from mlm_tui.home import history_path


class History:
    """An ordered, de-duplicated list of sentences with an optional file behind it."""

    def __init__(self, *, persist: bool = False, limit: int = 200) -> None:
        self.persist = persist
        self.limit = limit
        self.items: list[str] = self._read() if persist else []

    @staticmethod
    def _read() -> list[str]:
        try:
            data = atomic.read_json(history_path())
        except (OSError, ValueError):
            return []  # no history yet, or a damaged file: starting empty loses nothing important
        return [s for s in data if isinstance(s, str)] if isinstance(data, list) else []

    def add(self, sentence: str) -> None:
        sentence = sentence.strip()
        if not sentence:
            return
        if sentence in self.items:
            self.items.remove(sentence)
        self.items.append(sentence)
        del self.items[: -self.limit]
        self._write()

    def clear(self) -> None:
        """Forget this session's sentences and delete the file, whether or not it is in use."""
        self.items.clear()
        self.clear_file()

    @staticmethod
    def clear_file() -> bool:
        """Delete the history file; True when there was one."""
        path = history_path()
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def set_persist(self, persist: bool) -> None:
        """Turning persistence on merges the stored sentences under this session's and writes them;
        turning it off leaves the file as it is and stops using it."""
        self.persist = persist
        if persist:
            stored = [s for s in self._read() if s not in self.items]
            self.items = (stored + self.items)[-self.limit:]
            self._write()

    def _write(self) -> None:
        if self.persist:
            atomic.write_json(history_path(), self.items)
