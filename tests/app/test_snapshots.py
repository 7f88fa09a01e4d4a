"""Snapshot tests of the three panes with data in them, at 80x24 and at 120x40, on the tiny seeded model
and the fixed corpus.

Update after an intended visual change with `pytest tests/app/test_snapshots.py --snapshot-update` and
look at the report before committing the new SVGs.
"""

from __future__ import annotations

import json
import shutil
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
    found = {"lr_find": {"suggested": 2.6e-4, "reason": "the loss diverged at 1.3e-02; 0.02 of that rate",
                         "steps": 40}} if range_test else {}
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
def test_fill_pane_comparing_two_models(snap_compare, tiny_model_dir: Path, trained_run: Path,
                                        tmp_path: Path, size: str) -> None:
    """The base model against the session's real 2-step run of it: fills that rose, fell, or are new. The
    run's model is copied to a folder of a fixed name: its own path holds the run's id, a time."""
    model = shutil.copytree(trained_run / "model", tmp_path / "tiny-run")

    async def compare(pilot: Pilot) -> None:
        await settle_still(pilot)
        pilot.app.load_model(str(model), "compare")  # type: ignore[attr-defined]
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


async def chart_shows(pilot: Pilot, run_id: str, overlaid: str | None = None) -> None:
    """Wait for the chart of `run_id` (with `overlaid` on it) to be drawn: the run view reads the store in
    a worker of its own, which `settle` does not wait for (it polls for ever)."""
    from pilot import plain, wait_for

    def drawn() -> bool:
        app = pilot.app
        return (run_id in plain(app, "#run-title")
                and (overlaid is None or f"overlaid: {overlaid}" in plain(app, "#run-ppl"))
                and app.query_one("#lr-plot").display == (run_id == AUTO_RUN_ID))

    await wait_for(drawn, 10, pilot)
    await settle_still(pilot)


@pytest.mark.parametrize("size", SIZES)
def test_train_pane_with_two_runs_and_a_range_test(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path,
                                                   size: str) -> None:
    finished_run()
    finished_run(AUTO_RUN_ID, range_test=True)

    async def compare(pilot: Pilot) -> None:
        await open_train(pilot)
        await chart_shows(pilot, AUTO_RUN_ID)
        await pilot.press("down", "v")  # the older run, overlaid on the chart of the runs selected next
        await chart_shows(pilot, RUN_ID)
        await pilot.press("up")
        await chart_shows(pilot, AUTO_RUN_ID, overlaid=RUN_ID)
        await pilot.press("tab", "right", "right", "right")  # the chart's cursor at step 2
        pilot.app.clear_notifications()  # the overlay's toast would hide the read-out at 80x24
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


LEARNED_RUN_ID = "20261130-121500-ef56"


def test_what_a_run_learned_at_80_columns(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path, cli,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A real short run (the view measures its model), trained where the model and the corpus have short
    names, under a fixed id and times: no temporary path or clock on screen."""
    from mlm_tui import runstore
    from mlm_tui.atomic import read_json, write_json

    monkeypatch.chdir(corpus_jsonl.parent)
    Path("tiny-model").symlink_to(tiny_model_dir)
    code, out, err = cli("train", "corpus.jsonl", "--model", "tiny-model", "--chunk-size", 32, "--batch-size",
                         4, "--test-size", 40, "--max-steps", 4, "--learning-rate", "1e-2", "--no-general",
                         "--json")
    assert code == 0, err
    run = runstore.find_run(json.loads(out)["run_id"])
    assert run is not None
    folder = run.dir.rename(run.dir.with_name(LEARNED_RUN_ID))
    write_json(folder / "config.json", {**read_json(folder / "config.json"), "run_id": LEARNED_RUN_ID,
                                        "created": "2026-11-30T12:15:00"})
    write_json(folder / "state.json", {**read_json(folder / "state.json"), "started": 1764497700.0,
                                       "finished": 1764497761.0, "train_runtime": 61.0})
    (folder / "log.txt").write_text("12:15:00 training 4 steps\n12:16:01 completed\n")

    async def learned(pilot: Pilot) -> None:
        from pilot import wait_for

        from mlm_tui.app.learned_screen import LearnedScreen

        await settle_still(pilot)
        await pilot.press("f3")
        await wait_for(lambda: pilot.app.query_one("#runs").row_count == 1, 10, pilot)
        await pilot.press("w")
        await wait_for(lambda: isinstance(pilot.app.screen, LearnedScreen) and
                       pilot.app.screen.report is not None, 120, pilot)
        await settle_still(pilot)

    app = WorkbenchApp(model="tiny-model", data="corpus.jsonl")
    assert snap_compare(app, terminal_size=(80, 24), run_before=learned)


def test_help_screen(snap_compare, tiny_model_dir: Path) -> None:
    async def help_screen(pilot: Pilot) -> None:
        await settle_still(pilot)
        await pilot.press("f2", "question_mark")
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir))
    assert snap_compare(app, terminal_size=(80, 24), run_before=help_screen)
