"""Did the run help a task? The downstream probe of `mlm-tui runs probe`, from the runs table.

The screen asks for the label column first, from the corpus's own columns (the run's corpus unless the
user opens another with o), then probes the run's base model against its final model in a worker:
progress comes back as messages, escape cancels the worker between batches (or training steps) and closes
the screen. The method is the linear probe unless m picks the fine-tune (its default steps), which probes
again at once when a label column is picked already.
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
from textual.worker import get_current_worker

from mlm_tui.errors import RunCancelled, first_line
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.probe import ProbeReport


class ColumnsRead(Message):
    def __init__(self, corpus: str, columns: list[str] | None, error: str | None) -> None:
        super().__init__()
        self.corpus, self.columns, self.error = corpus, columns, error


class ProbeProgress(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ProbeDone(Message):
    def __init__(self, report: ProbeReport | None, error: str | None) -> None:
        super().__init__()
        self.report, self.error = report, error


def report_table(report: ProbeReport) -> Table:
    """The figures, the verdict, and F1 per class for each model."""
    from mlm_tui.probe import summary_lines

    out = Table.grid(padding=(1, 0))
    lines = summary_lines(report)
    verdict = lines.pop() if report.difference is not None else None
    out.add_row(Text("\n".join(printable(line) for line in lines), style="dim"))
    if verdict is not None:
        out.add_row(Text(printable(verdict), style="bold"))
    per_class = Table(title="F1 per class (test part)", title_justify="left", title_style="bold", box=None,
                      padding=(0, 2, 0, 0))
    per_class.add_column("class")
    per_class.add_column("train", justify="right")
    per_class.add_column("test", justify="right")
    for score in report.models:
        per_class.add_column(printable(score.role), justify="right")
    counts = report.data.counts()
    for i, row in enumerate(counts):
        per_class.add_row(printable(str(row["label"])), f"{row['train']:,}", f"{row['test']:,}",
                          *(f"{s.per_class[i]['f1']:.1%}" for s in report.models))
    out.add_row(per_class)
    return out


def method_choices() -> dict[str, str]:
    """The probe's methods as the picker words them, each to its `probe.METHODS` name."""
    from mlm_tui.probe import FEATURES, FINETUNE_BATCH_SIZE, STEPS

    return {f"linear: a logistic regression on frozen features ({FEATURES}); quick": "linear",
            f"fine-tune: a classification head on each model, every weight trained {STEPS} steps of "
            f"{FINETUNE_BATCH_SIZE} texts; minutes on a CPU": "finetune"}


class ProbeScreen(ModalScreen[None]):
    CSS_PATH = "probe_screen.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close"),
        Binding("f", "pick_label", "Label column"),
        Binding("o", "open_corpus", "Corpus"),
        Binding("m", "pick_method", "Method"),
    ]

    def __init__(self, run_id: str, corpus: str, text_field: str) -> None:
        super().__init__()
        self.run_id, self.corpus, self.text_field = run_id, corpus, text_field
        self.columns: list[str] = []
        self.method = "linear"
        self.label_field: str | None = None  # the column last probed with

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="probe"):
            yield Label(f"Did run {self.run_id} help a task? Base model against the run's model",
                        classes="dialog-title")
            yield Static(Text(f"Reading the columns of {printable(self.corpus)}…"), id="probe-status")
            yield Static(id="probe-body")
            yield Label("f: label column · o: another corpus · m: method · esc: cancel and close",
                        classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#probe").focus()
        self._read_columns(self.corpus)

    def _status(self, text: str, style: str = "") -> None:
        self.query_one("#probe-status", Static).update(Text(text, style=style))

    @work(thread=True, exclusive=True, group="probe")
    def _read_columns(self, corpus: str) -> None:
        from mlm_tui.probe import columns

        try:
            self.post_message(ColumnsRead(corpus, columns(corpus), None))
        except Exception as exc:  # a missing file, a dataset offline: one line
            self.post_message(ColumnsRead(corpus, None, first_line(exc)))

    @on(ColumnsRead)
    def _columns_read(self, event: ColumnsRead) -> None:
        if event.columns is None:
            self._status(event.error or "", "red")
            return
        self.corpus = event.corpus
        self.columns = [c for c in event.columns if c != self.text_field]
        if not self.columns:
            self._status(f"{printable(self.corpus)} has no column besides its text {self.text_field!r}: "
                         "open a labelled corpus with o (CSV, JSON lines or Parquet with a label column).",
                         "red")
            return
        self.action_pick_label()

    def action_pick_label(self) -> None:
        from mlm_tui.app.prompt import PickScreen

        if not self.columns:
            return

        def chosen(column: str | None) -> None:
            if column is not None:
                self._probe(column)

        self.app.push_screen(PickScreen(f"{printable(self.corpus)}: which column holds each text's class?",
                                        self.columns), chosen)

    def action_open_corpus(self) -> None:
        from mlm_tui.app.prompt import PromptScreen

        def change(value: str | None) -> None:
            if value:
                self.workers.cancel_group(self, "probe")
                self._status(f"Reading the columns of {printable(value)}…")
                self._read_columns(value)

        self.app.push_screen(PromptScreen("Labelled corpus to probe on", self.corpus, paths=True), change)

    def action_pick_method(self) -> None:
        from mlm_tui.app.prompt import PickScreen

        choices = method_choices()

        def chosen(choice: str | None) -> None:
            if choice is None:
                return
            self.method = choices[choice]
            if self.label_field is not None:
                self._probe(self.label_field)

        self.app.push_screen(PickScreen("How should each model be probed?", list(choices)), chosen)

    def _probe(self, label_field: str) -> None:
        self.label_field = label_field
        self.query_one("#probe-body", Static).update("")
        how = "a linear probe" if self.method == "linear" else "a fine-tune probe"
        self._status(f"Probing on {printable(self.corpus)}, labels {label_field!r}, {how}…")
        self._worker(label_field, self.method)

    @work(thread=True, exclusive=True, group="probe")
    def _worker(self, label_field: str, method: str) -> None:
        from mlm_tui.probe import STEPS, probe_run

        worker = get_current_worker()
        stage = "features" if method == "linear" else "fine-tune"

        def progress(done: int, total: int, what: str) -> None:
            self.post_message(ProbeProgress(f"{stage}: {done:,} of {total:,} {what}"))

        try:
            report = probe_run(self.run_id, label_field, self.corpus, text_field=self.text_field,
                               method=method, steps=STEPS, cancelled=lambda: worker.is_cancelled,
                               status=lambda text: self.post_message(ProbeProgress(text)), progress=progress)
        except RunCancelled:
            return
        except Exception as exc:  # a bad label column, a model gone: one line, never a crash
            self.post_message(ProbeDone(None, first_line(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(ProbeDone(report, None))

    @on(ProbeProgress)
    def _progress(self, event: ProbeProgress) -> None:
        self._status(printable(event.text), "italic")

    @on(ProbeDone)
    def _done(self, event: ProbeDone) -> None:
        if event.report is None:
            self._status(event.error or "", "red")
            return
        self._status("Done: f picks another label column, o another corpus, m another method.", "dim")
        self.query_one("#probe-body", Static).update(report_table(event.report))

    def action_close(self) -> None:
        self.workers.cancel_group(self, "probe")
        self.dismiss(None)
