"""What a run learned, in the workbench: the same report as `mlm-tui runs learned`, from the runs table.

Both models fill in the word test on the run's test split in a worker (a few seconds to minutes on a CPU);
escape closes the screen at any time and cancels the worker. `a` mixes punctuation, markup and general
words into the lists, or sets them apart again, from the same report.
"""

from __future__ import annotations

from dataclasses import replace
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
from textual.worker import get_current_worker

from mlm_tui.errors import first_line
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.learned import LearnedReport
    from mlm_tui.word_test import WordResult


class LearnedReady(Message):
    def __init__(self, report: LearnedReport | None, error: str | None) -> None:
        super().__init__()
        self.report, self.error = report, error


def _words(title: str, words: list[WordResult]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, padding=(0, 2, 0, 0))
    for column in ("word", "occurrences", "loss before", "after", "change", "95% interval", "total"):
        table.add_column(column, justify="left" if column == "word" else "right")
    for w in words:
        interval = f"[{w.ci[0]:+.2f}, {w.ci[1]:+.2f}]" if w.ci is not None else ""
        table.add_row(printable(w.word), f"{w.occurrences:,}", f"{w.loss_before:.2f}", f"{w.loss_after:.2f}",
                      f"{w.change:+.2f}", interval, f"{w.total:+.1f}")
    return table


def _rank(rank: int | None) -> str:
    return str(rank) if rank is not None else ">1000"


class LearnedScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss(None)", "Close"),
                                             Binding("a", "mix", "Mix general words")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.report: LearnedReport | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="learned"):
            yield Label(f"What run {self.run_id} learned", classes="dialog-title")
            yield Static(Text("Filling in the corpus's words on the run's test split with the base model "
                              "and the run's model…"), id="learned-body")
            yield Label("esc: close · a: mix in punctuation and general words, or set them apart · ↑/↓: "
                        "scroll", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#learned").focus()
        self._worker()

    @work(thread=True, exclusive=True, group="learned")
    def _worker(self) -> None:
        from mlm_tui.learned import run_learned

        worker = get_current_worker()
        try:
            self.post_message(LearnedReady(run_learned(self.run_id, top=15,
                                                       cancelled=lambda: worker.is_cancelled), None))
        except Exception as exc:  # a base model gone, a corpus changed...: one line, never a crash
            self.post_message(LearnedReady(None, first_line(exc)))

    def action_mix(self) -> None:
        if self.report is not None:
            self.report = replace(self.report, mixed=not self.report.mixed)
            self._show(self.report)

    @on(LearnedReady)
    def _ready(self, event: LearnedReady) -> None:
        if event.report is None:
            self.query_one("#learned-body", Static).update(Text(event.error or "", style="red"))
            return
        self.report = event.report
        self._show(event.report)

    def _show(self, report: LearnedReport) -> None:
        out = Table.grid(padding=(1, 0))
        out.add_row(Text(printable(report.summary.line()), style="bold"))
        out.add_row(Text(f"base model: {printable(report.base)}, the run's {report.model}; each word's "
                         f"occurrences in the run's test split masked whole (at most {report.per_word} a "
                         "word): mean over them of the summed loss of its pieces, in nats", style="dim"))
        apart = "" if report.mixed else " (punctuation, markup and general words apart: a)"
        out.add_row(_words("Easier beyond noise" + apart, report.better))
        out.add_row(_words("Harder beyond noise", report.worse))
        if report.general:
            out.add_row(_words("Punctuation, markup and general English", report.general))
        if report.unchanged:
            names = ", ".join(w.word for w in report.unchanged)
            out.add_row(Text("Unchanged within noise: " + printable(names)))
        probes = Table(title="Probes from the test split", title_justify="left", title_style="bold",
                       box=None, padding=(0, 2, 0, 0))
        for column in ("sentence", "word", "rank before", "after", "piece ranks", "fills before",
                       "fills after"):
            probes.add_column(column)
        for p in report.probes:
            pieces = ", ".join(f"{a}->{b}" for a, b in zip(p.piece_ranks_before, p.piece_ranks_after,
                                                           strict=True))
            probes.add_row(printable(p.text), printable(p.word), _rank(p.rank_before), _rank(p.rank_after),
                           pieces, printable(", ".join(p.fills_before[:3])),
                           printable(", ".join(p.fills_after[:3])))
        out.add_row(probes)
        self.query_one("#learned-body", Static).update(out)
