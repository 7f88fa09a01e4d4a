"""Snapshot tests of the three panes with data in them, at 80x24 and at 120x40, on the tiny seeded model
and the fixed corpus.

Update after an intended visual change with `pytest tests/test_app_snapshots.py --snapshot-update` and
look at the report before committing the new SVGs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from mlm_tui.app.workbench import WorkbenchApp

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
RUN_ID = "20261130-101500-ab12"


@pytest.fixture(autouse=True)
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLM_TUI_HOME", str(tmp_path / "home"))  # no runs, history or settings: fixed output


async def settle(pilot: Pilot) -> None:
    """Let loads, debounce timers and the workers they start all finish, even on a loaded machine."""
    for box in pilot.app.query(Input):
        box.cursor_blink = False  # a blinking cursor is caught on or off at random
    for _ in range(4):
        await pilot.pause(0.3)
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def finished_run() -> None:
    """A completed run as its files would be, with fixed times and figures (a real run's vary)."""
    from mlm_tui import runstore
    from mlm_tui.atomic import write_json
    from mlm_tui.run_settings import TrainConfig

    config = TrainConfig(corpus="corpus.jsonl", model="tiny-model", chunk_size=32, batch_size=4, max_steps=40)
    run = runstore.create_run(asdict(config), run_id=RUN_ID)
    record = json.loads((run.dir / "config.json").read_text())
    write_json(run.dir / "config.json", {**record, "created": "2026-11-30T10:15:00"})
    rows = [{"step": s, "loss": round(9.0 - 2.5 * (s / 40) ** 0.5 + 0.2 * ((s * 7) % 5) / 5, 4)}
            for s in range(1, 41)]
    rows += [{"step": 0, "eval_perplexity": 8120.5}, {"step": 20, "eval_perplexity": 3110.2},
             {"step": 40, "eval_perplexity": 1904.7}]
    (run.dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run.dir / "log.txt").write_text("10:15:00 measuring perplexity before training on 4 test chunks\n"
                                     "10:16:10 completed: perplexity 8120.50 -> 1904.70\n")
    write_json(run.dir / "state.json", {
        "status": "completed", "step": 40, "total_steps": 40, "started": 1764497700.0,
        "finished": 1764497770.0, "perplexity_before": 8120.5, "perplexity_after": 1904.7,
        "train_runtime": 61.0, "plan": {"device": "cpu", "precision": "fp32", "batch_size": 4, "steps": 40,
                                        "steps_per_epoch": 20, "train_chunks": 80, "test_chunks": 4,
                                        "logging_steps": 1, "save_steps": 40, "eval_steps": 20}})
    run.release()


@pytest.mark.parametrize("size", SIZES)
def test_fill_pane_comparing_two_models(snap_compare, tiny_model_dir: Path, size: str) -> None:
    async def compare(pilot: Pilot) -> None:
        await settle(pilot)
        pilot.app.load_model(str(tiny_model_dir), "compare")  # type: ignore[attr-defined]
        await settle(pilot)
        await pilot.press(*"the [MASK] of the [MASK].")
        await settle(pilot)

    app = WorkbenchApp(model=str(tiny_model_dir))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=compare)


@pytest.mark.parametrize("size", SIZES)
def test_chunks_pane_masking_preview(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path,
                                     size: str) -> None:
    async def browse(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("right", "m")
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=browse)


@pytest.mark.parametrize("size", SIZES)
def test_train_pane_with_a_run(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path, size: str) -> None:
    finished_run()

    async def open_form(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        pilot.app.query_one("#t-model", Input).value = "tiny-model"  # not the temporary paths
        pilot.app.query_one("#t-corpus", Input).value = "corpus.jsonl"
        await settle(pilot)

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_form)


def test_help_screen(snap_compare, tiny_model_dir: Path) -> None:
    async def help_screen(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("f2", "question_mark")
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir))
    assert snap_compare(app, terminal_size=(80, 24), run_before=help_screen)
