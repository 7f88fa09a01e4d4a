"""Snapshot tests of the three panes with data in them, at 80x24 and at 120x40, on the tiny seeded model
and the fixed corpus.

Update after an intended visual change with `pytest tests/app/test_snapshots.py --snapshot-update` and
look at the report before committing the new SVGs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from pilot import settle
from textual.pilot import Pilot
from textual.widgets import Input

from mlm_tui.app.workbench import WorkbenchApp

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
RUN_ID = "20261130-101500-ab12"
pytestmark = pytest.mark.usefixtures("home")  # no runs, history or settings: fixed output
AUTO_RUN_ID = "20261130-111500-cd34"  # a later run whose learning rate came from a range test


async def settle_still(pilot: Pilot) -> None:
    """Settle with the text cursors still: a blinking cursor is caught on or off at random."""
    for box in pilot.app.query(Input):
        box.cursor_blink = False
    await settle(pilot)


def finished_run(run_id: str = RUN_ID, range_test: bool = False) -> None:
    """A completed run as its files would be, with fixed times and figures (a real run's vary); with
    `range_test`, one whose learning rate a range test chose."""
    from mlm_tui import runstore
    from mlm_tui.atomic import write_json
    from mlm_tui.lr_find import RangeTest, rates, write_curve
    from mlm_tui.run_settings import TrainConfig

    config = TrainConfig(corpus="corpus.jsonl", model="tiny-model", chunk_size=32, batch_size=4, max_steps=40,
                         learning_rate="auto" if range_test else 2e-5)
    run = runstore.create_run(asdict(config), run_id=run_id)
    record = json.loads((run.dir / "config.json").read_text())
    found = {"lr_find": {"suggested": 2.6e-4, "reason": "fixed", "steps": 40}} if range_test else {}
    write_json(run.dir / "config.json", {**record, "created": f"2026-11-30T{run_id[9:11]}:15:00", **found})
    scale = 0.9 if range_test else 1.0
    rows = [{"step": s, "loss": round(scale * (9.0 - 2.5 * (s / 40) ** 0.5 + 0.2 * ((s * 7) % 5) / 5), 4),
             "learning_rate": 2e-5 * min(1.0, s / 5) * (1 - s / 41)} for s in range(1, 41)]
    rows += [{"step": 0, "eval_perplexity": 8120.5}, {"step": 20, "eval_perplexity": 3110.2 * scale},
             {"step": 40, "eval_perplexity": 1904.7 * scale}]
    if range_test:
        lrs = rates(40)
        write_curve(run.dir, RangeTest(lrs, [6 - (n % 30) / 10 + (3 if n >= 30 else 0) for n in range(40)],
                                       2.6e-4, "fixed"))
    (run.dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run.dir / "log.txt").write_text("10:15:00 measuring perplexity before training on 4 test chunks\n"
                                     "10:16:10 completed: perplexity 8120.50 -> 1904.70\n")
    write_json(run.dir / "state.json", {
        "status": "completed", "step": 40, "total_steps": 40, "started": 1764497700.0 + int(run_id[9:11]),
        "finished": 1764497770.0, "perplexity_before": 8120.5, "perplexity_after": 1904.7 * scale,
        "train_runtime": 61.0, "plan": {"device": "cpu", "precision": "fp32", "batch_size": 4, "steps": 40,
                                        "steps_per_epoch": 20, "train_chunks": 80, "test_chunks": 4,
                                        "logging_steps": 1, "save_steps": 40, "eval_steps": 20}})
    run.release()


@pytest.mark.parametrize("size", SIZES)
def test_fill_pane_comparing_two_models(snap_compare, tiny_model_dir: Path, size: str) -> None:
    async def compare(pilot: Pilot) -> None:
        await settle_still(pilot)
        pilot.app.load_model(str(tiny_model_dir), "compare")  # type: ignore[attr-defined]
        await settle_still(pilot)
        await pilot.press(*"the [MASK] of the [MASK].")
        await settle_still(pilot)

    app = WorkbenchApp(model=str(tiny_model_dir))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=compare)


@pytest.mark.parametrize("size", SIZES)
def test_chunks_pane_masking_preview(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path,
                                     size: str) -> None:
    async def browse(pilot: Pilot) -> None:
        await settle_still(pilot)
        await pilot.press("f2")
        await settle_still(pilot)
        await pilot.press("right", "m")
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=browse)


async def open_train(pilot: Pilot) -> None:
    await settle_still(pilot)
    await pilot.press("f3")
    await settle_still(pilot)
    pilot.app.query_one("#t-model", Input).value = "tiny-model"  # not the temporary paths
    pilot.app.query_one("#t-corpus", Input).value = "corpus.jsonl"
    await settle_still(pilot)


# Only at 120x40 for now: at 80x24 the range test's rate axis is drawn with either of two tick ranges
# from run to run (a race between the chart and the curve's read, not yet found); the layout at 80x24 is
# covered by the form snapshot below.
@pytest.mark.parametrize("size", ["120x40"])
def test_train_pane_with_two_runs_and_a_range_test(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path,
                                                   size: str) -> None:
    finished_run()
    finished_run(AUTO_RUN_ID, range_test=True)

    async def compare(pilot: Pilot) -> None:
        await open_train(pilot)
        await pilot.press("down", "v", "up")  # the older run overlaid on the newer one's chart
        await settle_still(pilot)
        await pilot.press("tab", "right", "right", "right")  # the chart's cursor at step 2
        await settle_still(pilot)

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=compare)


@pytest.mark.parametrize("size", SIZES)
def test_train_form_reached_by_its_key(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path,
                                       size: str) -> None:
    finished_run()

    async def to_form(pilot: Pilot) -> None:
        await open_train(pilot)
        await pilot.press("f")
        await settle_still(pilot)

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=to_form)


def test_help_screen(snap_compare, tiny_model_dir: Path) -> None:
    async def help_screen(pilot: Pilot) -> None:
        await settle_still(pilot)
        await pilot.press("f2", "question_mark")
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir))
    assert snap_compare(app, terminal_size=(80, 24), run_before=help_screen)
