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

from mlm_tui.app.render import printable, short_ref
from mlm_tui.errors import MlmError, UsageError
from mlm_tui.progress import format_duration
from mlm_tui.run_settings import TrainConfig

POLL_S = 1.0
LOG_TAIL = 300

# (field, label, default, kind): the course's defaults; blank optional fields let the trainer choose.
FORM: list[tuple[str, str, str, str]] = [
    ("corpus", "Corpus", "", "text"),
    ("text_field", "Text column", "text", "text"),
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


class MarkedCheckbox(Checkbox):
    """A checkbox whose mark is a ✓ or nothing, so on and off differ without colour (a monochrome
    terminal, or a colour-blind user, sees the same X either way with Textual's default)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "✓" if self.value else " "


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
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _change(before: Any, after: Any) -> str:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (before, after))
    return f"{(after - before) / before * 100:+.1f}%" if numbers and before else "–"


# (key, title, shown at every width): below WIDE_COLUMNS terminal columns only the essential ones stay.
RUN_COLUMNS = [("run", "run", True), ("status", "status", True), ("model", "model", False),
               ("corpus", "corpus", False), ("steps", "steps", False), ("before", "ppl before", False),
               ("after", "after", True), ("change", "change", True)]
WIDE_COLUMNS = 100


class RunsTable(DataTable[str]):
    """The run store as a table. Its single-letter keys act on the selected run, and only here: they
    can never fire from text typed into the form or Fill, and cancel asks first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "load_run('main')", "Load", tooltip="load the run's model into Fill"),
        Binding("k", "load_run('compare')", "Compare", tooltip="compare the run's model in Fill"),
        Binding("x", "cancel_run", "Cancel", tooltip="cancel the selected run (asks first)"),
    ]

    def action_load_run(self, role: str) -> None:
        self.pane.action_load_run(role)

    def action_cancel_run(self) -> None:
        self.pane.action_cancel_run()

    @property
    def pane(self) -> TrainPane:
        return self.query_ancestor(TrainPane)


class TrainPane(Horizontal):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start run", tooltip="start a run with this form"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selected: str | None = None
        self._shown_log: tuple[str | None, int] = (None, 0)
        self._rows: list[tuple[str, ...]] = []
        self._columns: list[str] = []
        self._summaries: list[dict[str, Any]] = []
        self._problems_seen: set[str] = set()

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="train-form"):
            for name, label, default, kind in FORM:
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(default, id=f"t-{name}", type=kind)
            yield MarkedCheckbox("Whole-word masking", id="t-whole_word_mask")
            yield Button("Start run (ctrl+s)", id="start", variant="primary")
        with Vertical(id="run-side"):
            yield RunsTable(id="runs", cursor_type="row")
            yield Static(Text("No run selected."), id="run-title")
            with Vertical(id="run-progress-row"):
                yield ProgressBar(id="run-progress", show_eta=False)
                yield Static(id="run-speed")
            yield Sparkline([], id="loss")
            yield Static(id="run-ppl")
            yield Log(id="run-log", max_lines=LOG_TAIL)

    def on_mount(self) -> None:
        self.query_one("#t-batch_size", Input).placeholder = "auto"
        self.query_one("#t-test_size", Input).placeholder = "auto"
        self.query_one("#t-train_size", Input).placeholder = "all"
        self.query_one("#t-max_steps", Input).placeholder = "from epochs"
        self.query_one("#run-progress-row").display = False  # until a run is shown
        self._default_corpus = ""
        self._set_value(self.query_one("#t-model", Input), self.app.model_ref)  # type: ignore[attr-defined]
        self.set_defaults(self.app.data, self.app.text_field)  # type: ignore[attr-defined]
        self._device_worker()  # imports torch: this pane mounts lazily, after the first paint
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

    def set_defaults(self, corpus: str | None, text_field: str | None) -> None:
        """Take the corpus open in Chunks (and its text column) while the user has not typed one.

        The Model field is the user's alone once the pane is up: loading a model into Fill does not
        change what the next run trains.
        """
        box = self.query_one("#t-corpus", Input)
        if corpus and box.value in ("", self._default_corpus):
            self._default_corpus = corpus
            self._set_value(box, corpus)
            if text_field:
                self._set_value(self.query_one("#t-text_field", Input), text_field)

    @staticmethod
    def _set_value(box: Input, value: str) -> None:
        """Set a field and show its end: a long path's file name matters more than its first folders."""
        box.value = value
        box.cursor_position = len(value)

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
        """The selected run's details (the list of runs comes from the app's own watch)."""
        from mlm_tui import runstore

        problems: list[str] = []
        detail = None
        run = runstore.find_run(selected) if selected else None
        if run is not None:
            try:
                detail = RunView(run.run_id, run.info().summary(), run.state(), run.config())
                detail.losses = [row["loss"] for row in run.metrics() if "loss" in row]
                try:
                    detail.log = run.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
                except FileNotFoundError:
                    detail.log = []
            except runstore.CorruptRun as exc:
                problems.append(str(exc))
        self.post_message(RunsPolled([], detail, problems))

    @on(RunsPolled)
    def _polled(self, event: RunsPolled) -> None:
        self._report(event.problems)
        if event.detail is not None and event.detail.run_id == self.selected:
            self._show_detail(event.detail)

    def _report(self, problems: list[str]) -> None:
        for problem in problems:
            if problem not in self._problems_seen:
                self._problems_seen.add(problem)
                self.app.notify(problem, severity="warning", markup=False)

    def show_runs(self, summaries: list[dict[str, Any]], problems: list[str]) -> None:
        """The app's latest look at the run store (newest first)."""
        self._report(problems)
        self._summaries = summaries
        if self.selected is None and summaries:
            self.selected = summaries[0]["run_id"]
            self.poll()
        self._show_table()

    def on_resize(self) -> None:
        self._show_table()

    def _show_table(self) -> None:
        """Rebuild the table when anything in it changed, so each column fits its longest value (a status
        that grows from `running` to `cancelled` is never cut), keeping the cursor on the selected run."""
        table = self.query_one("#runs", RunsTable)
        wide = self.app.size.width >= WIDE_COLUMNS
        columns = [key for key, _title, essential in RUN_COLUMNS if essential or wide]
        rows = [self._row(s, columns) for s in self._summaries]
        if columns == self._columns and rows == self._rows:
            return
        with self.prevent(DataTable.RowHighlighted):
            table.clear(columns=columns != self._columns)
            if columns != self._columns:
                titles = dict((key, title) for key, title, _ in RUN_COLUMNS)
                for key in columns:
                    table.add_column(titles[key], key=key)
            for row in rows:
                table.add_row(*row, key=row[0])
            ids = [row[0] for row in rows]
            if self.selected in ids:
                table.move_cursor(row=ids.index(self.selected), animate=False)
        self._columns, self._rows = columns, rows

    @staticmethod
    def _row(summary: dict[str, Any], columns: list[str]) -> tuple[str, ...]:
        before, after = summary["perplexity_before"], summary["perplexity_after"]
        values = {"run": summary["run_id"], "status": summary["status"],
                  "model": short_ref(summary.get("model") or "–"),
                  "corpus": short_ref(summary.get("corpus") or "–"), "steps": str(summary["steps"]),
                  "before": _ppl(before), "after": _ppl(after), "change": _change(before, after)}
        return tuple(printable(values[key]) for key in columns)

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = event.row_key.value if event.row_key is not None else None
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
        title.append(f" · {printable(str(config.get('model')))} on {printable(str(config.get('corpus')))}",
                     style="")
        words = " whole words" if config.get("whole_word_mask") else ""
        batch = (config.get("plan") or {}).get("batch_size")
        title.append(f"\nchunk {config.get('chunk_size')} · mask {config.get('mlm_probability')}{words} · "
                     f"lr {config.get('learning_rate')} · wd {config.get('weight_decay')} · batch {batch}",
                     style="dim")
        if state.get("message") and status != "running":
            title.append(f"\n{printable(str(state['message']))}", style="red" if status == "failed" else "")
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
        """Cancel the selected run, once the user confirmed it in a dialog that names the run."""
        from mlm_tui.app.confirm import ConfirmScreen

        run = self._selected_run()
        if run is None:
            return
        if run.status() != "running":
            self.app.notify(f"Run {run.run_id} is {run.status()}: nothing to cancel.")
            return
        config = run.config()
        detail = (f"{printable(str(config.get('model')))} on {printable(str(config.get('corpus')))}, step "
                  f"{run.state().get('step', 0)}. It stops after the current step and saves a checkpoint; "
                  f"it can be resumed later.")

        def confirmed(yes: bool | None) -> None:
            from mlm_tui import launcher

            if yes and run.status() == "running":
                launcher.cancel(run)
                self.app.notify(f"Cancelling {run.run_id}: it stops after this step and saves a checkpoint.")

        self.app.push_screen(ConfirmScreen(f"Cancel run {run.run_id}?", detail, f"Cancel {run.run_id}",
                                           keep="Keep it running"), confirmed)

    def action_load_run(self, role: str) -> None:
        run = self._selected_run()
        if run is not None:
            self.app.load_model(run.run_id, role)  # type: ignore[attr-defined]
