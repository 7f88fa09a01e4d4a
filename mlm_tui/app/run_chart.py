"""The Train pane's chart: training loss (raw and smoothed) and eval perplexity or the learning rate
against steps, for the selected run and the runs overlaid on it, and a `--learning-rate auto` run's
range test beside it.

Drawn with textual-plotext (axes and ticks come from plotext). The legend is a line of its own under the
plots, never inside them, where it would hide the step-0 perplexity. Focused (tab from the runs table),
the chart has keys of its own, as TensorBoard has toggles: a log scale for the loss, the rate instead of
perplexity, and a cursor that reads out the values at a step. This module imports plotext, which takes a
few tenths of a second: the Train pane imports it when it mounts, after the first paint.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.console import Console, ConsoleOptions
from rich.console import RenderResult as RichResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

MAX_POINTS = 400  # a long run is thinned to this many points per line; plotext draws cells, not points
SMOOTHING = 0.9  # exponential moving average of the loss, as TensorBoard's smoothing slider
# (loss, perplexity or rate) colours of the selected run, then of each overlaid run, in plotext's names
COLOURS = [("cyan", "orange"), ("magenta", "red"), ("green", "yellow"), ("blue", "white")]
RICH = {"cyan": "cyan", "orange": "dark_orange", "magenta": "magenta", "red": "red", "green": "green",
        "yellow": "yellow", "blue": "blue", "white": "white"}
EMPTY = "No run selected: pick one in the runs table, or start one with the form."
# The cursor's read-out: each value's column heading, (wide, compact), and how it is written.
READOUT = {"loss": ("loss", "loss"), "smoothed": ("smoothed", "smooth"), "perplexity": ("perplexity", "ppl"),
           "rate": ("rate", "lr")}
FORMATS = {"loss": "{:.3f}", "smoothed": "{:.3f}", "perplexity": "{:.2f}", "rate": "{:.1e}"}


@dataclass
class Series:
    """One run's curves, from its metrics.jsonl."""

    label: str
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    perplexities: list[float] = field(default_factory=list)
    rate_steps: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    @classmethod
    def from_metrics(cls, label: str, rows: list[dict[str, Any]]) -> Series:
        series = cls(label)
        for row in rows:
            step = row.get("step")
            if not isinstance(step, int):
                continue
            if _finite(row.get("loss")):
                series.loss_steps.append(step)
                series.losses.append(float(row["loss"]))
            if _finite(row.get("learning_rate")):
                series.rate_steps.append(step)
                series.rates.append(float(row["learning_rate"]))
            if _finite(row.get("eval_perplexity")):
                series.eval_steps.append(step)
                series.perplexities.append(float(row["eval_perplexity"]))
        order = sorted(range(len(series.eval_steps)), key=series.eval_steps.__getitem__)  # step 0 comes last
        series.eval_steps = [series.eval_steps[i] for i in order]
        series.perplexities = [series.perplexities[i] for i in order]
        return series

    @property
    def empty(self) -> bool:
        return not self.losses and not self.perplexities

    @property
    def short(self) -> str:
        """The run id without its date (it is in the runs table): `111500-cd34`."""
        return self.label[9:] if len(self.label) > 9 and self.label[8] == "-" else self.label

    @property
    def tag(self) -> str:
        """The run id's own last part (`cd34`): what tells runs apart where even `short` is too wide."""
        return self.label.rsplit("-", 1)[-1]

    def steps(self) -> list[int]:
        return sorted(set(self.loss_steps) | set(self.eval_steps))

    def at(self, step: int) -> dict[str, tuple[float, int]]:
        """Each value logged at or last before `step`, with the step it was logged at, for the cursor's
        read-out (perplexity is measured at eval steps only): by READOUT name."""
        values = {}
        for name, steps, series in (("loss", self.loss_steps, self.losses),
                                    ("smoothed", self.loss_steps, smooth(self.losses)),
                                    ("perplexity", self.eval_steps, self.perplexities),
                                    ("rate", self.rate_steps, self.rates)):
            i = bisect.bisect_right(steps, step) - 1
            if i >= 0:
                values[name] = (series[i], steps[i])
        return values


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average: the first points are not pulled toward zero."""
    out, average = [], 0.0
    for n, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**n))
    return out


def thin(steps: list[int], values: list[float], limit: int = MAX_POINTS) -> tuple[list[int], list[float]]:
    if len(steps) <= limit:
        return steps, values
    stride = len(steps) / limit
    picks = sorted({int(i * stride) for i in range(limit)} | {len(steps) - 1})
    return [steps[i] for i in picks], [values[i] for i in picks]


def rate_ticks(low: float, high: float, columns: int) -> tuple[list[float], list[str]]:
    """Ticks of a log10 rate axis over `columns` of plot at whole powers of ten, labelled as rates
    (`1e-4`), not exponents; as many as fit with two spaces at least between labels.

    None may come closer: plotext puts the labels in an order of its own (a set's, which changes from
    one process to the next) and drops one that touches another, so labels that could touch would make
    the axis read differently from run to run."""
    first, last = math.ceil(low), math.floor(high)
    if last - first < 1:  # less than a decade: its two ends
        ticks, labels = [low, high], [f"{10**low:.0e}", f"{10**high:.0e}"]
    else:
        ticks, labels = [float(p) for p in range(first, last + 1)], [f"1e{p}" for p in range(first, last + 1)]
    room = max(len(label) for label in labels) + 2  # a label, a space each side (and one of rounding)
    per_unit = columns / max(high - low, 1e-9)
    stride = next((k for k in range(1, len(ticks)) if (ticks[k] - ticks[0]) * per_unit >= room), len(ticks))
    return ticks[::stride], labels[::stride]


class RatePlot(PlotextPlot):
    """The range test's plot, whose rate ticks are chosen for the width it is drawn at (`rate_ticks`):
    the width is known only here, once the layout has placed the plot."""

    span: tuple[float, float] | None = None  # the log10 rates drawn, set with the curve
    MARGIN = 8  # columns left of the plot's canvas at most: the loss labels and the axes

    def render(self) -> RenderResult:
        if self.span is not None:
            self.plt.xticks(*rate_ticks(*self.span, self.size.width - self.MARGIN))
        return super().render()


@dataclass
class Readout:
    """The values at the chart's cursor: a row per run, the run in its colour, a column per value. As
    wide as the room allows (run ids, whole words); where that would wrap, compact (the ids' own part,
    short words), so that a row per run fits the 43 columns the chart has at 80x24."""

    step: int
    rows: list[tuple[Series, str]]  # each run and its colour

    def table(self, compact: bool) -> Table:
        table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
        table.add_column(f"step {self.step}", no_wrap=True)
        for name in READOUT:
            table.add_column(READOUT[name][compact], no_wrap=True, justify="right")
        for series, colour in self.rows:
            values = series.at(self.step)
            cells = []
            for name in READOUT:
                if name not in values:
                    cells.append(Text("–", style="dim"))
                    continue
                value, step = values[name]
                cell = Text(FORMATS[name].format(value))
                if step != self.step:  # perplexity from the last eval before the cursor
                    cell.append(f" ({step})" if compact else f" (step {step})", style="dim")
                cells.append(cell)
            table.add_row(Text(series.tag if compact else series.short, style=colour), *cells)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RichResult:
        wide = self.table(compact=False)
        needs = Measurement.get(console, options.update_width(10_000), wide).maximum
        yield wide if needs <= options.max_width else self.table(compact=True)


class RunChart(Vertical, can_focus=True):
    """Loss on the left axis, perplexity (or the rate) on the right; an empty state that never looks like
    data."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "log_scale", "Log", tooltip="chart: loss on a log scale, or back"),
        Binding("r", "rate", "Rate", tooltip="chart: the learning rate on the right axis, or perplexity"),
        Binding("left", "cursor(-1)", "◀", show=False,
                tooltip="chart: the cursor a step back; the values at it show under the chart"),
        Binding("right", "cursor(1)", "▶", show=False, tooltip="chart: the cursor a step on"),
        Binding("home", "cursor(-1000000000)", "First", show=False),
        Binding("end", "cursor(1000000000)", "Last", show=False),
        Binding("escape", "no_cursor", "Hide cursor", tooltip="chart: hide the cursor"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_scale = False
        self.right = "perplexity"  # or "rate"
        self.cursor: int | None = None  # a step of the selected run
        self._drawn: tuple[Series | None, list[Series], list[dict[str, float]], float | None] = (
            None, [], [], None)

    def compose(self) -> ComposeResult:
        yield Static(Text(EMPTY), id="chart-empty")
        with Horizontal(id="chart-plots"):
            yield PlotextPlot(id="chart-plot")
            yield RatePlot(id="lr-plot")
        yield Static(id="chart-legend")

    def on_mount(self) -> None:
        self.query_one("#chart-plots").display = False
        self.query_one("#chart-legend").display = False

    def show(self, main: Series | None, others: list[Series] | None = None,
             lr_curve: list[dict[str, float]] | None = None, chosen: float | None = None) -> None:
        """Draw the run's curves and the overlaid runs'; with `lr_curve` (a `--learning-rate auto` run's
        range test), also the test's loss against the rate, the chosen rate marked."""
        others = others or []
        if main is None or self._drawn[0] is None or main.label != self._drawn[0].label:
            self.cursor = None  # another run: its steps differ
        self._drawn = (main, others, lr_curve or [], chosen)
        self._draw()

    def _draw(self) -> None:
        main, others, lr_curve, chosen = self._drawn
        empty = self.query_one("#chart-empty", Static)
        plots = self.query_one("#chart-plots")
        legend = self.query_one("#chart-legend", Static)
        self._lr(lr_curve, chosen)
        if main is None or (main.empty and not lr_curve):
            empty.update(Text(EMPTY if main is None else f"{main.label}: no loss logged yet."))
            empty.display, plots.display, legend.display = True, False, False
            return
        empty.display, plots.display, legend.display = False, True, True
        plot = self.query_one("#chart-plot", PlotextPlot)
        plot.display = not main.empty
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for n, series in enumerate([main, *others][:len(COLOURS)]):
            self._curves(plt, series, *COLOURS[n], raw=n == 0)
        if self.log_scale:
            plt.yscale("log", yside="left")
        if self.cursor is not None:
            plt.vline(self.cursor, color="gray")
        plt.xlabel("step")
        plt.ylabel("loss" + (" (log)" if self.log_scale else ""), yside="left")
        plt.ylabel(self.right, yside="right")
        plot.refresh()
        legend.update(self._legend(main, others))

    def _curves(self, plt: Any, series: Series, colour: str, right: str, raw: bool) -> None:
        if series.losses:
            if raw:
                plt.plot(*thin(series.loss_steps, series.losses), color="gray", marker="dot")
            plt.plot(*thin(series.loss_steps, smooth(series.losses)), color=colour, marker="braille")
        if self.right == "rate" and series.rates:
            plt.plot(*thin(series.rate_steps, series.rates), color=right, marker="braille", yside="right")
        elif self.right == "perplexity" and series.perplexities:
            plt.plot(series.eval_steps, series.perplexities, color=right, marker="braille", yside="right")
            plt.scatter(series.eval_steps, series.perplexities, color=right, marker="●", yside="right")

    def _legend(self, main: Series, others: list[Series]) -> Text | Readout:
        """Which colour is which; with the cursor, the values under it instead, a row per run, each run
        in its colour."""
        drawn = [main, *others][:len(COLOURS)]
        if self.cursor is not None:
            return Readout(self.cursor, [(series, RICH[COLOURS[n][0]]) for n, series in enumerate(drawn)])
        text = Text()
        for n, series in enumerate(drawn):
            colour, right = (RICH[c] for c in COLOURS[n])
            text.append(("  " if n else "") + f"{series.short}: ")
            if n == 0:
                text.append("• loss ", style="grey50")
            text.append("━ smoothed ", style=colour)
            text.append("● perplexity" if self.right == "perplexity" else "━ rate", style=right)
        if len(others) >= len(COLOURS):
            text.append(f"  (+{len(others) - len(COLOURS) + 1} not drawn)", style="dim")
        if self.has_focus:
            text.append("  · ←/→: cursor", style="dim")
        else:
            text.append("  · tab: chart keys", style="dim")
        return text

    def on_focus(self) -> None:
        if self._drawn[0] is not None:
            self._draw()

    def on_blur(self) -> None:
        self.on_focus()

    # -- keys -----------------------------------------------------------------------------------------
    def action_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._draw()

    def action_rate(self) -> None:
        self.right = "rate" if self.right == "perplexity" else "perplexity"
        main = self._drawn[0]
        if self.right == "rate" and main is not None and not main.rates:
            self.app.notify(f"{main.label} logged no learning rate (a run from before rates were logged).",
                            severity="warning")
        self._draw()

    def action_cursor(self, move: int) -> None:
        main = self._drawn[0]
        steps = main.steps() if main is not None else []
        if not steps:
            return
        if self.cursor is None:
            i = len(steps) - 1 if move < 0 else 0
        else:
            i = max(0, min(len(steps) - 1, bisect.bisect_left(steps, self.cursor) + move))
        self.cursor = steps[i]
        self._draw()

    def action_no_cursor(self) -> None:
        self.cursor = None
        self._draw()

    def _lr(self, curve: list[dict[str, float]], chosen: float | None) -> None:
        plot = self.query_one("#lr-plot", RatePlot)
        plot.display = bool(curve)
        if not curve:
            return
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        rates = [math.log10(row["lr"]) for row in curve if row["lr"] > 0]
        losses = [row["loss"] for row in curve if row["lr"] > 0]
        plt.plot(rates, losses, color="cyan", marker="braille")
        if chosen is not None and chosen > 0:
            plt.vline(math.log10(chosen), color="orange")
        plot.span = (min(rates), max(rates)) if rates else None
        plt.xlabel("rate")
        plt.ylabel("range test", yside="left")
        plot.refresh()
