"""The workbench under the keyboard: every pane key from every pane and every focused widget, typing that
never acts on a run, corpora that fail to open, and the keys' help — while a real run trains in its own
process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_jsonl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pilot import notifications, plain, settle, wait_for
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input, Static, TabbedContent

from mlm_tui.app.workbench import FOCUS, PANES, WorkbenchApp

SIZE = (120, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("home")]


def focusables(app: WorkbenchApp, pane: str) -> list[Widget]:
    """Every widget of a pane that a person can put the focus on (tab, click)."""
    root = app.query_one(f"#{pane}")
    return [w for w in root.query("*") if w.focusable or (w.can_focus and w.display and not w.disabled)]


@pytest.fixture
def real_run(tiny_model_dir: Path, corpus_jsonl: Path) -> Iterator[str]:
    """A run training in its own process (as the Train pane starts one) for the length of a test."""
    from mlm_tui import launcher, lifecycle, runstore
    from mlm_tui.run_settings import TrainConfig

    config = TrainConfig(corpus=str(corpus_jsonl), model=str(tiny_model_dir), chunk_size=32, batch_size=4,
                         max_steps=1_000_000, test_size=4, train_size=40, save_steps=1_000_000,
                         logging_steps=10)  # its state moves while the keys go in
    found = runstore.find_run(lifecycle.launch(config))
    assert found is not None  # the run exists from its launch
    try:
        deadline = time.monotonic() + 120
        while found.info().step < 1:
            assert time.monotonic() < deadline and found.status() in ("preparing", "running"), found.info()
            time.sleep(0.25)
        yield found.run_id
    finally:  # a run of a million steps must not outlive a test that failed waiting for it
        run = runstore.find_run(found.run_id)
        assert run is not None
        if run.status() in ("preparing", "running"):
            launcher.cancel(run)
        deadline = time.monotonic() + 60
        while run.is_live() and time.monotonic() < deadline:
            time.sleep(0.25)


async def show_chunks(pilot: Pilot) -> None:
    """Wait for the start-up loads, then show the Chunks pane and wait for its corpus."""
    await settle(pilot)
    await pilot.press("f2")
    await settle(pilot)


async def press_pane_key(pilot: Pilot, target: str, how: str) -> None:
    if how == "key":
        await pilot.press({"fill": "f1", "chunks": "f2", "train": "f3", "words": "f5"}[target])
    else:  # the command palette's pane commands
        await pilot.press("ctrl+p", *target)
        await pilot.pause(0.3)
        await pilot.press("enter")
    await pilot.pause()
    await pilot.pause()


async def switch_and_check(pilot: Pilot, source: str, widget: Widget, target: str, how: str) -> None:
    """Put the focus on `widget` of `source` and ask for `target` (its key or the palette): `target` shows,
    its first widget focused."""
    app = pilot.app
    await press_pane_key(pilot, source, "key")
    widget.focus()
    await pilot.pause()
    if source == "train":
        await pilot.press("up")  # the keys that once stranded the user in Train
    await press_pane_key(pilot, target, how)
    where = f"{how} to {target} from {widget!r} in {source}"
    assert app.query_one(TabbedContent).active == target, where
    assert app.focused is app.query_one(FOCUS[target]), where


async def typing_lands_in_fill(pilot: Pilot, source: str) -> None:
    await press_pane_key(pilot, "fill", "key")
    await pilot.press("ctrl+u", *f"typed after {source} [MASK].")
    assert pilot.app.query_one("#sentence", Input).value == f"typed after {source} [MASK]."


async def open_with_a_live_run(pilot: Pilot) -> None:
    await settle(pilot)
    await wait_for(lambda: pilot.app.query("#runs") and pilot.app.query_one("#runs").row_count > 0, 10, pilot)


def still_running(run_id: str) -> bool:
    from mlm_tui import runstore

    run = runstore.find_run(run_id)
    return run is not None and run.status() == "running"


SAMPLE = 12  # pane switches per run of the property; the whole matrix is the `slow` test below


@settings(max_examples=1, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_pane_keys_work_from_any_pane_and_widget_and_typing_lands_in_fill(
        tiny_model_dir: Path, corpus_jsonl: Path, real_run: str, data: st.DataObject) -> None:
    """A sample of the matrix below, a new one each run (hypothesis prints the draws of one that fails)."""
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await open_with_a_live_run(pilot)
        for _ in range(SAMPLE):
            source = data.draw(st.sampled_from(PANES), label="from pane")
            await press_pane_key(pilot, source, "key")
            widgets = focusables(app, source)
            widget = widgets[data.draw(st.integers(0, len(widgets) - 1), label="widget number")]
            target = data.draw(st.sampled_from(PANES), label="to pane")
            how = data.draw(st.sampled_from(("key", "palette")), label="by")
            await switch_and_check(pilot, source, widget, target, how)
            if data.draw(st.booleans(), label="then type in Fill"):
                await typing_lands_in_fill(pilot, source)
        assert still_running(real_run)  # no key above touched the run


@pytest.mark.slow
async def test_pane_keys_work_from_every_pane_and_widget_and_typing_lands_in_fill(
        tiny_model_dir: Path, corpus_jsonl: Path, real_run: str) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await open_with_a_live_run(pilot)
        for source in PANES:
            await press_pane_key(pilot, source, "key")
            widgets = focusables(app, source)
            for n, widget in enumerate(widgets):
                for target in PANES:
                    # the palette is slower to drive: from the pane's first and last widget only
                    for how in ("key", "palette") if n in (0, len(widgets) - 1) else ("key",):
                        await switch_and_check(pilot, source, widget, target, how)
            await typing_lands_in_fill(pilot, source)
        assert still_running(real_run)  # no key above touched the run


async def test_letters_typed_at_the_runs_table_never_cancel_a_run(
        tiny_model_dir: Path, real_run: str) -> None:
    from mlm_tui import runstore

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await wait_for(lambda: app.query_one("#runs").row_count > 0, 10, pilot)
        await settle(pilot)
        assert app.focused is app.query_one("#runs")
        await pilot.press(*"the next word is x then y and yes")  # 'x' asks; no letter answers
        await pilot.pause()
        assert real_run in str(app.screen.query_one(".dialog-title").render())
        run = runstore.find_run(real_run)
        assert run is not None and run.status() == "running" and not (run.dir / "cancel").exists()
        await pilot.press("enter")  # the focused button is the safe one
        await pilot.pause()
        assert not app.screen.query(".dialog-title")
        assert run.status() == "running" and app.query_one(FillPaneRef).refs["main"] == str(tiny_model_dir)
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("tab", "enter")  # the deliberate answer: move to "Cancel" and press it
        await wait_for(lambda: run.status() == "cancelled", 60, pilot)
        await wait_for(lambda: any(f"{real_run} cancelled" in m for m in notifications(app)), 10, pilot)


async def test_a_failed_open_keeps_the_open_corpus_whole_and_offers_only_text_columns(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "notes.txt"
    good.write_text("\n".join(f"The enzyme number {i} cleaves the bond." for i in range(60)))
    tickets = tmp_path / "tickets.csv"
    tickets.write_text("id,title,body,votes\n" + "".join(
        f'{i},Login {i},"Login fails on page {i}, please help.",{i}\n' for i in range(80)))
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(good))
    async with app.run_test(size=SIZE) as pilot:
        await show_chunks(pilot)
        def stats() -> list[list[str]]:
            table = app.query_one("#stats")
            return [list(table.get_row_at(i)) for i in range(table.row_count)]

        def offered() -> list[str]:
            options = app.screen.query_one("#pick-list")
            return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]  # type: ignore[attr-defined]

        line, before, body = plain(app, "#corpus-line"), stats(), plain(app, "#chunk-body")
        assert "notes.txt" in line
        await pilot.press("ctrl+o")
        app.screen.query_one("#prompt-input", Input).value = str(tickets)
        await pilot.press("enter")
        await settle(pilot)
        assert any("no text field 'text'" in m for m in notifications(app))
        # the previous corpus stays, whole and under its own name, while the user picks a column
        assert plain(app, "#corpus-line") == line and stats() == before
        assert plain(app, "#chunk-body") == body
        assert offered() == ["title", "body"]  # not the numbers in `id` and `votes`
        await pilot.press("escape", "f")  # the key offers the same columns again
        await pilot.pause()
        assert offered() == ["title", "body"]
        await pilot.press("down", "enter")
        await settle(pilot)
        assert "tickets.csv · column body" in plain(app, "#corpus-line")
        assert "Login fails" in plain(app, "#chunk-body").replace("login", "Login")
        line, before = plain(app, "#corpus-line"), stats()
        await pilot.press("f", *"votes", "enter")  # a column of numbers, typed by name
        await settle(pilot)
        said = notifications(app)[-1]
        assert "'votes' holds int64, not text (text fields: title, body)" in said
        assert "the Text column key (f)" in said  # the workbench's words, not the CLI's
        assert "--text-field" not in said and "with text field" not in said
        assert offered() == ["title", "body"]
        await pilot.press("escape")
        assert plain(app, "#corpus-line") == line and stats() == before
        await pilot.press("f3")
        await settle(pilot)
        assert app.query_one("#t-corpus", Input).value == str(tickets)
        assert app.query_one("#t-text_field", Input).value == "body"


async def test_a_missing_corpus_changes_nothing_on_show(tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await show_chunks(pilot)
        title = plain(app, "#chunk-title")
        await pilot.press("ctrl+o")
        app.screen.query_one("#prompt-input", Input).value = str(corpus_jsonl.parent / "nope.jsonl")
        await pilot.press("enter")
        await settle(pilot)
        assert "corpus.jsonl" in plain(app, "#corpus-line") and "nope" not in plain(app, "#corpus-line")
        assert plain(app, "#chunk-title") == title
        await pilot.press("f3")
        await settle(pilot)
        assert app.query_one("#t-corpus", Input).value == str(corpus_jsonl)


async def test_masking_preview_shows_each_fate_with_a_legend(tiny_model_dir: Path,
                                                             corpus_jsonl: Path) -> None:
    from mlm_tui.app.render import FATE_STYLES

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await show_chunks(pilot)
        assert not app.query_one("#fate-legend").display
        await pilot.press("m")
        legend = plain(app, "#fate-legend")
        assert "[MASK]" in legend and "random" in legend and "kept" in legend
        title = plain(app, "#chunk-title")
        body = app.query_one("#chunk-body", Static).content
        assert isinstance(body, Text)
        styles = [span.style for span in body.spans]
        counts = {fate: styles.count(style) for fate, style in FATE_STYLES.items()}
        # the title's counts are the styled tokens' counts (a random one also styles its replacement)
        assert f"{counts['mask']} → [MASK], {counts['random'] // 2} random, {counts['kept']} kept" in title
        pane = app.query_one("#chunks-pane")
        fates, _ = pane._preview([int(t) for t in pane._chunks()[pane.index]])
        assert sum(1 for f in fates if f) == counts["mask"] + counts["random"] // 2 + counts["kept"]


async def test_chunks_read_as_the_cli_prints_them(tiny_model_dir: Path, corpus_jsonl: Path, cli) -> None:
    code, out, _ = cli("chunks", corpus_jsonl, "--model", tiny_model_dir, "--show", 2)
    assert code == 0
    cli_chunks = out.split("--- chunk 1 ---\n")[1].split("\n\n--- chunk 2 ---\n")
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await show_chunks(pilot)
        assert plain(app, "#chunk-body").replace("\n", " ") == cli_chunks[0].strip()
        assert "chunk 1 of" in plain(app, "#chunk-title")
        await pilot.press("right")
        assert plain(app, "#chunk-body").replace("\n", " ") == cli_chunks[1].strip()
        assert "chunk 2 of" in plain(app, "#chunk-title")


async def test_help_opens_with_question_mark_except_in_a_text_input(tiny_model_dir: Path,
                                                                   corpus_jsonl: Path) -> None:
    from mlm_tui.app.help import HelpScreen

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")  # the sentence has focus: `?` is a character
        assert app.query_one("#sentence", Input).value == "?"
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=120)
        with console.capture() as captured:
            for table in app.screen.query(".help-keys"):
                console.print(table.content)
        text = captured.get()
        workflow = str(app.screen.query_one("#help-workflow").render())
        steps = ("1. Fill (F1)", "2. Chunks (F2)", "3. Train (F3)", "4. Compare")
        assert all(step in workflow for step in steps)
        for action in ("next chunk", "cancel the selected run (asks first)", "start a run with this form",
                       "the selected probe's sentence in Fill"):
            assert action in text
        await pilot.press("f3")  # pane keys wait while a dialog is up
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+p", *"help")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)


async def test_the_chunk_views_arrows_are_next_and_prev_not_scrolling(tiny_model_dir: Path,
                                                                     corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await show_chunks(pilot)
        assert app.focused is app.query_one("#chunk-box")
        await pilot.press("right", "right", "left")
        assert "chunk 2 of" in plain(app, "#chunk-title")
        keys = {binding.binding.key: binding.binding.description for binding in app.active_bindings.values()}
        assert keys.get("right") == "Next" and keys.get("left") == "Prev"


async def test_a_model_load_can_be_stopped_with_escape(tiny_model_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from mlm_tui.app import heavy

    release = threading.Event()
    real_load = heavy.load_model

    def slow_load(ref: str):  # a hub that does not answer
        if ref == "slow/model":
            release.wait(30)
        return real_load(ref)

    monkeypatch.setattr(heavy, "load_model", slow_load)
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+l")
        app.screen.query_one("#prompt-input", Input).value = "slow/model"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert "slow/model (loading… esc: stop)" in plain(app, "#model-line")
        await pilot.press("escape")
        await pilot.pause()
        assert plain(app, "#model-line") == f"model: {tiny_model_dir.name}"
        await pilot.press(*"the [MASK] works.")
        await pilot.pause(0.5)
        assert "%" in plain(app, "#fills-main")  # the old model still fills
        release.set()
        await settle(pilot)
        assert plain(app, "#model-line") == f"model: {tiny_model_dir.name}"  # the late result is dropped


async def test_loading_a_run_into_fill_leaves_the_train_form_alone(tiny_model_dir: Path, corpus_jsonl: Path,
                                                                   cli) -> None:
    code, _, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32, "--max-steps",
                         2, "--batch-size", 4, "--test-size", 4, "--json")
    assert code == 0, err
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        await settle(pilot)
        form_model = app.query_one("#t-model", Input).value
        await pilot.press("l")
        await settle(pilot)
        assert app.query_one(TabbedContent).active == "fill"
        assert app.query_one(FillPaneRef).refs["main"] != str(tiny_model_dir)
        assert app.query_one("#t-model", Input).value == form_model


async def test_a_run_ending_anywhere_is_a_notification_on_any_pane(tiny_model_dir: Path, corpus_jsonl: Path,
                                                                   home: Path) -> None:
    import subprocess
    import sys

    app = WorkbenchApp(model=str(tiny_model_dir))
    app.settings.bell = True
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f2")
        # a run started from a CLI in another terminal
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlm_tui.cli", "train", str(corpus_jsonl), "--model", str(tiny_model_dir),
            "--chunk-size", "32", "--max-steps", "2", "--batch-size", "4", "--test-size", "4",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert await process.wait() == 0
        await wait_for(lambda: any("completed" in m for m in notifications(app)), 15, pilot)
        assert bells == [1]
        assert app.query_one(TabbedContent).active == "chunks"


FillPaneRef = "#fill-pane"


async def test_a_hub_model_not_cached_is_answered_at_once_offline(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+l")
        app.screen.query_one("#prompt-input", Input).value = "distilbert-base-uncased"
        asked = time.monotonic()
        await pilot.press("enter")
        await wait_for(lambda: any("not in the local cache" in m for m in notifications(app)), 2, pilot)
        assert time.monotonic() - asked < 2
        assert plain(app, "#model-line") == f"model: {tiny_model_dir.name}"  # the old model stays


def test_the_top_level_text_field_reaches_the_workbench_and_the_subcommands(
        tmp_path: Path, cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlm_tui.app import main as app_main
    from mlm_tui.cli import main

    tickets = tmp_path / "tickets.csv"
    tickets.write_text("id,body\n" + "".join(f'{i},"Login fails on page {i}."\n' for i in range(50)))
    opened: dict[str, object] = {}
    monkeypatch.setattr(app_main, "run_app", lambda **kwargs: opened.update(kwargs))
    assert main(["--data", str(tickets), "--text-field", "body"]) == 0
    assert opened["text_field"] == "body" and opened["data"] == str(tickets)
    code, out, err = cli("--text-field", "body", "chunks", tickets, "--model", tiny_model_dir)
    assert code == 0 and "documents" in out, err
    code, _, err = cli("chunks", tickets, "--model", tiny_model_dir)
    assert code == 2 and "pick one with --text-field" in err


async def test_the_words_pane_counts_the_corpus_and_jumps_to_a_chunk_holding_a_word(
        tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    from mlm_tui.vocab import vocab_report

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f5")
        await wait_for(lambda: "running words" in plain(app, "#vocab-figures"), 20, pilot)
        opened = app.corpus
        assert opened is not None
        report = vocab_report(opened.splits, opened.tokenizer, str(corpus_jsonl), "tiny")
        figures = plain(app, "#vocab-figures")
        assert f"{report.figures.running_words:,} running words" in figures and "general" in figures
        table = app.query_one("#word-table")
        assert table.row_count == len(report.words())
        await pilot.press("slash", *"hydrolysis", "enter")
        assert table.row_count == 1 and table.get_row_at(0)[0] == "hydrolysis"
        await pilot.press("enter")  # to the chunks that hold it
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "chunks"
        assert "holding 'hydrolysis'" in plain(app, "#chunk-title")
        assert "hydrolysis" in plain(app, "#chunk-body")


async def test_n_and_p_step_through_every_chunk_holding_a_word_marked_also_under_the_masking_preview(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    from mlm_tui.app.render import WORD_FATE_STYLE, WORD_STYLE
    from mlm_tui.chunking import decode

    corpus = write_jsonl(tmp_path / "corpus.jsonl", [
        ("The enzyme catalyses the hydrolysis of the bond." if i % 40 == 7 else
         f"Rain fell over the valley on day {i} of the harvest.") for i in range(200)])

    def marked() -> list[str]:  # the runs of the body's text in the looked-up word's styles
        body = app.query_one("#chunk-body", Static).content
        assert isinstance(body, Text)
        at = {i for s in body.spans if str(s.style) == WORD_STYLE or WORD_FATE_STYLE in str(s.style).split()
              for i in range(s.start, s.end)}
        text = "".join(c if i in at else "\n" for i, c in enumerate(body.plain))
        return text.split()

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f5")
        await wait_for(lambda: "running words" in plain(app, "#vocab-figures"), 20, pilot)
        opened = app.corpus
        assert opened is not None
        chunks = opened.splits["train"].chunks(128)
        holding = [n for n, chunk in enumerate(chunks) if "hydro" in decode(opened.tokenizer, list(chunk))]
        assert len(holding) > 2  # the word begins in several chunks, not all of them
        await pilot.press("slash", *"hydrolysis", "enter", "enter")
        await pilot.pause()
        visited = []
        for n in range(1, len(holding) + 1):
            title = plain(app, "#chunk-title")
            assert f"chunk {n} of {len(holding)} holding 'hydrolysis'" in title
            visited.append(int(title.split()[2]) - 1)  # "train chunk 8 of 35 · ..."
            assert marked() and set(marked()) <= {"hydrolysis", "hydro"}  # "hydro": cut at the chunk end
            await pilot.press("m")  # the masking preview keeps the word marked
            assert "masking" in plain(app, "#chunk-title") and marked()
            await pilot.press("m", "n")
            await pilot.pause()
        assert visited == holding
        assert any("No later chunk holds 'hydrolysis'" in m for m in notifications(app))
        await pilot.press("p")  # back
        assert f"chunk {len(holding) - 1} of {len(holding)} holding" in plain(app, "#chunk-title")
        await pilot.press("right")  # one chunk on: not always one holding it
        title = plain(app, "#chunk-title")
        assert "holding 'hydrolysis'" in title
        await pilot.press("escape")  # every chunk again
        assert "hydrolysis" not in plain(app, "#chunk-title") and not marked()
        before = int(plain(app, "#chunk-title").split()[2])
        await pilot.press("n")
        assert int(plain(app, "#chunk-title").split()[2]) == before + 1
