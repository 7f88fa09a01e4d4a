"""The Train pane's chart: training loss (raw and smoothed) and eval perplexity against steps, for the
selected run and, overlaid, a second run to compare with.

Drawn with textual-plotext (axes, ticks and a legend come from plotext). This module imports plotext, which
takes a few tenths of a second: the Train pane imports it when it mounts, after the first paint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

MAX_POINTS = 400  # a long run is thinned to this many points per line; plotext draws cells, not points
SMOOTHING = 0.9  # exponential moving average of the loss, as TensorBoard's smoothing slider


@dataclass
class Series:
    """One run's curves, from its metrics.jsonl."""

    label: str
    loss_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    perplexities: list[float] = field(default_factory=list)

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
            if _finite(row.get("eval_perplexity")):
                series.eval_steps.append(step)
                series.perplexities.append(float(row["eval_perplexity"]))
        return series

    @property
    def empty(self) -> bool:
        return not self.losses and not self.perplexities


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


class RunChart(Vertical):
    """Loss on the left axis, perplexity on the right; an empty state that never looks like data."""

    def compose(self) -> ComposeResult:
        yield Static(Text("No run selected: pick one in the runs table, or start one with the form."),
                      id="chart-empty")
        with Horizontal(id="chart-plots"):
            yield PlotextPlot(id="chart-plot")
            yield PlotextPlot(id="lr-plot")

    def on_mount(self) -> None:
        self.query_one("#chart-plots").display = False

    def show(self, main: Series | None, other: Series | None = None,
             lr_curve: list[dict[str, float]] | None = None, chosen: float | None = None) -> None:
        """Draw the run's curves; with `lr_curve` (a `--learning-rate auto` run's range test), also the
        test's loss against the rate, the chosen rate marked."""
        empty = self.query_one("#chart-empty", Static)
        plots = self.query_one("#chart-plots")
        plot = self.query_one("#chart-plot", PlotextPlot)
        self._lr(lr_curve or [], chosen)
        if main is None or (main.empty and not lr_curve):
            empty.update(Text("No run selected: pick one in the runs table, or start one with the form."
                              if main is None else f"{main.label}: no loss logged yet."))
            empty.display, plots.display = True, False
            return
        empty.display, plots.display = False, True
        plot.display = not main.empty
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for series, colours in ((main, ("gray", "cyan", "orange")), (other, (None, "magenta", "red"))):
            if series is None or series.empty:
                continue
            raw, smoothed_colour, ppl_colour = colours
            if series.losses:
                steps, losses = thin(series.loss_steps, series.losses)
                if raw is not None:
                    plt.plot(steps, losses, color=raw, marker="dot", label=f"{series.label} loss")
                s_steps, s_losses = thin(series.loss_steps, smooth(series.losses))
                plt.plot(s_steps, s_losses, color=smoothed_colour, marker="braille",
                         label=f"{series.label} loss (smoothed)")
            if series.perplexities:
                plt.scatter(series.eval_steps, series.perplexities, color=ppl_colour, marker="●",
                            yside="right", label=f"{series.label} perplexity")
        plt.xlabel("step")
        plt.ylabel("loss", yside="left")
        plt.ylabel("perplexity", yside="right")
        plot.refresh()

    def _lr(self, curve: list[dict[str, float]], chosen: float | None) -> None:
        plot = self.query_one("#lr-plot", PlotextPlot)
        plot.display = bool(curve)
        if not curve:
            return
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        rates = [math.log10(row["lr"]) for row in curve if row["lr"] > 0]
        losses = [row["loss"] for row in curve if row["lr"] > 0]
        plt.plot(rates, losses, color="cyan", marker="braille", label="range test loss")
        if chosen is not None and chosen > 0:
            plt.vline(math.log10(chosen), color="orange")
        plt.xlabel("log10 rate")
        plot.refresh()
