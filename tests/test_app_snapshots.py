"""Snapshot tests of the three panes at 80x24, on the tiny seeded model and the fixed corpus.

Update after an intended visual change with `pytest tests/test_app_snapshots.py --snapshot-update` and
look at the report before committing the new SVGs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from mlm_tui.app.workbench import WorkbenchApp

SIZE = (80, 24)


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


def test_fill_pane(snap_compare, tiny_model_dir: Path) -> None:
    async def type_sentence(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press(*"the [MASK] of the [MASK].")
        await settle(pilot)

    assert snap_compare(WorkbenchApp(model=str(tiny_model_dir)), terminal_size=SIZE, run_before=type_sentence)


def test_chunks_pane(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    async def browse(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("right", "m")
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZE, run_before=browse)


def test_train_pane(snap_compare, tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    async def open_form(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        pilot.app.query_one("#t-model", Input).value = "tiny-model"  # not the temporary path
        pilot.app.query_one("#t-corpus", Input).value = "corpus.jsonl"
        await pilot.pause()

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    assert snap_compare(app, terminal_size=SIZE, run_before=open_form)
