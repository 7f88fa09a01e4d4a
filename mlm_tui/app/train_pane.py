"""The Train pane: a form that starts `mlm-tui train` as its own process, the run store as a table with
the run actions, and the selected run's progress, chart and log.

Nothing here trains. Runs are launched detached (see `mlm_tui.launcher`) and every run, whoever started
it, is followed through the run store (`runstore.RunInfo`, read by worker threads), so quitting the app, a
dropped ssh connection or a run started from the CLI in another tmux pane all look the same.

The form is generated from the one declaration of the training settings (`run_settings`): the CLI's
flags and this form cannot offer different things, and a new setting appears here by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import (
    Button,
    Checkbox,
    Collapsible,
    DataTable,
    Input,
    Label,
    Log,
    ProgressBar,
    Select,
    Static,
)

from mlm_tui.app.render import ppl_change, short_ref
from mlm_tui.progress import format_bytes, format_duration
from mlm_tui.run_settings import FormField, TrainConfig, config_from_form, form_fields
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.app.chunks_pane import CorpusOpened
    from mlm_tui.app.run_chart import Series
    from mlm_tui.runstore import Run, RunInfo

POLL_S = 1.0
LOG_TAIL = 300
LIVE = ("preparing", "running")
RESUMABLE = ("cancelled", "interrupted", "failed")

# (key, title, priority): the table shows as many columns as its width holds, by priority (0 first), in
# this order. Below WIDE_COLUMNS terminal columns only the first four priorities stay, whatever fits.
RUN_COLUMNS = [("run", "run", 0), ("status", "status", 1), ("model", "model", 7), ("corpus", "corpus", 5),
               ("created", "created", 8), ("duration", "took", 6), ("steps", "steps", 4),
               ("ppl", "ppl before → after", 9), ("after", "after", 2), ("change", "change", 3),
               ("general", "general text", 10)]
ESSENTIAL = 4
WIDE_COLUMNS = 100
SORTS = ("created", "status", "after", "change")  # what `s` cycles through
# Status at a glance without colour.
STATUS_MARKS = {"completed": "✓ ", "failed": "✗ ", "cancelled": "■ ", "interrupted": "! "}


class MarkedCheckbox(Checkbox):
    """A checkbox whose mark is a ✓ or nothing, so on and off differ without colour (a monochrome
    terminal, or a colour-blind user, sees the same X either way with Textual's default)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "✓" if self.value else " "


@dataclass
class RunView:
    """What the pane shows of the selected run (and the run overlaid on the chart), read by a worker."""

    info: RunInfo
    series: Series
    other: Series | None = None
    log: list[str] = field(default_factory=list)
    lr_curve: list[dict[str, float]] = field(default_factory=list)  # a `--learning-rate auto` range test
    lr_chosen: float | None = None


class DetailRead(Message):
    def __init__(self, view: RunView | None, problem: str | None) -> None:
        super().__init__()
        self.view, self.problem = view, problem


class Launched(Message):
    def __init__(self, run_id: str | None, error: str | None) -> None:
        super().__init__()
        self.run_id, self.error = run_id, error


class Adjusted(Message):
    """Values the run would change (a test size beyond the split), by field, for the form's notes."""

    def __init__(self, notes: dict[str, str]) -> None:
        super().__init__()
        self.notes = notes


class DeviceFound(Message):
    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device


class RunsTable(DataTable[str]):
    """The run store as a table. Its single-letter keys act on the selected run, and only here: they
    can never fire from text typed into the form or Fill, and cancel and delete ask first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "run('load_run', 'main')", "Load", tooltip="load the run's model into Fill"),
        Binding("k", "run('load_run', 'compare')", "Compare", tooltip="compare the run's model in Fill"),
        Binding("x", "run('cancel_run')", "Cancel", tooltip="cancel the selected run (asks first)"),
        Binding("d", "run('delete_run')", "Delete", tooltip="delete the selected run (asks first)"),
        Binding("r", "run('resume_run')", "Resume", show=False,
                tooltip="resume a cancelled, interrupted or failed run"),
        Binding("c", "run('copy_settings')", "Copy", show=False,
                tooltip="copy the run's settings into the form"),
        Binding("v", "run('overlay')", "Overlay", show=False,
                tooltip="overlay the run on the chart of the one you select next"),
        Binding("s", "run('sort')", "Sort", show=False,
                tooltip="sort by created, status, perplexity, change"),
        Binding("w", "run('learned')", "Learned", show=False,
                tooltip="what the run learned: words whose loss fell or rose, probes"),
    ]

    def action_run(self, action: str, *args: str) -> None:
        getattr(self.query_ancestor(TrainPane), f"action_{action}")(*args)


class TrainPane(Horizontal):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start run", tooltip="start a run with this form"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selected: str | None = None
        self.overlay: str | None = None
        self.device: str | None = None
        self.fields = form_fields()
        self._shown_log: tuple[str | None, int] = (None, 0)
        self._rows: list[tuple[str, ...]] = []
        self._columns: list[str] = []
        self._infos: list[RunInfo] = []
        self._sort = (SORTS[0], True)  # newest first
        self._problems_seen: set[str] = set()
        self._default_corpus = ""
        self._corpus: CorpusOpened | None = None  # the corpus open in Chunks, to size the run by
        self._adjusted: set[str] = set()

    # -- layout -------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        from mlm_tui.app.run_chart import RunChart  # imports plotext: after the first paint

        with VerticalScroll(id="train-form"):
            for f in self.fields:
                if not f.advanced:
                    yield from self._field(f)
            with Collapsible(title="More settings", id="advanced"):
                for f in self.fields:
                    if f.advanced:
                        yield from self._field(f)
            yield Button("Start run (ctrl+s)", id="start", variant="primary")
        with Vertical(id="run-side"):
            yield RunsTable(id="runs", cursor_type="row")
            yield Static(Text("No run selected."), id="run-title")
            with Vertical(id="run-progress-row"):
                yield ProgressBar(id="run-progress", show_eta=False)
                yield Static(id="run-speed")
            yield RunChart(id="chart")
            yield Static(id="run-ppl")
            yield Log(id="run-log", max_lines=LOG_TAIL)

    def _field(self, f: FormField) -> ComposeResult:
        if f.kind == "flag":
            yield MarkedCheckbox(f.label, value=bool(f.default), id=f"t-{f.name}", tooltip=f.help)
            yield Static(id=f"n-{f.name}", classes="form-note")
            return
        with Horizontal(classes="form-row"):
            yield Label(f.label, classes="form-label")
            if f.kind == "choice":
                yield Select([(c, c) for c in f.choices], value=str(f.default), allow_blank=False,
                             id=f"t-{f.name}", compact=True, tooltip=f.help)
            else:
                # text boxes for numbers too: the declaration parses and checks them, as for the CLI
                yield Input(str(f.default), placeholder=f.placeholder(), id=f"t-{f.name}", tooltip=f.help)
        yield Static(id=f"n-{f.name}", classes="form-note")

    def on_mount(self) -> None:
        self.query_one("#run-progress-row").display = False  # until a run is shown
        self._set_value(self.query_one("#t-model", Input), self.app.model_ref)  # type: ignore[attr-defined]
        self.set_defaults(self.app.data, self.app.text_field)  # type: ignore[attr-defined]
        self._exclusive_steps()
        self._device_worker()  # imports torch: this pane mounts lazily, after the first paint
        self.set_interval(POLL_S, self.poll)

    # -- the form -----------------------------------------------------------------------------------
    @work(thread=True, group="device")
    def _device_worker(self) -> None:
        from mlm_tui.app.heavy import import_torch

        torch = import_torch()
        self.post_message(DeviceFound("cuda" if torch.cuda.is_available() else "cpu"))

    @on(DeviceFound)
    def _device(self, event: DeviceFound) -> None:
        """Say what a blank box means on this machine ("auto: 16 on cpu"), from the declaration."""
        self.device = event.device
        for f in self.fields:
            if f.kind not in ("flag", "choice"):
                self.query_one(f"#t-{f.name}", Input).placeholder = f.placeholder(event.device)
        self._check_sizes()

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
        self.call_after_refresh(self._show_path_ends)

    def _show_path_ends(self) -> None:
        """Scroll path boxes to their end: a long path's file name matters more than its first folders.
        Done each time the pane is shown, since a hidden box has no width to scroll in."""
        for name in ("corpus", "model"):
            box = self.query_one(f"#t-{name}", Input)
            if not box.has_focus:
                box.cursor_position = 0  # a move to where the cursor already is would not scroll
                box.action_end()

    def _set_value(self, box: Input, value: str) -> None:
        box.value = value
        self.call_after_refresh(self._show_path_ends)

    def use_corpus(self, opened: CorpusOpened) -> None:
        """The corpus Chunks just opened: the form's values it would change are shown at once."""
        self._corpus = opened
        self.set_defaults(opened.corpus, opened.text_field)
        self._check_sizes()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _check_sizes(self) -> None:
        """Show, beside its field, a value the run would adjust to this corpus (50 test chunks asked of a
        split that has 35); known only when Chunks has the same corpus open with the same tokenizer,
        else the run's own plan says it once it has read the corpus."""
        opened = self._corpus
        values = self._values()
        if opened is None or self.device is None or (values["corpus"], values["text_field"],
                                                     values["model"]) != (opened.corpus, opened.text_field,
                                                                          opened.tokenizer_ref):
            self.post_message(Adjusted({}))
            return
        config, _ = config_from_form(values)
        if config is not None:
            self._sizes_worker(config, opened, self.device)

    @work(thread=True, exclusive=True, group="sizes")
    def _sizes_worker(self, config: TrainConfig, opened: CorpusOpened, device: str) -> None:
        from mlm_tui.errors import MlmError
        from mlm_tui.rundata import select_chunks

        test_size = config.on_device("test_size", device)
        try:
            chunks = select_chunks(opened.splits, config, test_size)
        except MlmError as exc:
            self.post_message(Adjusted({"chunk_size": str(exc)}))
            return
        notes = {}
        if len(chunks.test_chunks) < test_size:
            where = "held-out documents" if chunks.held_out else "test split"
            notes["test_size"] = f"→ {len(chunks.test_chunks):,}: all the {where} holds"
        if config.train_size is not None and len(chunks.train_chunks) < config.train_size:
            notes["train_size"] = f"→ {len(chunks.train_chunks):,}: all the train split holds"
        self.post_message(Adjusted(notes))

    @on(Adjusted)
    def _show_adjusted(self, event: Adjusted) -> None:
        for name in self._adjusted - set(event.notes):
            self._note(name, "")
        for name, text in event.notes.items():
            self._note(name, text)
        self._adjusted = set(event.notes)

    @on(Input.Changed, "#t-max_steps")
    def _exclusive_steps(self) -> None:
        """Epochs and max steps are one or the other, as on the command line: a max steps disables epochs."""
        steps = bool(self.query_one("#t-max_steps", Input).value.strip())
        self.query_one("#t-epochs", Input).disabled = steps
        self._note("epochs", "not used: max steps given" if steps else "")

    def _note(self, name: str, text: str, error: bool = False) -> None:
        note = self.query_one(f"#n-{name}", Static)
        note.update(Text(text, style="bold red" if error else "italic"))
        note.display = bool(text)

    def _values(self) -> dict[str, str | bool]:
        values: dict[str, str | bool] = {}
        for f in self.fields:
            widget = self.query_one(f"#t-{f.name}")
            if isinstance(widget, Checkbox):
                values[f.name] = widget.value
            elif isinstance(widget, Select):
                values[f.name] = str(widget.value)
            elif isinstance(widget, Input):
                values[f.name] = "" if widget.disabled else widget.value
        return values

    def request(self) -> tuple[TrainConfig | None, dict[str, str]]:
        """The form as a run config, checked as the CLI checks it; else the problems by field."""
        config, errors = config_from_form(self._values())
        for f in self.fields:
            widget = self.query_one(f"#t-{f.name}")
            widget.set_class(f.name in errors, "-bad")
            if f.name != "epochs" or f.name in errors:
                self._note(f.name, errors.get(f.name, ""), error=True)
        if errors:
            advanced = {f.name for f in self.fields if f.advanced}
            if advanced & set(errors):
                self.query_one("#advanced", Collapsible).collapsed = False
        return config, errors

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        config, errors = self.request()
        if config is None:
            self.app.notify("; ".join(errors.values()), title="Cannot start", severity="error", markup=False)
            return
        self.query_one("#run-title", Static).update(Text(f"starting a run on {printable(config.corpus)}…"))
        self._launch_worker(config)

    @work(thread=True, group="launch")
    def _launch_worker(self, config: TrainConfig) -> None:
        from mlm_tui import launcher
        from mlm_tui.errors import MlmError

        try:
            self.post_message(Launched(launcher.launch(config), None))
        except MlmError as exc:
            self.post_message(Launched(None, str(exc)))

    @on(Launched)
    def _launched(self, event: Launched) -> None:
        if event.error is not None:
            self.app.notify(event.error, title="Run did not start", severity="error", timeout=10,
                            markup=False)
            self.query_one("#run-title", Static).update(Text(f"the run did not start: {event.error}"))
            return
        self.app.notify(f"Run {event.run_id} started in its own process; it keeps going if you quit.",
                        markup=False)
        self.selected = event.run_id
        self.app.refresh_runs()  # type: ignore[attr-defined]
        self.poll()

    # -- the runs table -----------------------------------------------------------------------------
    def show_runs(self, infos: list[RunInfo], problems: list[str]) -> None:
        """The app's latest look at the run store (newest first)."""
        for problem in problems:
            if problem not in self._problems_seen:
                self._problems_seen.add(problem)
                self.app.notify(problem, severity="warning", markup=False)
        self._infos = infos
        if self.selected is None and infos:
            self.selected = self._sorted()[0].run_id  # the table's first row
            self.poll()
        self._show_table()

    def on_resize(self) -> None:
        self._show_table()

    def _sorted(self) -> list[RunInfo]:
        key, descending = self._sort

        def value(info: RunInfo) -> Any:
            if key == "status":
                return info.status
            if key == "after":
                return info.perplexity_after if info.perplexity_after is not None else float("inf")
            if key == "change":
                change = _change(info)
                return change if change is not None else float("inf")
            return (info.started or 0.0, info.created or "")  # started: runs of the same second apart

        return sorted(self._infos, key=value, reverse=descending)

    def _show_table(self) -> None:
        """Rebuild the table when anything in it changed, so each column fits its longest value (a status
        that grows from `running` to `cancelled` is never cut), keeping the cursor on the selected run."""
        table = self.query_one("#runs", RunsTable)
        every = [key for key, _, _ in RUN_COLUMNS]
        infos = self._sorted()
        ids = [info.run_id for info in infos]
        full = [self._row(info, every) for info in infos]
        width = table.size.width or self.app.size.width
        columns = self._fitting(full, width)
        if self._width(full, columns) > width:  # still too wide: ids without their date (it is in `created`)
            full = [(row[0][9:], *row[1:]) for row in full]
            columns = self._fitting(full, width)
        if self._width(full, columns) > width:  # and the status without its mark
            full = [(row[0], row[1][2:], *row[2:]) for row in full]
        rows = [tuple(row[every.index(key)] for key in columns) for row in full]
        if columns == self._columns and rows == self._rows:
            return
        with self.prevent(DataTable.RowHighlighted):
            table.clear(columns=True)  # columns too: their widths only ever grow otherwise
            titles = {key: title for key, title, _ in RUN_COLUMNS}
            for key in columns:
                table.add_column(titles[key], key=key)
            for run_id, row in zip(ids, rows, strict=True):
                table.add_row(*row, key=run_id)
            if self.selected in ids:
                table.move_cursor(row=ids.index(self.selected), animate=False)
        self._columns, self._rows = columns, rows

    def _fitting(self, rows: list[tuple[str, ...]], width: int) -> list[str]:
        """The columns that fit `width` cells, taken by priority and shown in their usual order."""
        limit = len(RUN_COLUMNS) if self.app.size.width >= WIDE_COLUMNS else ESSENTIAL
        used, chosen = 0, set()
        for key, _title, priority in sorted(RUN_COLUMNS, key=lambda c: c[2]):
            need = self._width(rows, [key])
            if priority < ESSENTIAL or (priority < limit and used + need <= width):
                chosen.add(key)
                used += need
        return [key for key, _, _ in RUN_COLUMNS if key in chosen]

    @staticmethod
    def _width(rows: list[tuple[str, ...]], columns: list[str]) -> int:
        keys = [key for key, _, _ in RUN_COLUMNS]
        return sum(max([len(RUN_COLUMNS[keys.index(key)][1]), *(len(row[keys.index(key)]) for row in rows)])
                   + 2 for key in columns)  # + the cell padding

    @staticmethod
    def _row(info: RunInfo, columns: list[str]) -> tuple[str, ...]:
        change = _change(info)
        mark = STATUS_MARKS.get(info.status, "▶ ")
        values = {
            "run": info.run_id, "status": mark + info.status,
            "model": short_ref(info.model or "–"), "corpus": short_ref(info.corpus or "–"),
            "created": (info.created or "–").replace("T", " ")[5:16],
            "duration": format_duration(info.duration) if info.duration is not None else "–",
            "steps": f"{info.step}/{info.total_steps}" if info.total_steps else str(info.step),
            "ppl": ppl_change(info.perplexity_before, info.perplexity_after).split(" (")[0] or "–",
            "after": f"{info.perplexity_after:.2f}" if info.perplexity_after is not None else "–",
            "change": f"{change:+.1f}%" if change is not None else "–",
            "general": ppl_change(info.general_perplexity_before, info.general_perplexity_after) or "–",
        }
        return tuple(printable(values[key]) for key in columns)

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        run_id = event.row_key.value if event.row_key is not None else None
        if run_id and run_id != self.selected:
            self.selected = run_id
            self.poll()

    @on(DataTable.HeaderSelected, "#runs")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        key = {"run": "created", "ppl": "after"}.get(key, key)
        if key in SORTS:
            self._sort = (key, not self._sort[1]) if self._sort[0] == key else (key, key == "created")
            self._show_table()

    def action_sort(self) -> None:
        key = SORTS[(SORTS.index(self._sort[0]) + 1) % len(SORTS)]
        self._sort = (key, key == "created")
        self.app.notify(f"Runs sorted by {key}", timeout=2)
        self._show_table()

    # -- the selected run ---------------------------------------------------------------------------
    def poll(self) -> None:
        self._poll_worker(self.selected, self.overlay)

    @work(thread=True, exclusive=True, group="runs-poll")
    def _poll_worker(self, selected: str | None, overlay: str | None) -> None:
        from mlm_tui import runstore
        from mlm_tui.app.run_chart import Series
        from mlm_tui.lr_find import read_curve

        run = runstore.find_run(selected) if selected else None
        if run is None:
            self.post_message(DetailRead(None, None))
            return
        try:
            view = RunView(run.info(), Series.from_metrics(run.run_id, run.metrics()))
            view.lr_curve = read_curve(run.dir)
            if view.lr_curve:
                chosen = run.config().get("lr_find")
                view.lr_chosen = chosen.get("suggested") if isinstance(chosen, dict) else None
            other = runstore.find_run(overlay) if overlay and overlay != selected else None
            if other is not None:
                view.other = Series.from_metrics(other.run_id, other.metrics())
            try:
                view.log = run.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            except FileNotFoundError:
                view.log = []
        except runstore.CorruptRun as exc:
            self.post_message(DetailRead(None, str(exc)))
            return
        self.post_message(DetailRead(view, None))

    @on(DetailRead)
    def _detail_read(self, event: DetailRead) -> None:
        if event.problem and event.problem not in self._problems_seen:
            self._problems_seen.add(event.problem)
            self.app.notify(event.problem, severity="warning", markup=False)
        if event.view is None or event.view.info.run_id != self.selected:
            self.query_one("#chart").show(None)  # type: ignore[attr-defined]
            return
        self._show_detail(event.view)

    def _show_detail(self, view: RunView) -> None:
        info = view.info
        title = Text(f"{info.run_id} · {info.status}", style="bold")
        title.append(f" · {printable(info.model or '?')} on {printable(info.corpus or '?')}", style="")
        config, plan = info.config, info.plan
        if config is not None:
            words = " whole words" if config.whole_word_mask else ""
            batch = plan.batch_size if plan is not None else config.batch_size or "auto"
            title.append(f"\nchunk {config.chunk_size} · mask {config.mlm_probability}{words} · lr "
                         f"{config.learning_rate} · batch {batch}", style="dim")
        if plan is not None:
            asked = config.test_size if config is not None else None
            test = f"{plan.test_chunks} test chunks"
            if asked and asked != plan.test_chunks:
                test += f" (asked {asked})"
            title.append(f" · {plan.train_chunks} train / {test} · {plan.device} ({plan.precision})",
                         style="dim")
            for note in plan.notes:
                title.append(f"\nnote: {printable(note)}", style="italic")
        if view.lr_chosen is not None:
            title.append(f"\nlearning rate auto: {view.lr_chosen:.2g}, from the range test (chart, right)",
                         style="dim")
        if info.message and info.status not in LIVE:
            title.append(f"\n{printable(info.message)}", style="red" if info.status == "failed" else "")
        self.query_one("#run-title", Static).update(title)
        self.query_one("#run-progress-row").display = True
        bar = self.query_one("#run-progress", ProgressBar)
        if info.status == "preparing":
            total = info.tokenize_total or None
            bar.update(total=total, progress=info.tokenize_done or 0)
            read = format_bytes(info.tokenize_done or 0)
            where = f"preparing: {read} of {format_bytes(total)} read" if total else f"preparing: {read} read"
        else:
            bar.update(total=info.total_steps or None, progress=info.step)
            where = f"step {info.step}/{info.total_steps or '?'}"
        if info.status == "running" and info.tokens_per_s:
            where += f" · {info.tokens_per_s:,.0f} tok/s · ETA {format_duration(info.eta or 0)}"
        elif info.status == "completed" and info.train_runtime:
            where += f" · trained in {format_duration(info.train_runtime)}"
        self.query_one("#run-speed", Static).update(Text(where))
        self.query_one("#chart").show(view.series, view.other, view.lr_curve,  # type: ignore[attr-defined]
                                      view.lr_chosen)
        loss = f" · loss {view.series.losses[-1]:.3f}" if view.series.losses else ""
        overlay = f" · overlaid: {view.other.label}" if view.other is not None else ""
        perplexity = ppl_change(info.perplexity_before, info.perplexity_after) or "–"
        general = ppl_change(info.general_perplexity_before, info.general_perplexity_after)
        cost = f" · general text {general}" if general else ""
        self.query_one("#run-ppl", Static).update(Text(f"perplexity {perplexity}{cost}{loss}{overlay}"))
        log = self.query_one("#run-log", Log)
        shown_id, shown_n = self._shown_log
        if shown_id != info.run_id or len(view.log) < shown_n:
            log.clear()
            shown_n = 0
        log.write_lines([printable(line) for line in view.log[shown_n:]])
        self._shown_log = (info.run_id, len(view.log))

    # -- run actions --------------------------------------------------------------------------------
    def _selected_run(self) -> Run | None:
        from mlm_tui import runstore

        run = runstore.find_run(self.selected) if self.selected else None
        if run is None:
            self.app.notify("Select a run in the list first.", severity="warning")
        return run

    def _describe(self, info: RunInfo) -> str:
        return (f"{printable(info.model or '?')} on {printable(info.corpus or '?')}, step {info.step}"
                f"{'/' + str(info.total_steps) if info.total_steps else ''}, {format_bytes(info.bytes)}")

    def action_cancel_run(self) -> None:
        """Cancel the selected run, once the user confirmed it in a dialog that names the run."""
        from mlm_tui.app.confirm import ConfirmScreen

        run = self._selected_run()
        if run is None:
            return
        info = run.info()
        if info.status not in LIVE:
            self.app.notify(f"Run {run.run_id} is {info.status}: nothing to cancel.")
            return

        def confirmed(yes: bool | None) -> None:
            from mlm_tui import launcher

            if yes and run.status() in LIVE:
                launcher.cancel(run)
                self.app.notify(f"Cancelling {run.run_id}: it stops after this step and saves a checkpoint.")

        detail = (f"{self._describe(info)}. It stops after the current step, saves a checkpoint and can be "
                  "resumed.")
        self.app.push_screen(ConfirmScreen(f"Cancel run {run.run_id}?", detail, f"Cancel {run.run_id}",
                                           keep="Keep it running"), confirmed)

    def action_delete_run(self) -> None:
        """Delete the selected run (not a live one), once confirmed; say which runs started from it."""
        from mlm_tui import runstore
        from mlm_tui.app.confirm import ConfirmScreen

        run = self._selected_run()
        if run is None:
            return
        info = run.info()
        if info.status in LIVE:
            self.app.notify(f"Run {run.run_id} is {info.status}: cancel it first (x).", severity="warning")
            return
        based = runstore.runs_based_on(run.run_id)
        detail = f"{self._describe(info)}: its checkpoints, final model and logs are deleted."
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
            if self.selected == run.run_id:
                self.selected = None
            if self.overlay == run.run_id:
                self.overlay = None
            self.app.refresh_runs()  # type: ignore[attr-defined]

        self.app.push_screen(ConfirmScreen(f"Delete run {run.run_id}?", detail, f"Delete {run.run_id}",
                                           keep="Keep it"), confirmed)

    def action_resume_run(self) -> None:
        from mlm_tui import launcher
        from mlm_tui.errors import MlmError

        run = self._selected_run()
        if run is None:
            return
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

    def action_copy_settings(self) -> None:
        """Put the selected run's settings into the form, to start a variation of it."""
        from mlm_tui.runstore import CorruptRun

        run = self._selected_run()
        if run is None:
            return
        try:
            config = run.train_config()
        except CorruptRun as exc:
            self.app.notify(str(exc), severity="error", markup=False)
            return
        for f in self.fields:
            value = getattr(config, f.name)
            widget = self.query_one(f"#t-{f.name}")
            if isinstance(widget, Checkbox):
                widget.value = bool(value)
            elif isinstance(widget, Select):
                widget.value = str(value)
            elif isinstance(widget, Input):
                self._set_value(widget, "" if value is None else str(value))
        if config.max_steps is not None:
            self.query_one("#t-epochs", Input).value = ""
        self._exclusive_steps()
        self.app.notify(f"The form has the settings of {run.run_id}; change what you like and press ctrl+s.")
        self.query_one("#t-corpus", Input).focus()

    def action_overlay(self) -> None:
        """Mark the selected run for the chart: the next run selected is drawn with it."""
        if self.selected is None:
            return
        self.overlay = None if self.overlay == self.selected else self.selected
        self.app.notify(f"{self.selected} is overlaid on the chart of the run you select next."
                        if self.overlay else "No run overlaid on the chart.", timeout=4)
        self.poll()

    def action_learned(self) -> None:
        from mlm_tui.app.learned_screen import LearnedScreen

        run = self._selected_run()
        if run is None:
            return
        if run.info().model_path is None:
            self.app.notify(f"Run {run.run_id} has no final model yet.", severity="warning")
            return
        self.app.push_screen(LearnedScreen(run.run_id))

    def action_load_run(self, role: str) -> None:
        run = self._selected_run()
        if run is not None:
            self.app.load_model(run.run_id, role)  # type: ignore[attr-defined]


def _change(info: RunInfo) -> float | None:
    before, after = info.perplexity_before, info.perplexity_after
    return (after - before) / before * 100 if before and after is not None else None
