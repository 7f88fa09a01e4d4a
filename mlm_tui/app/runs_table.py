"""The run store as a table: one row a run, the columns that fit the width, sorted as the user asks.

Its single-letter keys act on the selected run, and only here: they can never fire from text typed into
the form or Fill. The table does not act itself: it posts `RunsTable.Act` ("resume this run") and the
pane that holds it decides what that means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from mlm_tui.app.render import ppl_change, short_ref
from mlm_tui.progress import format_bytes, format_duration
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.runstore import RunInfo

# (key, title, priority): the table shows as many columns as its width holds, by priority (0 first), in
# this order. Below WIDE_COLUMNS terminal columns only the first four priorities stay, whatever fits.
RUN_COLUMNS = [("run", "run", 0), ("status", "status", 1), ("model", "model", 7), ("corpus", "corpus", 5),
               ("created", "created", 8), ("duration", "took", 6), ("steps", "steps", 4),
               ("ppl", "ppl before → after", 9), ("after", "after", 2), ("change", "change", 3),
               ("general", "general text", 10), ("disk", "disk", 11)]
ESSENTIAL = 4
WIDE_COLUMNS = 100
SORTS = ("created", "status", "after", "change")  # what `s` cycles through
# Status at a glance without colour.
STATUS_MARKS = {"completed": "✓ ", "failed": "✗ ", "cancelled": "■ ", "interrupted": "! "}


class RunsTable(DataTable[str]):
    """The runs, newest first unless sorted otherwise; the cursor stays on the selected run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "act('load', 'main')", "Load", tooltip="load the run's model into Fill"),
        Binding("k", "act('load', 'compare')", "Compare", tooltip="compare the run's model in Fill"),
        Binding("x", "act('cancel')", "Cancel", tooltip="cancel the selected run (asks first)"),
        Binding("d", "act('delete')", "Delete", tooltip="delete the selected run (asks first)"),
        Binding("r", "act('resume')", "Resume", show=False,
                tooltip="resume a cancelled, interrupted or failed run"),
        Binding("c", "act('copy_settings')", "Copy", show=False,
                tooltip="copy the run's settings into the form"),
        Binding("v", "act('overlay')", "Overlay", show=False,
                tooltip="overlay the run on the charts of the runs you select next, or take it off"),
        Binding("V", "act('clear_overlays')", "Clear overlays", show=False,
                tooltip="take every overlaid run off the chart"),
        Binding("s", "sort", "Sort", show=False, tooltip="sort by created, status, perplexity, change"),
        Binding("w", "act('learned')", "Learned", show=False,
                tooltip="what the run learned: words whose loss fell or rose, probes"),
        Binding("p", "act('probe')", "Probe", show=False,
                tooltip="did the run help a task? a probe of base against adapted on labelled text"),
    ]

    class Act(Message):
        """Do `action` to the selected run (None: no run selected), e.g. ("load", run, "compare")."""

        def __init__(self, action: str, run_id: str | None, *args: str) -> None:
            super().__init__()
            self.action, self.run_id, self.args = action, run_id, args

    class Selected(Message):
        """The cursor moved to another run."""

        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.selected: str | None = None
        self._infos: list[RunInfo] = []
        self._rows: list[tuple[str, ...]] = []
        self._columns: list[str] = []
        self._sort = (SORTS[0], True)  # newest first

    def action_act(self, action: str, *args: str) -> None:
        self.post_message(self.Act(action, self.selected, *args))

    def select(self, run_id: str | None) -> None:
        """Put the cursor on this run (one just started), or on none."""
        self.selected = run_id
        self._show()

    def show_runs(self, infos: list[RunInfo]) -> None:
        """The latest look at the run store; with no run selected yet, the first row is."""
        self._infos = infos
        if self.selected is None and infos:
            self.selected = self._sorted()[0].run_id
            self.post_message(self.Selected(self.selected))
        self._show()

    def on_resize(self) -> None:
        self._show()

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = event.row_key.value if event.row_key is not None else None
        if run_id and run_id != self.selected:
            self.selected = run_id
            self.post_message(self.Selected(run_id))

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        key = {"run": "created", "ppl": "after"}.get(key, key)
        if key in SORTS:
            self._sort = (key, not self._sort[1]) if self._sort[0] == key else (key, key == "created")
            self._show()

    def action_sort(self) -> None:
        key = SORTS[(SORTS.index(self._sort[0]) + 1) % len(SORTS)]
        self._sort = (key, key == "created")
        self.app.notify(f"Runs sorted by {key}", timeout=2)
        self._show()

    def _sorted(self) -> list[RunInfo]:
        key, descending = self._sort

        def value(info: RunInfo) -> Any:
            if key == "status":
                return info.status
            if key == "after":
                return info.perplexity_after if info.perplexity_after is not None else float("inf")
            if key == "change":
                change = perplexity_change(info)
                return change if change is not None else float("inf")
            return (info.started or 0.0, info.created or "")  # started: runs of the same second apart

        return sorted(self._infos, key=value, reverse=descending)

    def _show(self) -> None:
        """Rebuild the table when anything in it changed, so each column fits its longest value (a status
        that grows from `running` to `cancelled` is never cut), keeping the cursor on the selected run."""
        every = [key for key, _, _ in RUN_COLUMNS]
        infos = self._sorted()
        ids = [info.run_id for info in infos]
        full = [_row(info, every) for info in infos]
        width = self.size.width or self.app.size.width
        columns = self._fitting(full, width)
        if _width(full, columns) > width:  # still too wide: ids without their date (it is in `created`)
            full = [(row[0][9:], *row[1:]) for row in full]
            columns = self._fitting(full, width)
        if _width(full, columns) > width:  # and the status without its mark
            full = [(row[0], row[1][2:], *row[2:]) for row in full]
        rows = [tuple(row[every.index(key)] for key in columns) for row in full]
        if columns == self._columns and rows == self._rows and self._cursor_on(ids):
            return
        with self.prevent(DataTable.RowHighlighted):
            self.clear(columns=True)  # columns too: their widths only ever grow otherwise
            titles = {key: title for key, title, _ in RUN_COLUMNS}
            for key in columns:
                self.add_column(titles[key], key=key)
            for run_id, row in zip(ids, rows, strict=True):
                self.add_row(*row, key=run_id)
            if self.selected in ids:
                self.move_cursor(row=ids.index(self.selected), animate=False)
        self._columns, self._rows = columns, rows

    def _cursor_on(self, ids: list[str]) -> bool:
        return self.selected not in ids or self.cursor_row == ids.index(self.selected)

    def _fitting(self, rows: list[tuple[str, ...]], width: int) -> list[str]:
        """The columns that fit `width` cells, taken by priority and shown in their usual order."""
        limit = len(RUN_COLUMNS) if self.app.size.width >= WIDE_COLUMNS else ESSENTIAL
        used, chosen = 0, set()
        for key, _title, priority in sorted(RUN_COLUMNS, key=lambda c: c[2]):
            need = _width(rows, [key])
            if priority < ESSENTIAL or (priority < limit and used + need <= width):
                chosen.add(key)
                used += need
        return [key for key, _, _ in RUN_COLUMNS if key in chosen]


def _width(rows: list[tuple[str, ...]], columns: list[str]) -> int:
    keys = [key for key, _, _ in RUN_COLUMNS]
    return sum(max([len(RUN_COLUMNS[keys.index(key)][1]), *(len(row[keys.index(key)]) for row in rows)])
               + 2 for key in columns)  # + the cell padding


def _row(info: RunInfo, columns: list[str]) -> tuple[str, ...]:
    change = perplexity_change(info)
    mark = STATUS_MARKS.get(info.status, "▶ ")
    values = {
        "run": info.run_id, "status": mark + info.status,
        "model": short_ref(info.model or "–"), "corpus": short_ref(info.corpus or "–"),
        "created": (info.created or "–").replace("T", " ")[5:16],
        "duration": format_duration(info.duration) if info.duration is not None else "–",
        "steps": f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step),
        "ppl": ppl_change(info.perplexity_before, info.perplexity_after).split(" (")[0] or "–",
        "after": f"{info.perplexity_after:.2f}" if info.perplexity_after is not None else "–",
        "change": f"{change:+.1f}%" if change is not None else "–",
        "general": ppl_change(info.general_perplexity_before, info.general_perplexity_after) or "–",
        "disk": format_bytes(info.bytes),
    }
    return tuple(printable(values[key]) for key in columns)


def perplexity_change(info: RunInfo) -> float | None:
    before, after = info.perplexity_before, info.perplexity_after
    return (after - before) / before * 100 if before and after is not None else None
