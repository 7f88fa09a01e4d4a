"""What a run learned, in the workbench: the text of `mlm-tui runs learned` (`learned.report_lines`, one
formatter for both), from the runs table.

Both models fill in the word test on the run's test split in a worker (a few seconds to minutes on a CPU);
escape closes the screen at any time and cancels the worker. The view's settings are the CLI's: `+`/`-`
list more or fewer words each way (`--top`: the report holds every word measured, so only the lists
change), `m` the occurrences a verdict needs (`--min-count`: it also decides which of the corpus's words
are measured, so the word test runs again), `a` mixes punctuation, markup and general words into the
lists (`--all`). n/p select a probe and f (or enter) sends its sentence to Fill, with the run's model to
compare. The Train pane keeps a `LearnedSession`: the settings, and the reports of finished runs, stay for
the session (a run's final model never changes), so coming back from Fill shows the report at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

from rich.console import Group
from rich.padding import Padding
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, Static
from textual.worker import get_current_worker

from mlm_tui.app.shared import FillSentence
from mlm_tui.app.widgets import KeysFooter
from mlm_tui.errors import first_line

if TYPE_CHECKING:
    from mlm_tui.learned import LearnedReport

TOPS = (5, 10, 15, 20, 30, 50, 100)  # words listed each way: + and - step through these
MIN_COUNTS = (2, 3, 5, 10)  # occurrences a word needs for a verdict: m steps through these


@dataclass
class LearnedSession:
    """What the view keeps for the session: its settings (None until a report brings `run_learned`'s
    defaults) and the reports of runs' final models, by run and min count."""

    top: int | None = None
    min_count: int | None = None
    mixed: bool = False
    reports: dict[tuple[str, int], LearnedReport] = field(default_factory=dict)


class LearnedReady(Message):
    def __init__(self, report: LearnedReport | None, error: str | None) -> None:
        super().__init__()
        self.report, self.error = report, error


def _shown(lines: list[str], whole_first: bool = False) -> Group:
    """The formatter's lines, each wrapped under its own indent (a probe's sentence wraps beneath itself),
    with the label of an unindented line and of the first line (up to its first colon) in bold."""
    rows: list[Text | Padding] = []
    for n, line in enumerate(lines):
        text = Text(line.lstrip(" "))
        indent = len(line) - len(text.plain)
        if n == 0 and whole_first:
            text.stylize("bold")
        elif n == 0 or not indent:
            colon = text.plain.find(": ")
            text.stylize("bold", 0, colon + 1 if colon >= 0 else len(text.plain))
        rows.append(Padding(text, (0, 0, 0, indent)) if indent else text)
    return Group(*rows)


class LearnedScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss(None)", "Close", tooltip="close the view (and stop a measurement)"),
        Binding("plus", "top(1)", "More", tooltip="list more words each way (5 to 100; --top)"),
        Binding("minus", "top(-1)", "Fewer", tooltip="list fewer words each way"),
        Binding("m", "min_count", "Min count", tooltip="call a word easier or harder on 2, 3, 5 or 10 "
                "occurrences at least (--min-count; it picks the words measured too: measures again)"),
        Binding("a", "mix", "Mix", tooltip="mix punctuation, markup and general words into the lists, or set "
                "them apart (--all)"),
        Binding("n", "probe(1)", "Next probe", tooltip="select the next probe"),
        Binding("p", "probe(-1)", "Previous probe", show=False, tooltip="select the previous probe"),
        Binding("f,enter", "fill", "To Fill", tooltip="the selected probe's sentence in Fill, one [MASK] a "
                "piece of its word as the probe masks it, the run's model as the compare model"),
    ]
    NEEDS_REPORT: ClassVar[set[str]] = {"top", "min_count", "mix", "probe", "fill"}

    def __init__(self, run_id: str, session: LearnedSession) -> None:
        super().__init__()
        self.run_id = run_id
        self.session = session
        self.report: LearnedReport | None = None  # as measured; shown with the session's top and mixing
        self.selected = 0  # the probe that f sends to Fill

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="learned"):
            yield Label(f"What run {self.run_id} learned", id="learned-title", classes="dialog-title")
            yield Static(id="learned-body")
            yield Vertical(id="learned-probes")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one("#learned").focus()
        self._measure()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The settings and probe keys wait for a report (shown dimmed until then)."""
        if action in self.NEEDS_REPORT and self.report is None:
            return None
        if action in ("probe", "fill") and self.report is not None and not self.report.probes:
            return None
        return True

    # -- measuring ------------------------------------------------------------------------------------
    def _measure(self) -> None:
        """Show the session's report of this run at its min count, or measure it."""
        min_count = self.session.min_count
        cached = self.session.reports.get((self.run_id, min_count)) if min_count is not None else None
        if cached is not None:
            self._take(cached)
            return
        self.report = None
        self.refresh_bindings()
        self._title()
        self.query_one("#learned-probes").remove_children()
        self.query_one("#learned-body", Static).update(Text(
            "Filling in the corpus's words on the run's test split with the base model and the run's model…"))
        self._worker(min_count)

    @work(thread=True, exclusive=True, group="learned")
    def _worker(self, min_count: int | None) -> None:
        from mlm_tui.learned import run_learned

        worker = get_current_worker()
        given = {} if min_count is None else {"min_count": min_count}
        try:
            self.post_message(LearnedReady(run_learned(self.run_id, cancelled=lambda: worker.is_cancelled,
                                                       **given), None))
        except Exception as exc:  # a base model gone, a corpus changed...: one line, never a crash
            self.post_message(LearnedReady(None, first_line(exc)))

    @on(LearnedReady)
    def _ready(self, event: LearnedReady) -> None:
        from mlm_tui.learned import FINAL_MODEL

        if event.report is None:
            self.query_one("#learned-body", Static).update(Text(event.error or "", style="red"))
            return
        report = event.report
        if report.model == FINAL_MODEL:  # a checkpoint's report could change: the run may be resumed
            self.session.reports[(self.run_id, report.summary.min_count)] = report
        self._take(report)

    def _take(self, report: LearnedReport) -> None:
        """Show a report measured at the session's min count (the first sets the settings' defaults)."""
        from mlm_tui.learned import probe_lines

        self.report = report
        self.session.min_count = report.summary.min_count
        self.session.top = self.session.top or report.top
        self.selected = 0
        probes = self.query_one("#learned-probes")
        probes.remove_children()
        probes.mount_all(Static(_shown(probe_lines(p)), classes="learned-probe -selected" if not n else
                                "learned-probe") for n, p in enumerate(report.probes))
        self._show()
        self.refresh_bindings()

    def _show(self) -> None:
        """The report up to its probes at the session's top and mixing: the lists change, nothing is
        measured again."""
        from mlm_tui.learned import head_lines

        if self.report is not None:
            shown = replace(self.report, top=self.session.top or self.report.top, mixed=self.session.mixed)
            lines = head_lines(shown, mix="a")
            self.query_one("#learned-body", Static).update(_shown(lines, whole_first=True))
        self._title()

    def _title(self) -> None:
        settings = [f"top {self.session.top}" if self.session.top else "",
                    f"min count {self.session.min_count}" if self.session.min_count else ""]
        self.query_one("#learned-title", Label).update(Text(" · ".join(
            [f"What run {self.run_id} learned", *filter(None, settings)])))

    # -- the keys ---------------------------------------------------------------------------------------
    def action_top(self, step: int) -> None:
        top = self.session.top or TOPS[0]
        choices = [t for t in TOPS if (t > top if step > 0 else t < top)]
        if not choices:
            self.app.notify(f"Top {top} is the {'most' if step > 0 else 'fewest'} the view lists.", timeout=3)
            return
        self.session.top = choices[0] if step > 0 else choices[-1]
        self._show()

    def action_min_count(self) -> None:
        current = self.session.min_count or MIN_COUNTS[0]
        self.session.min_count = next((m for m in MIN_COUNTS if m > current), MIN_COUNTS[0])
        self._measure()

    def action_mix(self) -> None:
        self.session.mixed = not self.session.mixed
        self._show()

    def action_probe(self, step: int) -> None:
        if self.report is not None and self.report.probes:
            self._select((self.selected + step) % len(self.report.probes))

    def _select(self, index: int) -> None:
        """Mark the probe that f sends, and scroll it into view."""
        self.selected = index
        for n, widget in enumerate(self.query(".learned-probe")):
            widget.set_class(n == index, "-selected")
            if n == index:
                self.query_one("#learned", VerticalScroll).scroll_to_widget(widget, animate=False, top=True)

    def action_fill(self) -> None:
        if self.report is None or not self.report.probes:
            return
        probe = self.report.probes[self.selected]
        self.app.post_message(FillSentence(self.report.fill_sentence(probe), compare=self.run_id))
        self.dismiss(None)
