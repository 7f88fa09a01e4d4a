"""The selected run as the Train pane shows it: its title and settings, progress, chart and log.

Read by a worker thread from the run store (`runstore.RunInfo`, the metrics, the log's tail) each time the
app reads the store for the runs table, so a run started from the CLI in another terminal looks the same
as one started here, and the table and the details never disagree on a status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Log, ProgressBar, Static

from mlm_tui.app.render import ppl_change
from mlm_tui.progress import format_bytes, format_duration
from mlm_tui.run_settings import label
from mlm_tui.runstore import LIVE
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.app.run_chart import RunChart, Series
    from mlm_tui.runstore import RunInfo

LOG_TAIL = 300


@dataclass
class RunReading:
    """What the view shows of the selected run (and the runs overlaid on the chart), read by a worker."""

    info: RunInfo
    series: Series
    others: list[Series] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    lr_curve: list[dict[str, float]] = field(default_factory=list)  # a `--learning-rate auto` range test


class RunView(Vertical):
    """The selected run, and the runs overlaid on its chart; polled while the pane is up."""

    class Read(Message):
        def __init__(self, reading: RunReading | None, problem: str | None) -> None:
            super().__init__()
            self.reading, self.problem = reading, problem

    class Problem(Message):
        """A run could not be read: the pane says so once."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selected: str | None = None
        self.overlays: list[str] = []  # runs drawn on the chart of whichever run is selected
        self._shown_log: tuple[str | None, int] = (None, 0)

    def compose(self) -> ComposeResult:
        from mlm_tui.app.run_chart import RunChart  # imports plotext: after the first paint

        yield Static(Text("No run selected."), id="run-title")
        with Horizontal(id="run-progress-row"):
            yield ProgressBar(id="run-progress", show_eta=False)
            yield Static(id="run-speed")
        yield RunChart(id="chart")
        yield Static(id="run-ppl")
        yield Log(id="run-log", max_lines=LOG_TAIL)

    def on_mount(self) -> None:
        self.query_one("#run-progress-row").display = False  # until a run is shown

    @property
    def chart(self) -> RunChart:
        from mlm_tui.app.run_chart import RunChart

        return self.query_one("#chart", RunChart)

    def show_run(self, run_id: str | None) -> None:
        self.selected = run_id
        self.poll()

    def toggle_overlay(self) -> None:
        """Add the selected run to the runs drawn on every chart, or take it off."""
        run_id = self.selected
        if run_id is None:
            return
        if run_id in self.overlays:
            self.overlays.remove(run_id)
            self.app.notify(f"{run_id} is no longer overlaid on the chart.", timeout=4)
        else:
            self.overlays.append(run_id)
            self.app.notify(f"{run_id} is overlaid on the chart of the runs you select next (V clears "
                            "every overlay).", timeout=4)
        self.poll()

    def clear_overlays(self) -> None:
        if self.overlays:
            self.app.notify(f"No run overlaid on the chart ({len(self.overlays)} cleared).", timeout=4)
        self.overlays = []
        self.poll()

    def forget(self, run_id: str) -> None:
        """A run was deleted: show it no more."""
        if self.selected == run_id:
            self.selected = None
        if run_id in self.overlays:
            self.overlays.remove(run_id)

    def say(self, text: str) -> None:
        self.query_one("#run-title", Static).update(Text(text))

    def poll(self) -> None:
        self._poll_worker(self.selected, list(self.overlays))

    @work(thread=True, exclusive=True, group="runs-poll")
    def _poll_worker(self, selected: str | None, overlays: list[str]) -> None:
        from mlm_tui import runstore
        from mlm_tui.app.run_chart import Series
        from mlm_tui.lr_find import read_curve

        run = runstore.find_run(selected) if selected else None
        if run is None:
            self.post_message(self.Read(None, None))
            return
        try:
            reading = RunReading(run.info(), Series.from_metrics(run.run_id, run.metrics()))
            reading.lr_curve = read_curve(run.dir)
            for run_id in overlays:
                other = runstore.find_run(run_id) if run_id != selected else None
                if other is not None:
                    reading.others.append(Series.from_metrics(other.run_id, other.metrics()))
            try:
                reading.log = run.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            except FileNotFoundError:
                reading.log = []
        except runstore.CorruptRun as exc:
            self.post_message(self.Read(None, str(exc)))
            return
        self.post_message(self.Read(reading, None))

    @on(Read)
    def _read(self, event: Read) -> None:
        event.stop()
        if event.problem:
            self.post_message(self.Problem(event.problem))
        if event.reading is None or event.reading.info.run_id != self.selected:
            self.chart.show(None)
            return
        self._show(event.reading)

    def _show(self, reading: RunReading) -> None:
        info = reading.info
        self.query_one("#run-title", Static).update(_title(reading))
        self.query_one("#run-progress-row").display = True
        bar = self.query_one("#run-progress", ProgressBar)
        if info.status == "preparing":
            total = info.tokenize_total or None
            bar.update(total=total, progress=info.tokenize_done or 0)
            read = format_bytes(info.tokenize_done or 0)
            where = f"preparing: {read} of {format_bytes(total)} read" if total else f"preparing: {read} read"
        else:
            # An unknown total animates the bar: only while the run lives (a run that failed before its
            # plan had none, and nothing of it is still working).
            total = info.total_steps or (None if info.status in LIVE else max(info.step, 1))
            bar.update(total=total, progress=info.step)
            where = f"step {info.step}/{info.total_steps or '?'}"
        if info.status == "running" and info.tokens_per_s:
            where += f" · {info.tokens_per_s:,.0f} tok/s · ETA {format_duration(info.eta or 0)}"
        elif info.status == "completed" and info.train_runtime:
            where += f" · trained in {format_duration(info.train_runtime)}"
        self.query_one("#run-speed", Static).update(Text(where))
        self.chart.show(reading.series, reading.others, reading.lr_curve, info.learning_rate)
        loss = f" · loss {reading.series.losses[-1]:.3f}" if reading.series.losses else ""
        overlaid = ", ".join(series.label for series in reading.others)
        overlay = f" · overlaid: {overlaid} (V clears)" if overlaid else ""
        perplexity = ppl_change(info.perplexity_before, info.perplexity_after) or "–"
        general = ppl_change(info.general_perplexity_before, info.general_perplexity_after)
        cost = f" · general text {general}" if general else ""
        bpc = ppl_change(info.bpc_before, info.bpc_after, 3)
        cost += f" · bits/char {bpc}" if bpc else ""
        self.query_one("#run-ppl", Static).update(Text(f"perplexity {perplexity}{cost}{loss}{overlay}"))
        log = self.query_one("#run-log", Log)
        shown_id, shown_n = self._shown_log
        if shown_id != info.run_id or len(reading.log) < shown_n:
            log.clear()
            shown_n = 0
        log.write_lines([printable(line) for line in reading.log[shown_n:]])
        self._shown_log = (info.run_id, len(reading.log))


def _title(reading: RunReading) -> Text:
    """The run; its settings, with what its defaults resolved to, on a line of their own (cut at its end,
    never its start, when the pane is narrow); notes, and why it ended."""
    info = reading.info
    title = Text(f"{info.run_id} · {info.status}", style="bold")
    title.append(f" · {printable(info.model or '?')} on {printable(info.corpus or '?')}", style="")
    config, plan = info.config, info.plan
    settings = []
    if config is not None:
        words = " whole words" if config.whole_word_mask else ""
        rate = f"{info.learning_rate:.2g}" if info.learning_rate is not None else config.learning_rate
        batch = plan.batch_size if plan is not None else config.batch_size or "auto"
        settings.append(f"chunk {config.chunk_size} · mask {config.mlm_probability}{words} · lr {rate} · "
                        f"batch {batch}")
    if info.vocab_words:  # its perplexities are over another vocabulary's tokens: bits per character compare
        settings.append(f"vocabulary +{len(info.vocab_words)} words")
    if plan is not None:
        asked = config.test_size if config is not None else None
        test = f"{plan.test_chunks} test chunks"
        if asked and asked != plan.test_chunks:
            test += f" (asked {asked})"
        settings.append(f"{plan.train_chunks} train / {test} · {plan.device} ({plan.precision})")
    if config is None and info.config_problem:
        settings.append(f"settings not readable: {printable(info.config_problem)}")
    if settings:
        title.append("\n" + " · ".join(settings), style="dim")
    for note in plan.notes if plan is not None else ():
        title.append(f"\nnote: {printable(note)}", style="italic")
    if info.learning_rate is not None and info.learning_rate_reason not in (None, "given"):
        chart = " (range test: chart, right)" if reading.lr_curve else ""
        # the brake and the pullback on lines of their own: the reason's line is cut at the pane's width
        brake, pullback = info.learning_rate_brake, info.pullback
        reason = info.learning_rate_reason
        reason = reason.removesuffix(f"; {pullback}") if pullback else reason
        reason = reason.removesuffix(f"; {brake}") if brake else reason
        if brake:
            title.append(f"\nlearning rate {brake}", style="yellow")
        if pullback:
            title.append(f"\n{pullback}", style="yellow")
        title.append(f"\nlearning rate {info.learning_rate:.2g}, {reason}{chart}", style="dim")
    if (message := info.message_for(label)) and info.status not in LIVE:
        title.append(f"\n{printable(message)}", style="red" if info.status == "failed" else "")
    return title
