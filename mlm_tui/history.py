"""Sentences tried in the Fill pane, newest last, kept across restarts unless the user opts out.

People type confidential domain text into the workbench, so history is only written while the
`keep_history` setting is on, and clearing it removes the file rather than emptying it.
"""

from __future__ import annotations

from mlm_tui import atomic
from mlm_tui.home import history_path


class History:
    """An ordered, de-duplicated list of sentences with an optional file behind it."""

    def __init__(self, *, persist: bool = True, limit: int = 200) -> None:
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
        self.items.clear()
        history_path().unlink(missing_ok=True)

    def set_persist(self, persist: bool) -> None:
        """Turning persistence off also deletes what was stored: 'keep none' means none on disk."""
        self.persist = persist
        if persist:
            self._write()
        else:
            history_path().unlink(missing_ok=True)

    def _write(self) -> None:
        if self.persist:
            atomic.write_json(history_path(), self.items)
