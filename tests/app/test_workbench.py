"""Pilot tests: drive the workbench as a user would (keys, prompts, the palette) on the tiny model."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from pilot import notifications, plain, settle, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TabbedContent
from textual.widgets._footer import FooterKey

from mlm_tui.app.fill_pane import FillAnswer, FillPane
from mlm_tui.app.workbench import WorkbenchApp
from mlm_tui.home import settings_path

SIZE = (120, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("home")]


async def test_fill_shows_top5_percentages_for_each_mask(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.focused is app.query_one("#sentence")
        assert "loading" not in plain(app, "#model-line")
        await pilot.press(*"the [MASK] sat on the [MASK].")
        await settle(pilot)
        text = plain(app, "#fills-main")
        assert "mask 1" in text and "mask 2" in text
        assert text.count("%") == 10
        assert "[MASK]" not in text.splitlines()[1]  # the best-fill sentence has the masks filled
        await pilot.press("ctrl+u", *"no mask here")
        await settle(pilot)
        assert "Put [MASK] where a word should be predicted" in plain(app, "#fill-hint")
        assert plain(app, "#fills-main") == ""
        await pilot.press("f3", "f1", "?")  # back on Fill, the sentence is whole and a key adds to it
        assert app.query_one("#sentence", Input).value == "no mask here?"


async def test_more_fills_per_mask_are_remembered_and_the_fills_copy_as_the_cli_prints_them(
        tiny_model_dir: Path, cli) -> None:
    sentence = "the [MASK] of the [MASK]."
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+y")  # nothing on show yet
        assert any("No fills to copy yet" in m for m in notifications(app))
        await pilot.press(*sentence)
        await settle(pilot)
        assert plain(app, "#fills-main").count("%") == 10
        await pilot.press("ctrl+n")  # 5 -> 10 fills per mask, from the sentence box
        await settle(pilot)
        assert plain(app, "#fills-main").count("%") == 20
        assert app.query_one("#sentence", Input).value == sentence  # the key typed nothing
        await pilot.press("ctrl+y")
        assert any("Copied the top 10 fills of 2 masks" in m for m in notifications(app))
        copied = app.clipboard
    code, out, _ = cli("fill", sentence, "--model", tiny_model_dir, "--top-k", 10)
    assert code == 0 and copied == out.rstrip("\n")  # plain text, as the CLI prints it
    assert json.loads(settings_path().read_text())["fill_top_k"] == 10
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(80, 24)) as pilot:  # remembered, like the theme
        await settle(pilot)
        await pilot.press(*sentence)
        await settle(pilot)
        assert plain(app, "#fills-main").count("%") == 20
        await pilot.press("ctrl+n", "ctrl+n")  # 20, then round to 5 again
        await settle(pilot)
        assert plain(app, "#fills-main").count("%") == 10


async def test_at_80_columns_every_pane_keeps_the_help_key_on_screen(tiny_model_dir: Path) -> None:
    """The command palette's key leaves a narrow footer (ctrl+p still works, the help lists it): at 80
    columns it cut the runs table's last key to "f10 Hel"."""
    for size, palette in (((80, 24), False), ((120, 40), True)):
        app = WorkbenchApp(model=str(tiny_model_dir))
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            for pane in ("f1", "f2", "f3", "f5"):
                await pilot.press(pane)
                await settle(pilot)
                keys = {key.key: key.region for key in app.query(FooterKey)}
                assert keys["f10"].width and keys["f10"].right <= size[0], (size, pane, keys)
                assert ("ctrl+p" in keys) is palette
            await pilot.press("ctrl+p")  # the key still opens the palette
            await settle(pilot)
            assert type(app.screen).__name__ == "CommandPalette"


async def test_a_stale_fill_never_overwrites_a_newer_one(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(*"a [MASK].")
        await settle(pilot)
        pane = app.query_one(FillPane)
        shown = plain(app, "#fills-main")
        stale = pane.handles["main"].fill("an older [MASK] sentence with other fills .")
        pane.post_message(FillAnswer(pane.request - 1, stale, None, None))
        await settle(pilot)
        assert plain(app, "#fills-main") == shown


async def test_history_is_in_memory_by_default_and_on_disk_only_when_opted_in(
        tiny_model_dir: Path, home: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(*"confidential [MASK].", "enter", "ctrl+u")
        await pilot.press("up")  # this session's sentences are recalled from memory
        assert app.query_one("#sentence", Input).value == "confidential [MASK]."
    assert not (home / "history.json").exists()

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("up")
        assert app.query_one("#sentence", Input).value == ""  # nothing came back from disk
        app.action_toggle_keep_history()
        await pilot.press(*"kept [MASK].", "enter")
    assert json.loads((home / "history.json").read_text()) == ["kept [MASK]."]
    assert json.loads(settings_path().read_text())["keep_history"] is True

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("up")
        assert app.query_one("#sentence", Input).value == "kept [MASK]."
        app.action_toggle_keep_history()  # off again: the file is kept, but neither read nor written
        await pilot.press("ctrl+u", *"secret [MASK].", "enter")
    assert json.loads((home / "history.json").read_text()) == ["kept [MASK]."]

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.history.items == []
        await pilot.press("ctrl+p", *"clear sentence history")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
    assert not (home / "history.json").exists()


async def test_compare_shows_both_models_side_by_side(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f4")
        prompt = app.screen.query_one("#prompt-input", Input)
        prompt.value = str(tiny_model_dir)
        await pilot.press("enter")
        await settle(pilot)
        # the same folder twice: the columns cannot differ, and the workbench says so
        assert any("both the model and the compare model" in m for m in notifications(app))
        await pilot.press(*"the [MASK] is here.")
        await settle(pilot)
        compare = plain(app, "#fills-compare")
        assert "pp vs" in compare and compare.count("%") == 5  # the change is in percentage points
        assert compare.count("=") >= 5  # the same model: nothing rose or fell
        rows = [line for line in compare.splitlines() if line.endswith("=")]
        assert len({len(row) for row in rows}) == 1  # aligned columns


async def test_the_history_picker_shows_mask_and_page_down_scrolls_the_fills(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"the [MASK] of [MASK] is [MASK].", "enter")
        await settle(pilot)
        box = app.query_one("#fills-main-box")
        assert box.max_scroll_y > 0  # three masks' fills do not fit 80x24
        await pilot.press("pagedown")  # from the sentence box, which keeps the focus
        await pilot.pause()
        assert box.scroll_y > 0 and app.focused is app.query_one("#sentence")
        await pilot.press("ctrl+r")
        await pilot.pause()
        option = str(app.screen.query_one("#pick-list").get_option_at_index(0).prompt)  # type: ignore[attr-defined]
        assert option == "the [MASK] of [MASK] is [MASK]."  # not read as markup


async def test_a_bad_model_is_a_notification_not_a_crash(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model="./no/such/model")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert any("no model directory" in m for m in notifications(app))
        await pilot.press(*"still [MASK] typing")
        await settle(pilot)
        assert app.is_running


async def test_chunks_show_cls_and_sep_stats_and_masking(tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        assert app.query_one(TabbedContent).active == "chunks"
        body = plain(app, "#chunk-body")
        assert body.startswith("[CLS] ") and "[SEP] [CLS]" in body
        table = app.query_one("#stats", DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[1] == "200"
        assert "chunk 1 of" in plain(app, "#chunk-title")
        await pilot.press("right")
        assert "chunk 2 of" in plain(app, "#chunk-title")
        await pilot.press("s")  # one split: said, not silently ignored
        assert any("one split: train" in m for m in notifications(app))
        await pilot.press("m")
        assert "seed 42" in plain(app, "#chunk-title")
        await pilot.press("r")
        assert "seed 43" in plain(app, "#chunk-title")
        await pilot.press("w")
        assert "whole words" in plain(app, "#chunk-title")
        chunks_128 = table.get_row_at(0)[3]
        await pilot.press("c")
        app.screen.query_one("#prompt-input", Input).value = "32"
        await pilot.press("enter")
        await pilot.pause()
        assert int(table.get_row_at(0)[3].replace(",", "")) > int(chunks_128.replace(",", ""))
        await pilot.press("g")
        app.screen.query_one("#prompt-input", Input).value = "5"
        await pilot.press("enter")
        assert "chunk 5 of" in plain(app, "#chunk-title")


async def test_the_masking_preview_masks_as_the_train_form_says(tiny_model_dir: Path,
                                                                 corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("m")
        assert "(15% of tokens)" in plain(app, "#chunk-title")
        await pilot.press("f3")
        await settle(pilot)
        app.query_one("#t-mlm_probability", Input).focus()
        await pilot.press("end", *["backspace"] * 4, *"0.4")
        await pilot.press("f2")
        await settle(pilot)
        title = plain(app, "#chunk-title")
        assert "(40% of tokens)" in title  # the form's probability, not the preview's own
        masked = int(title.split("masking ")[1].split(" of ")[0])
        assert masked > 0.25 * 128
        await pilot.press("c")  # and back: Chunks' keys change the form
        app.screen.query_one("#prompt-input", Input).value = "32"
        await pilot.press("enter", "r", "w")
        await settle(pilot)
        assert "seed 43" in plain(app, "#chunk-title") and "whole words" in plain(app, "#chunk-title")
        assert app.query_one("#t-chunk_size", Input).value == "32"
        assert app.query_one("#t-seed", Input).value == "43"
        assert app.query_one("#t-whole_word_mask").value is True
        config, _ = app.train.form.request()
        assert config is not None
        assert (config.chunk_size, config.mlm_probability, config.seed) == (32, 0.4, 43)


async def test_open_corpus_from_palette_and_a_missing_one(tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p", *"open corpus")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        app.screen.query_one("#prompt-input", Input).value = str(corpus_jsonl.parent / "missing.jsonl")
        await pilot.press("enter")
        await settle(pilot)
        assert any("no such corpus" in m for m in notifications(app))
        await pilot.press("ctrl+o")
        app.screen.query_one("#prompt-input", Input).value = str(corpus_jsonl)
        await pilot.press("enter")
        await settle(pilot)
        assert app.query_one(TabbedContent).active == "chunks"
        assert "[CLS]" in plain(app, "#chunk-body")


async def test_palette_switches_panes_and_theme_is_remembered(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        assert {"mlm-dark", "mlm-light"} <= set(app.available_themes)
        assert app.theme == "mlm-dark"
        await pilot.press("ctrl+p", *"Train")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "train"
        app.theme = "mlm-light"
        await pilot.pause()
    assert json.loads(settings_path().read_text())["theme"] == "mlm-light"
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE):
        assert app.theme == "mlm-light"


async def test_a_corrupt_settings_file_is_reported(tiny_model_dir: Path) -> None:
    settings_path().write_text("{oops")
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert any("unreadable settings" in m for m in notifications(app))


async def test_start_and_cancel_a_tiny_run(tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    from mlm_tui import runstore

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await pilot.pause()
        form = {"chunk_size": "32", "batch_size": "4", "max_steps": "100000", "test_size": "4",
                "train_size": "40"}
        for name, value in form.items():
            app.query_one(f"#t-{name}", Input).value = value
        assert app.query_one("#t-corpus", Input).value == str(corpus_jsonl)
        await pilot.press("ctrl+s")

        def live_run() -> bool:
            runs, _ = runstore.list_runs()
            return bool(runs) and runs[0].is_live() and runs[0].state().get("step", 0) > 0

        await wait_for(live_run, 120, pilot)
        run = runstore.list_runs()[0][0]
        await wait_for(lambda: "running" in plain(app, "#run-title"), 10, pilot)
        app.query_one("#runs", DataTable).focus()
        await pilot.press("x")  # asks first, naming the run; the safe button has focus
        await pilot.pause()
        assert run.run_id in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("tab", "enter")
        await wait_for(lambda: run.status() == "cancelled", 60, pilot)
        await wait_for(lambda: "cancelled" in plain(app, "#run-title"), 10, pilot)
        assert "perplexity" in plain(app, "#run-ppl")
        await pilot.press("l")  # a cancelled run has no final model: a notification, not a crash
        await wait_for(lambda: any("no final model" in m for m in notifications(app)), 30, pilot)
        assert (run.dir / "config.json").is_file()
        assert json.loads((run.dir / "config.json").read_text())["chunk_size"] == 32


async def test_the_mouse_switches_panes_and_starts_nothing_by_accident(tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#--content-tab-chunks")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "chunks"
        await pilot.click("#--content-tab-train")
        await settle(pilot)
        assert app.query_one(TabbedContent).active == "train"
        await pilot.click("#start")  # an empty form: a notification, no run
        await settle(pilot)
        assert any("Corpus" in m for m in notifications(app))
        await pilot.click("#--content-tab-fill")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "fill"


async def test_the_chunk_view_of_an_extended_run_marks_the_tokens_it_added(tiny_model_dir: Path,
                                                                          tmp_path: Path, cli) -> None:
    """A run that extended its vocabulary: its tokenizer's chunks mark the words it added, with a legend,
    also under the masking preview; the base model's chunks mark nothing."""
    from conftest import write_jsonl
    from rich.text import Text
    from textual.widgets import Static

    from mlm_tui.app.render import NEW_TOKEN_FATE_STYLE, NEW_TOKEN_STYLE

    docs = [f"the microprocessor and the glomerulonephritis of item {i}" for i in range(120)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    code, out, err = cli("train", corpus, "--model", tiny_model_dir, "--extend-vocab", "2", "--max-steps", 1,
                         "--chunk-size", 32, "--batch-size", 4, "--test-size", 4, "--no-general",
                         "--bpc-chars", 0, "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]

    def marked(app: WorkbenchApp) -> list[str]:
        """The runs of the chunk's text in the new-token styles."""
        body = app.query_one("#chunk-body", Static).content
        assert isinstance(body, Text)
        at = {i for s in body.spans
              if str(s.style) == NEW_TOKEN_STYLE or NEW_TOKEN_FATE_STYLE in str(s.style).split()
              for i in range(s.start, s.end)}
        return "".join(c if i in at else "\n" for i, c in enumerate(body.plain)).split()

    for model, added in ((run_id, {"microprocessor", "glomerulonephritis"}), (str(tiny_model_dir), set())):
        app = WorkbenchApp(model=model, data=str(corpus))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("f2")
            await settle(pilot)
            assert "microprocessor" in plain(app, "#chunk-body")
            assert set(marked(app)) == added
            legend = app.query_one("#new-token-legend")
            assert legend.display == bool(added)
            if added:
                assert "a token the run's vocabulary extension added (2" in plain(app, "#new-token-legend")
                await pilot.press("m")  # the masking preview keeps them marked
                await pilot.pause()
                assert app.query_one("#fate-legend").display and set(marked(app)) == added
                await pilot.press("f3")  # its details say its vocabulary is not the base's
                await wait_for(lambda shown=app: run_id in plain(shown, "#run-title"), 10, pilot)
                assert "vocabulary +2 words" in plain(app, "#run-title")

    # Chunks follows Fill's model: the base's chunks, then the run's once it is loaded in Fill (ctrl+l),
    # until a tokenizer is picked with `t`, which stays when Fill's model changes again.
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for model, key, added in ((run_id, "ctrl+l", {"microprocessor", "glomerulonephritis"}),
                                  (str(tiny_model_dir), "t", set()), (run_id, "ctrl+l", set())):
            await pilot.press("f2")
            await settle(pilot)
            await pilot.press(key)
            app.screen.query_one("#prompt-input", Input).value = model
            await pilot.press("enter")
            await pilot.press("f2")
            await settle(pilot)
            await wait_for(lambda a=app: not a.query_one("#tokenize-progress").display, 30, pilot)
            assert set(marked(app)) == added, (model, key)
            assert app.query_one(FillPane).refs["main"] == run_id  # `t` changed the tokenizer alone


def test_the_workbench_collects_garbage_again_once_its_first_frame_is_up(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_app` holds Python's collector through the start-up (a full collection cost the first paint
    15 to 20 ms); a workbench that never turned it on again would grow for as long as it stayed open."""
    from textual.app import App

    from mlm_tui.app.main import run_app

    seen: dict[str, object] = {}

    async def look(pilot: Pilot) -> None:
        await settle(pilot)
        seen.update(collecting=gc.isenabled(), kept=gc.get_freeze_count(),
                    fill=plain(pilot.app, "#model-line"))
        pilot.app.exit()

    def run_headless(self: App) -> None:
        App.run(self, headless=True, size=SIZE, auto_pilot=look)

    monkeypatch.setattr(WorkbenchApp, "run", run_headless)
    try:
        run_app(model=str(tiny_model_dir))
    finally:
        gc.enable()
        gc.unfreeze()
    assert seen["collecting"] is True and seen["kept"] > 0
    assert seen["fill"] == f"model: {tiny_model_dir.name}"
