"""The Train pane: a form that starts `mlm-tui train` as its own process, and a live view of the run store.

Nothing here trains. Runs are launched detached (see `mlm_tui.launcher`) and every run, whoever started
it, is followed by polling the run store from a worker thread, so quitting the app, a dropped ssh
connection or a run started from the CLI in another tmux pane all look the same: reopen and it is live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Log, ProgressBar, Sparkline, Static

from mlm_tui.errors import MlmError, UsageError
from mlm_tui.progress import format_duration
from mlm_tui.run_settings import TrainConfig

POLL_S = 1.0
LOG_TAIL = 300

# (field, label, default, kind): the course's defaults; blank optional fields let the trainer choose.
FORM: list[tuple[str, str, str, str]] = [
    ("corpus", "Corpus", "", "text"),
    ("model", "Model", "starter", "text"),
    ("chunk_size", "Chunk size", "128", "integer"),
    ("mlm_probability", "Mask prob.", "0.15", "number"),
    ("learning_rate", "Learn. rate", "2e-5", "number"),
    ("weight_decay", "Weight decay", "0.01", "number"),
    ("batch_size", "Batch size", "", "integer"),
    ("epochs", "Epochs", "3", "number"),
    ("max_steps", "Max steps", "", "integer"),
    ("train_size", "Train chunks", "", "integer"),
    ("test_size", "Test chunks", "", "integer"),
    ("seed", "Seed", "42", "integer"),
]


@dataclass
class RunView:
    """What the pane shows of one run, read by the poll worker."""

    run_id: str
    summary: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class RunsPolled(Message):
    def __init__(self, summaries: list[dict[str, Any]], detail: RunView | None, problems: list[str]) -> None:
        super().__init__()
        self.summaries, self.detail, self.problems = summaries, detail, problems


class Launched(Message):
    def __init__(self, run_id: str | None, error: str | None) -> None:
        super().__init__()
        self.run_id, self.error = run_id, error


class DeviceFound(Message):
    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device


def _ppl(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "–"


class TrainPane(Horizontal):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start run"),
        Binding("x", "cancel_run", "Cancel run"),
        Binding("l", "load_run('main')", "Load model"),
        Binding("k", "load_run('compare')", "Compare"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selected: str | None = None
        self._shown_log: tuple[str | None, int] = (None, 0)
        self._row_ids: list[str] = []
        self._problems_seen: set[str] = set()

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="train-form"):
            for name, label, default, kind in FORM:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(default, id=f"t-{name}", type=kind)
            yield Checkbox("Whole-word masking", id="t-whole_word_mask")
            yield Button("Start run (ctrl+s)", id="start", variant="primary")
        with Vertical(id="run-side"):
            table: DataTable[str] = DataTable(id="runs", cursor_type="row")
            yield table
            yield Static(Text("No run selected."), id="run-title")
            with Vertical(id="run-progress-row"):
                yield ProgressBar(id="run-progress", show_eta=False)
                yield Static(id="run-speed")
            yield Sparkline([], id="loss")
            yield Static(id="run-ppl")
            yield Log(id="run-log", max_lines=LOG_TAIL)

    def on_mount(self) -> None:
        self.query_one("#runs", DataTable).add_columns("run", "status", "step", "ppl before", "after")
        self.query_one("#t-batch_size", Input).placeholder = "auto"
        self.query_one("#t-test_size", Input).placeholder = "auto"
        self.query_one("#t-train_size", Input).placeholder = "all"
        self.query_one("#t-max_steps", Input).placeholder = "from epochs"
        self.query_one("#run-progress-row").display = False  # until a run is shown
        self.set_defaults(self.app.data, self.app.model_ref)
        self._device_worker()  # imports torch: this pane mounts lazily, after the first paint
        self.poll()
        self.set_interval(POLL_S, self.poll)

    # -- device-sensible defaults -------------------------------------------------------------------
    @work(thread=True, group="device")
    def _device_worker(self) -> None:
        from mlm_tui.app.heavy import import_torch

        torch = import_torch()
        self.post_message(DeviceFound("cuda" if torch.cuda.is_available() else "cpu"))

    @on(DeviceFound)
    def _device(self, event: DeviceFound) -> None:
        """Mirror the trainer's choices (Trainer._plan and _data) so the form says what 'auto' means."""
        gpu = event.device == "cuda"
        self.query_one("#t-batch_size", Input).placeholder = f"auto: {64 if gpu else 16} on {event.device}"
        self.query_one("#t-test_size", Input).placeholder = f"auto: {1000 if gpu else 200}"

    def set_defaults(self, corpus: str | None, model: str | None) -> None:
        """Fill the corpus and model fields from what the other panes have open, unless the user typed."""
        for name, value in (("corpus", corpus), ("model", model)):
            box = self.query_one(f"#t-{name}", Input)
            if value and box.value in ("", "starter"):
                box.value = value

    # -- starting -----------------------------------------------------------------------------------
    def request(self) -> TrainConfig:
        """The form as a run config, checked as the CLI checks it; ValueError names what is wrong."""
        values: dict[str, Any] = {}
        for name, label, _default, kind in FORM:
            text = self.query_one(f"#t-{name}", Input).value.strip()
            if not text:
                if name == "corpus":
                    raise ValueError("Corpus: give a corpus file, folder or hub dataset")
                values[name] = "starter" if name == "model" else None
                continue
            try:
                values[name] = int(text) if kind == "integer" else float(text) if kind == "number" else text
            except ValueError:
                raise ValueError(f"{label}: not a {kind}: {text}") from None
        values["whole_word_mask"] = self.query_one("#t-whole_word_mask", Checkbox).value
        for name in ("chunk_size", "mlm_probability", "learning_rate", "weight_decay", "seed", "epochs"):
            if values[name] is None:
                values[name] = TrainConfig.__dataclass_fields__[name].default
        config = TrainConfig(**values)
        try:
            config.validate()
        except UsageError as exc:
            raise ValueError(str(exc).replace("--", "", 1)) from None
        return config

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        try:
            request = self.request()
        except ValueError as exc:
            self.app.notify(str(exc), title="Cannot start", severity="error", markup=False)
            return
        self.query_one("#run-title", Static).update(Text(f"starting a run on {request.corpus}…"))
        self.app.notify("Starting the run in its own process; it keeps running if you quit.", markup=False)
        self._launch_worker(request)

    @work(thread=True, group="launch")
    def _launch_worker(self, request: TrainConfig) -> None:
        from mlm_tui import launcher

        try:
            self.post_message(Launched(launcher.launch(request), None))
        except MlmError as exc:
            self.post_message(Launched(None, str(exc)))

    @on(Launched)
    def _launched(self, event: Launched) -> None:
        if event.error is not None:
            self.app.notify(event.error, title="Run did not start", severity="error", timeout=10,
                            markup=False)
            self.query_one("#run-title", Static).update(Text(f"the run did not start: {event.error}"))
            return
        self.selected = event.run_id
        self.poll()

    # -- watching -----------------------------------------------------------------------------------
    def poll(self) -> None:
        self._poll_worker(self.selected)

    @work(thread=True, exclusive=True, group="runs-poll")
    def _poll_worker(self, selected: str | None) -> None:
        from mlm_tui import runstore

        runs, problems = runstore.list_runs()
        summaries, detail = [], None
        for run in runs:
            try:
                summaries.append(run.info().summary())
            except runstore.CorruptRun as exc:
                problems.append(f"skipped run {exc}")
        if selected is None and summaries:
            selected = summaries[0]["run_id"]
        run = runstore.find_run(selected) if selected else None
        if run is not None:
            try:
                summary = next((s for s in summaries if s["run_id"] == run.run_id), run.info().summary())
                detail = RunView(run.run_id, summary, run.state(), run.config())
                detail.losses = [row["loss"] for row in run.metrics() if "loss" in row]
                try:
                    detail.log = run.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
                except FileNotFoundError:
                    detail.log = []
            except runstore.CorruptRun as exc:
                problems.append(str(exc))
        self.post_message(RunsPolled(summaries, detail, problems))

    @on(RunsPolled)
    def _polled(self, event: RunsPolled) -> None:
        for problem in event.problems:
            if problem not in self._problems_seen:
                self._problems_seen.add(problem)
                self.app.notify(problem, severity="warning", markup=False)
        self._show_table(event.summaries)
        if event.detail is not None:
            self._show_detail(event.detail)

    def _show_table(self, summaries: list[dict[str, Any]]) -> None:
        table = self.query_one("#runs", DataTable)
        ids = [s["run_id"] for s in summaries]
        rows = [(s["run_id"], s["status"], str(s["steps"]), _ppl(s["perplexity_before"]),
                 _ppl(s["perplexity_after"])) for s in summaries]
        if ids != self._row_ids:
            table.clear()
            for row in rows:
                table.add_row(*row, key=row[0])
            self._row_ids = ids
            if self.selected in ids:
                table.move_cursor(row=ids.index(self.selected), animate=False)
            return
        for row in rows:
            for column, value in zip(table.ordered_columns[1:], row[1:], strict=True):
                if table.get_cell(row[0], column.key) != value:
                    table.update_cell(row[0], column.key, value)

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = event.row_key.value
        if run_id and run_id != self.selected:
            self.selected = run_id
            self.poll()

    def _show_detail(self, view: RunView) -> None:
        state, config, summary = view.state, view.config, view.summary
        if self.selected is None:
            self.selected = view.run_id
        status = summary["status"]
        total = state.get("total_steps") or (config.get("plan") or {}).get("steps")
        step = state.get("step", 0)
        title = Text(f"{view.run_id} · {status}", style="bold")
        title.append(f" · {config.get('model')} on {config.get('corpus')}", style="")
        words = " whole words" if config.get("whole_word_mask") else ""
        batch = (config.get("plan") or {}).get("batch_size")
        title.append(f"\nchunk {config.get('chunk_size')} · mask {config.get('mlm_probability')}{words} · "
                     f"lr {config.get('learning_rate')} · wd {config.get('weight_decay')} · batch {batch}",
                     style="dim")
        if state.get("message") and status != "running":
            title.append(f"\n{state['message']}", style="red" if status == "failed" else "")
        self.query_one("#run-title", Static).update(title)
        self.query_one("#run-progress-row").display = True
        self.query_one("#run-progress", ProgressBar).update(total=total or None, progress=step)
        speed = ""
        if status == "running" and state.get("tokens_per_s"):
            speed = f"{state['tokens_per_s']:,.0f} tok/s · ETA {format_duration(state.get('eta') or 0)}"
        elif status == "completed" and state.get("train_runtime"):
            speed = f"done in {format_duration(state['train_runtime'])}"
        where = f"step {step}/{total or '?'}"
        self.query_one("#run-speed", Static).update(Text(f"{where} · {speed}" if speed else where))
        self.query_one("#loss", Sparkline).data = view.losses
        loss = f" · loss {view.losses[-1]:.3f}" if view.losses else ""
        before, after = _ppl(state.get("perplexity_before")), _ppl(state.get("perplexity_after"))
        self.query_one("#run-ppl", Static).update(Text(f"perplexity {before} → {after}{loss}"))
        log = self.query_one("#run-log", Log)
        shown_id, shown_n = self._shown_log
        if shown_id != view.run_id or len(view.log) < shown_n:
            log.clear()
            shown_n = 0
        log.write_lines(view.log[shown_n:])
        self._shown_log = (view.run_id, len(view.log))

    # -- run actions --------------------------------------------------------------------------------
    def _selected_run(self) -> Any:
        from mlm_tui import runstore

        run = runstore.find_run(self.selected) if self.selected else None
        if run is None:
            self.app.notify("Select a run in the list first.", severity="warning")
        return run

    def action_cancel_run(self) -> None:
        from mlm_tui import launcher

        run = self._selected_run()
        if run is None:
            return
        if run.status() != "running":
            self.app.notify(f"Run {run.run_id} is {run.status()}: nothing to cancel.")
            return
        launcher.cancel(run)
        self.app.notify(f"Cancelling {run.run_id}: it stops after this step and saves a checkpoint.")

    def action_load_run(self, role: str) -> None:
        run = self._selected_run()
        if run is not None:
            self.app.load_model(run.run_id, role)  # type: ignore[attr-defined]
