"""The Train pane: the form (`train_form`), the run store as a table (`runs_table`) and the selected run
(`run_view`), and what the table's keys do to a run.

Nothing here trains. Runs are launched detached (see `mlm_tui.launcher`) and every run, whoever started
it, is followed through the run store (`runstore.RunInfo`, read by worker threads), so quitting the app, a
dropped ssh connection or a run started from the CLI in another tmux pane all look the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message

from mlm_tui.app.learned_screen import LearnedSession
from mlm_tui.app.run_view import RunView
from mlm_tui.app.runs_table import RunsTable
from mlm_tui.app.shared import LoadModel, RunsChanged
from mlm_tui.app.train_form import TrainForm
from mlm_tui.progress import format_bytes
from mlm_tui.runstore import LIVE
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.app.shared import Masking, OpenCorpus
    from mlm_tui.run_settings import TrainConfig
    from mlm_tui.runstore import Run, RunInfo

RESUMABLE = ("cancelled", "interrupted", "failed")
SHORT = 30  # rows of the pane below which the run's details shrink (80x24 leaves it 21)


class Launched(Message):
    def __init__(self, run_id: str | None, error: str | None) -> None:
        super().__init__()
        self.run_id, self.error = run_id, error


class TrainPane(Horizontal):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start", tooltip="start a run with this form"),
        Binding("f", "focus_form", "Form", tooltip="to the form's first box (tab / shift+tab: the next / "
                "previous box)"),
    ]

    def __init__(self, model: str, corpus: str | None, text_field: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.form = TrainForm(model, corpus, text_field, id="train-form")
        self.table = RunsTable(id="runs")
        self.view = RunView(id="run-view")
        self._problems_seen: set[str] = set()
        self.learned = LearnedSession()  # what a run learned: its settings and reports, for the session

    def compose(self) -> ComposeResult:
        yield self.form
        with Vertical(id="run-side"):
            yield self.table
            yield self.view

    # -- what the app gives the pane ----------------------------------------------------------------
    def set_defaults(self, corpus: str | None, text_field: str | None) -> None:
        self.form.set_defaults(corpus, text_field)

    def use_corpus(self, opened: OpenCorpus) -> None:
        self.form.use_corpus(opened)

    def use_masking(self, masking: Masking) -> None:
        self.form.use_masking(masking)

    def show_runs(self, infos: list[RunInfo], problems: list[str]) -> None:
        """The app's latest look at the run store (newest first)."""
        for problem in problems:
            self._problem(problem)
        self.table.show_runs(infos)
        self.view.poll()  # the details read at the same moment as the table, so both say the same status

    def on_resize(self) -> None:
        self.set_class(self.size.height < SHORT, "-short")

    @on(RunView.Problem)
    def _view_problem(self, event: RunView.Problem) -> None:
        self._problem(event.text)

    def _problem(self, text: str) -> None:
        if text not in self._problems_seen:
            self._problems_seen.add(text)
            self.app.notify(text, severity="warning", markup=False)

    @on(RunsTable.Selected)
    def _selected(self, event: RunsTable.Selected) -> None:
        self.view.show_run(event.run_id)

    # -- starting a run -----------------------------------------------------------------------------
    def action_focus_form(self) -> None:
        self.form.query_one("#t-corpus").focus()

    def action_start(self) -> None:
        self.form.start()

    @on(TrainForm.Start)
    def _start(self, event: TrainForm.Start) -> None:
        self.view.say(f"starting a run on {printable(event.config.corpus)}…")
        self._launch_worker(event.config)

    @work(thread=True, group="launch")
    def _launch_worker(self, config: TrainConfig) -> None:
        from mlm_tui import lifecycle
        from mlm_tui.errors import MlmError, told
        from mlm_tui.run_settings import label

        try:
            self.post_message(Launched(lifecycle.launch(config), None))
        except MlmError as exc:
            self.post_message(Launched(None, told(exc, label)))

    @on(Launched)
    def _launched(self, event: Launched) -> None:
        if event.error is not None:
            self.app.notify(event.error, title="Run did not start", severity="error", timeout=10,
                            markup=False)
            self.view.say(f"the run did not start: {event.error}")
            return
        self.app.notify(f"Run {event.run_id} started in its own process; it keeps going if you quit.",
                        markup=False)
        self.table.select(event.run_id)
        self.view.show_run(event.run_id)
        self.post_message(RunsChanged())

    # -- what the table's keys do to the selected run ------------------------------------------------
    @on(RunsTable.Act)
    def _act(self, event: RunsTable.Act) -> None:
        """Every run action: find the selected run (or say to select one), then do it."""
        from mlm_tui import runstore

        actions: dict[str, Callable[..., None]] = {
            "load": self._load, "cancel": self._cancel, "delete": self._delete, "resume": self._resume,
            "copy_settings": self._copy_settings, "overlay": self._overlay, "learned": self._learned,
                   "probe": self._probe}
        if event.action == "clear_overlays":  # the one action on no run
            self.view.clear_overlays()
            return
        run = runstore.find_run(event.run_id) if event.run_id else None
        if run is None:
            self.app.notify("Select a run in the list first.", severity="warning")
            return
        actions[event.action](run, *event.args)

    def _load(self, run: Run, role: str) -> None:
        self.post_message(LoadModel(run.run_id, role))

    def _cancel(self, run: Run) -> None:
        """Cancel the run, once the user confirmed it in a dialog that names the run."""
        from mlm_tui.app.confirm import ConfirmScreen

        info = run.info()
        if info.status not in LIVE:
            self.app.notify(f"Run {run.run_id} is {info.status}: nothing to cancel.")
            return

        def confirmed(yes: bool | None) -> None:
            from mlm_tui import launcher

            if yes and run.status() in LIVE:
                launcher.cancel(run)
                self.app.notify(f"Cancelling {run.run_id}: it stops after this step and saves a checkpoint.")

        detail = f"{_describe(info)}. It stops after the current step, saves a checkpoint and can be resumed."
        self.app.push_screen(ConfirmScreen(f"Cancel run {run.run_id}?", detail, f"Cancel {run.run_id}",
                                           keep="Keep it running"), confirmed)

    def _delete(self, run: Run) -> None:
        """Delete the run (not a live one), once confirmed; say which runs started from it."""
        from mlm_tui import runstore
        from mlm_tui.app.confirm import ConfirmScreen

        info = run.info()
        if info.status in LIVE:
            self.app.notify(f"Run {run.run_id} is {info.status}: cancel it first (x).", severity="warning")
            return
        based = runstore.runs_based_on(run.run_id)
        detail = f"{_describe(info)}: its checkpoints, final model and logs are deleted."
        if based:
            detail += f" Runs started from its model keep their own: {', '.join(based)}."

        def confirmed(yes: bool | None) -> None:
            from mlm_tui.errors import MlmError

            if not yes:
                return
            try:
                done = runstore.delete_run(run)
            except MlmError as exc:
                self.app.notify(str(exc), title="Not deleted", severity="error", markup=False)
                return
            self.app.notify(f"Deleted run {done.run_id} ({format_bytes(done.freed_bytes)} freed).")
            if self.table.selected == run.run_id:
                self.table.selected = None
            self.view.forget(run.run_id)
            self.post_message(RunsChanged())

        self.app.push_screen(ConfirmScreen(f"Delete run {run.run_id}?", detail, f"Delete {run.run_id}",
                                           keep="Keep it"), confirmed)

    def _resume(self, run: Run) -> None:
        from mlm_tui import launcher
        from mlm_tui.errors import MlmError

        status = run.status()
        if status not in RESUMABLE:
            self.app.notify(f"Run {run.run_id} is {status}: only cancelled, interrupted or failed runs "
                            "resume.")
            return
        try:
            launcher.resume(run)
        except MlmError as exc:
            self.app.notify(str(exc), title="Not resumed", severity="error", markup=False)
            return
        self.app.notify(f"Resuming {run.run_id} from its last checkpoint in its own process.")

    def _copy_settings(self, run: Run) -> None:
        from mlm_tui.runstore import CorruptRun

        try:
            config = run.train_config()
        except CorruptRun as exc:
            self.app.notify(str(exc), severity="error", markup=False)
            return
        self.form.fill(config)
        self.app.notify(f"The form has the settings of {run.run_id}; change what you like and press ctrl+s.")

    def _overlay(self, run: Run) -> None:
        self.view.toggle_overlay()

    def _learned(self, run: Run) -> None:
        from mlm_tui.app.learned_screen import LearnedScreen

        # a run with no model to compare: the screen says so
        self.app.push_screen(LearnedScreen(run.run_id, self.learned))

    def _probe(self, run: Run) -> None:
        from mlm_tui.app.probe_screen import ProbeScreen
        from mlm_tui.errors import MlmError
        from mlm_tui.runstore import model_refs

        try:
            config = model_refs(run.run_id).config  # what `runs probe` would compare, or why nothing
        except MlmError as exc:
            self.app.notify(str(exc), severity="warning", markup=False)
            return
        self.app.push_screen(ProbeScreen(run.run_id, config.corpus, config.text_field))


def _describe(info: RunInfo) -> str:
    return (f"{printable(info.model or '?')} on {printable(info.corpus or '?')}, step {info.step}"
            f"{'/' + str(info.total_steps) if info.total_steps else ''}, {format_bytes(info.bytes)}")
