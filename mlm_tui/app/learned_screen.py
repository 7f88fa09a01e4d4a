"""What a run learned, in the workbench: the same report as `mlm-tui runs learned`, from the runs table.

Both models are run over the run's own test chunks in a worker (a few seconds to minutes on a CPU); escape
closes the screen at any time and the result, if it comes later, is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from mlm_tui.errors import first_line
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.learned import LearnedReport, WordChange


class LearnedReady(Message):
    def __init__(self, report: LearnedReport | None, error: str | None) -> None:
        super().__init__()
        self.report, self.error = report, error


def _words(title: str, words: list[WordChange]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 2, 0, 0))
    for column in ("word", "masked", "loss before", "after", "change"):
        table.add_column(column, justify="left" if column == "word" else "right")
    for w in words:
        table.add_row(printable(w.word), f"{w.count:,}", f"{w.loss_before:.2f}", f"{w.loss_after:.2f}",
                      f"{w.change:+.2f}")
    return table


def _rank(rank: int | None) -> str:
    return str(rank) if rank is not None else ">1000"


class LearnedScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss(None)", "Close")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="learned"):
            yield Label(f"What run {self.run_id} learned", classes="dialog-title")
            yield Static(Text("Measuring the base model and the run's model on the run's test chunks…"),
                         id="learned-body")
            yield Label("esc: close · ↑/↓: scroll", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#learned").focus()
        self._worker()

    @work(thread=True, exclusive=True, group="learned")
    def _worker(self) -> None:
        from mlm_tui.learned import run_learned

        try:
            self.post_message(LearnedReady(run_learned(self.run_id, top=15), None))
        except Exception as exc:  # a base model gone, a corpus changed...: one line, never a crash
            self.post_message(LearnedReady(None, first_line(exc)))

    @on(LearnedReady)
    def _ready(self, event: LearnedReady) -> None:
        body = self.query_one("#learned-body", Static)
        if event.report is None:
            body.update(Text(event.error or "", style="red"))
            return
        report = event.report
        out = Table.grid(padding=(1, 0))
        out.add_row(Text(f"base model: {printable(report.base)}; mean masked-LM loss of each word on the "
                         "run's test chunks, before and after", style="dim"))
        out.add_row(_words("Fell most (learned)", report.better))
        out.add_row(_words("Rose most (unlearned)", report.worse))
        probes = Table(title="Probes from the test split", title_justify="left", title_style="bold",
                       box=None, padding=(0, 2, 0, 0))
        for column in ("sentence", "word", "rank before", "after", "fills before", "fills after"):
            probes.add_column(column)
        for p in report.probes:
            probes.add_row(printable(p.text), printable(p.word), _rank(p.rank_before), _rank(p.rank_after),
                           printable(", ".join(p.fills_before[:3])), printable(", ".join(p.fills_after[:3])))
        out.add_row(probes)
        body.update(out)
