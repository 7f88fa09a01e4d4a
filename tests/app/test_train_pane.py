"""The Train pane as a user drives it: the generated form, its checks and notes, the runs table and the
run actions (delete, resume, copy settings, overlay), and the chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pilot import notifications, plain, settle, wait_for
from textual.pilot import Pilot
from textual.widgets import Input, Static

from mlm_tui.app.workbench import WorkbenchApp
from mlm_tui.run_settings import form_fields

pytestmark = pytest.mark.anyio


def train_run(cli, corpus: Path, model: Path, *extra: object) -> str:
    import json

    code, out, err = cli("train", corpus, "--model", model, "--chunk-size", 32, "--batch-size", 4,
                         "--test-size", 4, "--json", *extra)
    assert code == 0, err
    return json.loads(out)["run_id"]


async def open_train(pilot: Pilot) -> None:
    await settle(pilot)
    await pilot.press("f3")
    await settle(pilot)


async def test_the_form_offers_every_setting_the_cli_has(home: Path, tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        for field in form_fields():  # generated from the one declaration the CLI is built from
            assert app.query(f"#t-{field.name}"), field.name
        advanced = app.query_one("#advanced")
        assert advanced.collapsed  # the less used settings are folded away
        assert app.query_one("#t-precision").ancestors_with_self.count(advanced) == 1  # type: ignore[attr-defined]


async def test_epochs_and_max_steps_exclude_each_other(home: Path, tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        epochs = app.query_one("#t-epochs", Input)
        assert not epochs.disabled
        app.query_one("#t-corpus", Input).value = "c.jsonl"
        app.query_one("#t-max_steps", Input).value = "50"
        await pilot.pause()
        assert epochs.disabled and "max steps given" in plain(app, "#n-epochs")
        config, errors = app.train.form.request()
        assert errors == {} and config is not None and config.max_steps == 50
        app.query_one("#t-max_steps", Input).value = ""
        await pilot.pause()
        assert not epochs.disabled and not app.query_one("#n-epochs").display


async def test_bad_values_are_marked_by_field_and_start_nothing(home: Path, tiny_model_dir: Path) -> None:
    from mlm_tui import runstore

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        app.query_one("#t-corpus", Input).value = "c.jsonl"
        app.query_one("#t-learning_rate", Input).value = "-1"
        app.query_one("#t-gradient_accumulation", Input).value = "zero"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.query_one("#t-learning_rate").has_class("-bad")
        assert "must be positive" in plain(app, "#n-learning_rate")
        assert app.query_one("#t-gradient_accumulation").has_class("-bad")
        assert not app.query_one("#advanced").collapsed  # opened to show the marked advanced field
        assert not app.query_one("#t-chunk_size").has_class("-bad")
        assert runstore.list_runs()[0] == []
        assert any("Cannot start" in (n.title or "") for n in app._notifications)
        app.query_one("#t-learning_rate", Input).value = "1e-4"  # mended: its mark and note go at once
        await pilot.pause()
        assert not app.query_one("#t-learning_rate").has_class("-bad")
        assert not app.query_one("#n-learning_rate").display
        assert app.query_one("#t-gradient_accumulation").has_class("-bad")  # the other stays marked


async def test_a_test_size_beyond_the_corpus_is_shown_adjusted_before_the_run(
        home: Path, tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        app.query_one("#t-chunk_size", Input).value = "32"
        app.query_one("#t-test_size", Input).value = "50"
        await settle(pilot)
        note = plain(app, "#n-test_size")
        pane = app.query_one("#chunks-pane")
        held_out = pane.splits["train"].split_documents(0.1, 42)[1].chunks(32)  # type: ignore[attr-defined]
        assert f"→ {len(held_out)}: all the held-out documents hold" in note and len(held_out) < 50
        app.query_one("#t-test_size", Input).value = "2"
        await settle(pilot)
        assert not app.query_one("#n-test_size").display


async def test_delete_asks_names_the_run_and_refuses_a_live_one(tiny_model_dir: Path,
                                                                finished_run: str) -> None:
    from mlm_tui import runstore

    first = finished_run
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        await pilot.press("d")
        await pilot.pause()
        assert first in str(app.screen.query_one(".dialog-title").render())
        await pilot.press("enter")  # the safe button has focus: nothing is deleted
        await pilot.pause()
        assert runstore.find_run(first) is not None
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("tab", "enter")
        await wait_for(lambda: app.query_one("#runs").row_count == 0, 10, pilot)
        assert runstore.find_run(first) is None
        assert any(f"Deleted run {first}" in m for m in notifications(app))


async def test_a_runs_details_show_its_bits_per_character(tiny_model_dir: Path, finished_run: str) -> None:
    from mlm_tui import runstore

    run = runstore.find_run(finished_run)
    assert run is not None
    info = run.info()
    assert info.bpc_before is not None and info.bpc_after is not None
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: finished_run in plain(app, "#run-title"), 10, pilot)
        assert f"bits/char {info.bpc_before:.3f} → {info.bpc_after:.3f}" in plain(app, "#run-ppl")


async def test_copy_settings_fills_the_form_and_resume_continues_a_cancelled_run(
        home: Path, tiny_model_dir: Path, corpus_jsonl: Path, cli) -> None:
    from mlm_tui import runstore
    from mlm_tui.run_settings import TrainConfig

    run_id = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 2, "--whole-word-mask",
                       "--learning-rate", "3e-4")
    run = runstore.find_run(run_id)
    assert run is not None
    app = WorkbenchApp(model="starter")
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        await pilot.press("c")
        await pilot.pause()
        config, errors = app.train.form.request()
        assert errors == {} and config is not None
        assert config == run.train_config()
        assert app.query_one("#t-whole_word_mask").value is True
        assert config != TrainConfig(corpus=str(corpus_jsonl))
        assert app.focused is app.query_one("#t-corpus")
        await pilot.press("f3")
        await pilot.press("r")  # a completed run does not resume
        await pilot.pause()
        assert any("only cancelled, interrupted or failed runs resume" in m for m in notifications(app))


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_the_chart_says_when_there_is_nothing_to_draw_and_draws_a_run(
        home: Path, tiny_model_dir: Path, corpus_jsonl: Path, cli, size: tuple[int, int]) -> None:
    from mlm_tui import runstore

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=size) as pilot:
        await open_train(pilot)
        assert "No run selected" in plain(app, "#chart-empty")
        assert not app.query_one("#chart-plots").display
    run_id = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 6, "--logging-steps", 1,
                       "--eval-steps", 3)
    other = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 3, "--logging-steps", 1)
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=size) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#chart-plots").display, 10, pilot)
        assert not app.query_one("#chart-empty").display
        assert other in plain(app, "#run-title")  # the newest run is selected
        await pilot.press("v", "down")  # overlay it on the next run's chart
        await wait_for(lambda: f"overlaid: {other}" in plain(app, "#run-ppl"), 10, pilot)
        assert run_id in plain(app, "#run-title") and "V clears" in plain(app, "#run-ppl")
        legend = plain(app, "#chart-legend")  # under the plot: nothing hides the step-0 perplexity
        assert f"{run_id[9:]}: • loss ━ smoothed ● perplexity" in legend
        assert f"{other[9:]}: ━ smoothed" in legend
        drawn = str(app.query_one("#chart-plot").render())
        assert f"{run_id} loss" not in drawn and "perplexity" in drawn
        await pilot.press("tab")  # the chart's own keys
        assert app.focused is app.query_one("#chart")
        await pilot.press("right", "right", "right")  # step 0 holds only the perplexity before; then 1, 2
        run = runstore.find_run(run_id)
        assert run is not None
        loss = next(row["loss"] for row in run.metrics() if row["step"] == 2 and "loss" in row)
        readout = _shown_lines(app, "#chart-legend")  # a heading, then a row per run, each whole
        width = app.query_one("#chart-legend").size.width
        assert len(readout) == 3 and all(len(line) <= width and "…" not in line for line in readout)
        wide = size == (120, 40)  # at 80x24, the ids' own part and short words fit a row per run
        assert readout[0].split() == ["step", "2", *(["loss", "smoothed", "perplexity", "rate"] if wide else
                                                     ["loss", "smooth", "ppl", "lr"])]
        assert readout[1].startswith(run_id[9:] if wide else run_id[-4:]) and f" {loss:.3f} " in readout[1]
        assert readout[2].startswith(other[9:] if wide else other[-4:])
        await pilot.press("l", "r")  # a log scale for the loss, the rate on the right axis
        drawn = str(app.query_one("#chart-plot").render())
        assert "loss (log)" in drawn and drawn.rstrip().endswith("rate")
        await pilot.press("escape")  # no cursor: the legend again
        assert "━ rate" in plain(app, "#chart-legend")
        await pilot.press("shift+tab", "V")  # every overlay cleared, from the runs table
        await wait_for(lambda: "overlaid" not in plain(app, "#run-ppl"), 10, pilot)
        assert other[9:] not in plain(app, "#chart-legend")


@pytest.mark.parametrize(("size", "hidden"), [((120, 40), []), ((80, 24), ["model", "corpus", "steps"])])
async def test_the_runs_table_keeps_status_and_perplexity_at_any_width(
        tiny_model_dir: Path, finished_run: str, size: tuple[int, int], hidden: list[str]) -> None:
    run_id = finished_run
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=size) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        table = app.query_one("#runs")
        keys = [str(column.key.value) for column in table.ordered_columns]  # type: ignore[attr-defined]
        assert {"run", "status", "after", "change"} <= set(keys)
        assert not set(hidden) & set(keys)
        assert sum(column.get_render_width(table) for column in table.ordered_columns) <= table.size.width
        row = table.get_row_at(0)
        assert row[keys.index("status")].endswith("completed") and run_id.endswith(row[0])
        assert row[keys.index("change")].endswith("%")
        await wait_for(lambda: run_id in plain(app, "#run-title"), 10, pilot)
        title = plain(app, "#run-title").splitlines()  # a line cut at a narrow width loses its end only
        assert title[0].startswith(run_id) and title[1].startswith("chunk 32 · mask 0.15 · lr ")


async def test_a_cancelled_run_resumes_from_the_table(home: Path, tiny_model_dir: Path,
                                                      corpus_jsonl: Path) -> None:
    from mlm_tui.errors import RunCancelled
    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    stop: list[int] = []
    config = TrainConfig(corpus=str(corpus_jsonl), model=str(tiny_model_dir), chunk_size=32, batch_size=4,
                         max_steps=4, logging_steps=1, save_steps=1, test_size=4)
    trainer = TrainingRun(config, should_stop=lambda: bool(stop),
                       on_event=lambda event: stop.append(1) if event["event"] == "step" else None)
    with pytest.raises(RunCancelled):
        trainer.run()
    run = trainer.run_record
    assert run is not None and run.status() == "cancelled"
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        await pilot.press("r")
        await wait_for(lambda: run.status() == "completed", 120, pilot)
        assert run.info().step == 4 and len(run.info().resumes) == 1
        await wait_for(lambda: any(f"{run.run_id} completed" in m for m in notifications(app)), 10, pilot)


async def test_the_model_dialog_lists_finished_runs_to_pick(tiny_model_dir: Path, finished_run: str) -> None:
    run_id = finished_run
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await wait_for(lambda: bool(app.run_infos), 10, pilot)
        await pilot.press("f4")
        await pilot.pause()
        options = app.screen.query_one("#pick-list")
        label = str(options.get_option_at_index(0).prompt)
        assert run_id in label and "corpus.jsonl" in label and "perplexity" in label
        await pilot.press("down", "enter")  # from the text box to the list, and pick
        await settle(pilot)
        pane = app.query_one("#fill-pane")
        assert pane.refs["compare"] == run_id and pane.handles["compare"] is not None  # type: ignore[attr-defined]


async def test_runs_sort_by_key_and_header(home: Path, tiny_model_dir: Path, corpus_jsonl: Path, cli) -> None:
    first = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 6, "--learning-rate", "1e-3")
    second = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 1)  # newer, and learned less
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 2, 10, pilot)
        table = app.query_one("#runs")

        def order() -> list[str]:
            return [str(key.value) for key in table.rows]  # type: ignore[attr-defined]

        assert order() == [second, first]  # newest first
        infos = {info.run_id: info for info in app.run_infos}
        await pilot.press("s", "s")  # created → status → perplexity after, lowest first
        by_after = sorted(infos, key=lambda r: infos[r].perplexity_after)  # type: ignore[arg-type,return-value]
        assert order() == by_after == [first, second]
        await pilot.press("s")  # the change, the biggest fall first
        by_change = sorted(infos, key=lambda r: infos[r].perplexity_after / infos[r].perplexity_before)  # type: ignore[operator]
        assert order() == by_change


async def test_what_a_run_learned_reads_as_the_cli_and_sends_a_probe_to_fill(home: Path, tiny_model_dir: Path,
                                                                             corpus_jsonl: Path, cli) -> None:
    import json

    from mlm_tui.app.learned_screen import LearnedScreen

    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32, "--batch-size",
                         4, "--test-size", 40, "--max-steps", 4, "--learning-rate", "1e-2", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]

    def cli_lines(*settings: object) -> list[str]:
        """`runs learned` as it prints, but for the key that mixes the general words in (a, not --all)."""
        code, out, err = cli("runs", "learned", run_id, *settings)
        assert code == 0, err
        return [line.replace("; --all mixes them in", "; a mixes them in") for line in out.splitlines()]

    # The CLI's text first: the app, once running, takes what is printed.
    defaults, top5 = cli_lines(), cli_lines("--top", 5)
    strict = cli_lines("--top", 5, "--min-count", 10)
    mixed = cli_lines("--top", 5, "--min-count", 10, "--all")
    assert top5 != defaults and strict[0] != top5[0]  # shorter lists; another summary
    assert not any(line.startswith("punctuation, markup") for line in mixed)

    def measured() -> bool:
        return isinstance(app.screen, LearnedScreen) and app.screen.report is not None

    def title() -> str:
        return str(app.screen.query_one("#learned-title").render())

    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        await pilot.press("w")
        await wait_for(measured, 60, pilot)
        await settle(pilot)
        assert _learned_lines(app) == defaults  # the CLI's defaults: top 30, min count 5

        await pilot.press("minus", "minus", "minus", "minus")  # top 30 -> 20 -> 15 -> 10 -> 5: no measuring
        await settle(pilot)
        assert _learned_lines(app) == top5
        assert "top 5" in title()

        await pilot.press("m")  # min count 5 -> 10: other words measured, fewer with a verdict
        await wait_for(measured, 60, pilot)
        await settle(pilot)
        assert _learned_lines(app) == strict
        assert "min count 10" in title()
        await pilot.press("a")  # punctuation and general words mixed into the lists
        await settle(pilot)
        assert _learned_lines(app) == mixed

        await pilot.press("n", "f")  # the second probe's sentence to Fill, the run's model to compare
        await settle(pilot)
        assert not isinstance(app.screen, LearnedScreen) and app.pane == "fill"
        sentence = [line.strip() for line in mixed if line.startswith("    ") and "[MASK]" in line][1]
        assert app.query_one("#sentence", Input).value == sentence
        pane = app.query_one("#fill-pane")
        assert pane.refs["compare"] == run_id  # type: ignore[attr-defined]
        await wait_for(lambda: "[MASK]" not in plain(app, "#fills-main") and plain(app, "#fills-compare"), 30,
                       pilot)  # both models fill its masks

        await pilot.press("f3", "w")  # the session keeps the settings, and the report: shown at once
        await pilot.pause()
        assert measured() and _learned_lines(app) == mixed


def _shown_lines(app: WorkbenchApp, selector: str) -> list[str]:
    """A Static's content as it reads at the Static's width (a Rich table's layout depends on it)."""
    from rich.console import Console

    widget = app.query_one(selector, Static)
    console = Console(width=widget.size.width, color_system=None)
    with console.capture() as captured:
        console.print(widget.content)
    return [line.rstrip() for line in captured.get().splitlines()]


def _learned_lines(app: WorkbenchApp) -> list[str]:
    """The learned view's text, line by line as written (unwrapped): the report, then each probe."""
    from rich.console import Console

    console = Console(width=1000, color_system=None)
    with console.capture() as captured:
        for widget in app.screen.query("#learned-body, .learned-probe").results(Static):
            console.print(widget.content)
    return [line.rstrip() for line in captured.get().splitlines()]


async def test_an_auto_learning_rate_runs_range_test_is_charted(home: Path, tiny_model_dir: Path,
                                                                corpus_jsonl: Path, cli) -> None:
    from mlm_tui import runstore
    from mlm_tui.lr_find import read_curve

    run_id = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 80, "--learning-rate", "auto",
                       "--no-general")
    run = runstore.find_run(run_id)
    assert run is not None and read_curve(run.dir)
    chosen = run.config()["lr_find"]["suggested"]
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: app.query_one("#lr-plot").display, 10, pilot)
        drawn = str(app.query_one("#lr-plot").render())
        assert "range test" in drawn and "rate" in drawn and "1e-5" in drawn and "log10" not in drawn
        await wait_for(lambda: f"learning rate {chosen:.2g}, auto: the loss" in plain(app, "#run-title"), 10,
                       pilot)


async def test_a_pulled_back_run_says_so_on_a_line_of_its_own(home: Path, tiny_model_dir: Path,
                                                              corpus_jsonl: Path, cli,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An `auto` run whose weights went back toward its start (a budget below zero: all the way) says how
    far in the run's details, on its own line, not at the cut end of the rate's reason."""
    from mlm_tui import pullback

    monkeypatch.setattr(pullback, "BUDGET", -1.0)
    run_id = train_run(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 10)
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: run_id in plain(app, "#run-title"), 10, pilot)
        lines = plain(app, "#run-title").splitlines()
        assert any(line.startswith("final weights 0.00 of the way from the start") for line in lines)
        assert not any("auto:" in line and "final weights" in line for line in lines)


async def test_the_form_has_a_key_and_a_stray_key_replaces_no_box(home: Path, tiny_model_dir: Path,
                                                                  corpus_jsonl: Path) -> None:
    from mlm_tui.app.train_pane import TrainPane

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=(80, 24)) as pilot:
        await open_train(pilot)
        assert app.focused is app.query_one("#runs")
        assert any(b.key == "f" and b.description == "Form" for b in TrainPane.BINDINGS)  # in the footer
        await pilot.press("f")
        assert app.focused is app.query_one("#t-corpus")
        await pilot.press("x", "tab", "y")  # once replaced the whole path: focus selected the box
        assert app.query_one("#t-corpus", Input).value == f"{corpus_jsonl}x"
        assert app.query_one("#t-model", Input).value == f"{tiny_model_dir}y"


async def test_auto_rate_on_a_run_too_short_for_a_test_is_noted_before_it(home: Path, tiny_model_dir: Path,
                                                                           corpus_jsonl: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f2")  # the corpus open in Chunks sizes the run
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        for name, value in (("chunk_size", "32"), ("batch_size", "8"), ("learning_rate", "auto")):
            app.query_one(f"#t-{name}", Input).focus()
            await pilot.press("ctrl+u", *value)
        await settle(pilot)
        note = plain(app, "#n-learning_rate")
        assert "the rate for the model's size" in note and "too short for a range test" in note
        app.query_one("#t-max_steps", Input).focus()
        await pilot.press(*"100")
        await settle(pilot)
        assert not app.query_one("#n-learning_rate").display


async def test_a_placeholder_cut_at_80_columns_ends_with_an_ellipsis(home: Path,
                                                                    tiny_model_dir: Path) -> None:
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await open_train(pilot)
        app.query_one("#advanced").collapsed = False  # "More settings"
        await settle(pilot)
        box = app.query_one("#t-test_split", Input)  # "test if there is one, else held out"
        assert len(box.placeholder) > box.scrollable_content_region.width
        shown = box.render_line(0).text.strip()
        assert shown.endswith("…") and box.placeholder.startswith(shown[:-1])
        box.value = "validation"
        assert box.render_line(0).text.strip() == "validation"  # a value is never cut so


async def test_a_corpus_path_typed_onto_the_open_one_starts_no_run(home: Path, tiny_model_dir: Path,
                                                                   corpus_jsonl: Path) -> None:
    """The form holds the open corpus's path; typing a path at its end makes one that is not there: the
    form says so and no failed run is left in the table."""
    from mlm_tui import runstore

    app = WorkbenchApp(model=str(tiny_model_dir), data=str(corpus_jsonl))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await pilot.press("f")  # the corpus box, the cursor at the end of the path it holds
        await pilot.press(*"/x.jsonl", "ctrl+s")
        assert app.query_one("#t-corpus", Input).value == f"{corpus_jsonl}/x.jsonl"
        await wait_for(lambda: any("no such corpus file or folder" in m for m in notifications(app)), 30,
                       pilot)
        await settle(pilot)
        assert runstore.list_runs()[0] == []


async def test_a_run_that_failed_before_its_plan_shows_no_working_bar(home: Path, tiny_model_dir: Path,
                                                                       corpus_jsonl: Path) -> None:
    """A bar with no total animates, as if something still worked: only a live run's bar may."""
    from textual.widgets import ProgressBar

    from mlm_tui import runstore

    run = runstore.create_run({"corpus": str(corpus_jsonl), "model": str(tiny_model_dir)})
    run.fail("failed", "no such corpus file or folder: x.jsonl")
    run.release()
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_train(pilot)
        await wait_for(lambda: run.run_id in plain(app, "#run-title"), 10, pilot)
        assert "failed" in plain(app, "#run-title")
        assert app.query_one("#run-progress", ProgressBar).total is not None
