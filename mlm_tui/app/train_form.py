"""The Train form, generated from the one declaration of the training settings (`run_settings`).

The CLI's flags and this form cannot offer different things, and a new setting appears here by itself.
The form checks its values as the CLI does, notes beside a field what the run would adjust (a test size
beyond the split), and posts `TrainForm.Start` with a checked config: it launches nothing itself. Its
masking fields are the app's masking settings: a change is posted (`MaskingChanged`), and a change made
elsewhere (Chunks' chunk size) is shown here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Button, Checkbox, Collapsible, Input, Label, Select, Static

from mlm_tui.app.shared import MASKING, Masking, MaskingChanged
from mlm_tui.app.widgets import TextBox
from mlm_tui.run_settings import FormField, TrainConfig, config_from_form, form_fields, label

if TYPE_CHECKING:
    from mlm_tui.app.shared import OpenCorpus


class MarkedCheckbox(Checkbox):
    """A checkbox whose mark is a ✓ or nothing, so on and off differ without colour (a monochrome
    terminal, or a colour-blind user, sees the same X either way with Textual's default)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "✓" if self.value else " "


class Adjusted(Message):
    """Values the run would change (a test size beyond the split), by field, for the form's notes."""

    def __init__(self, notes: dict[str, str]) -> None:
        super().__init__()
        self.notes = notes


class DeviceFound(Message):
    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device


class TrainForm(VerticalScroll):
    """Every training setting as a box, the less used ones folded away, and the start button."""

    class Start(Message):
        """The user asked to start a run with this checked config."""

        def __init__(self, config: TrainConfig) -> None:
            super().__init__()
            self.config = config

    def __init__(self, model: str, corpus: str | None, text_field: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fields = form_fields()
        self._start_values = (model, corpus, text_field)
        self.device: str | None = None
        self._default_corpus = ""
        self._corpus: OpenCorpus | None = None  # the corpus open in Chunks, to size the run by
        self._adjusted: set[str] = set()
        self._masking = Masking()

    def compose(self) -> ComposeResult:
        for f in self.fields:
            if not f.advanced:
                yield from self._field(f)
        with Collapsible(title="More settings", id="advanced"):
            for f in self.fields:
                if f.advanced:
                    yield from self._field(f)
        yield Button("Start run (ctrl+s)", id="start", variant="primary")

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
                # no select on focus: one stray key would replace a whole corpus path
                yield TextBox(str(f.default), placeholder=f.placeholder(), id=f"t-{f.name}", tooltip=f.help,
                            select_on_focus=False)
        yield Static(id=f"n-{f.name}", classes="form-note")

    def on_mount(self) -> None:
        model, corpus, text_field = self._start_values
        if self._corpus is not None:
            corpus, text_field = self._corpus.corpus, self._corpus.text_field
        self._set_value(self.query_one("#t-model", Input), model)
        self.use_masking(self._masking)
        self.set_defaults(corpus, text_field)
        self._exclusive_steps()
        self._device_worker()  # imports torch: this pane mounts lazily, after the first paint

    # -- what the app gives the form ------------------------------------------------------------------
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

    def use_corpus(self, opened: OpenCorpus) -> None:
        """The corpus Chunks just opened: the form's values it would change are shown at once."""
        self._corpus = opened
        if not self.is_mounted:
            return  # taken as the default on mount
        self.set_defaults(opened.corpus, opened.text_field)
        self._check_sizes()

    def use_masking(self, masking: Masking) -> None:
        """Show the app's masking settings; a box already saying the same (`0.150`) is left as typed."""
        self._masking = masking
        if not self.is_mounted:
            return
        current = self._form_masking()
        for name, value in asdict(masking).items():
            if current is not None and getattr(current, name) == value:
                continue
            widget = self.query_one(f"#t-{name}")
            if isinstance(widget, Checkbox):
                widget.value = bool(value)
            elif isinstance(widget, Input):
                widget.value = str(value)

    def fill(self, config: TrainConfig) -> None:
        """Put a run's settings into the form, to start a variation of it."""
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
        self.query_one("#t-corpus", Input).focus()

    # -- the boxes ------------------------------------------------------------------------------------
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

    def _form_masking(self) -> Masking | None:
        """The masking the boxes say, or None while one of them does not parse."""
        values = self._values()
        config, _ = config_from_form({"corpus": "-", **{name: values[name] for name in MASKING}})
        return None if config is None else Masking(**{name: getattr(config, name) for name in MASKING})

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _changed(self, event: Input.Changed | Checkbox.Changed) -> None:
        name = (event.control.id or "").removeprefix("t-")
        try:
            if event.control.has_class("-bad"):  # its error was about the value it had (checked at start)
                event.control.remove_class("-bad")
                self._note(name, "")
            if name in MASKING:
                masking = self._form_masking()
                if masking is not None and masking != self._masking:
                    self._masking = masking
                    self.post_message(MaskingChanged(masking))
            if name == "max_steps":
                self._exclusive_steps()
            self._check_sizes()
        except NoMatches:
            return  # a box set while the form still mounts (folded settings mount later): on_mount reads it

    def _exclusive_steps(self) -> None:
        """Epochs and max steps are one or the other, as on the command line: a max steps disables epochs."""
        steps = bool(self.query_one("#t-max_steps", Input).value.strip())
        self.query_one("#t-epochs", Input).disabled = steps
        self._note("epochs", "not used: max steps given" if steps else "")

    def _note(self, name: str, text: str, error: bool = False) -> None:
        note = self.query_one(f"#n-{name}", Static)
        note.update(Text(text, style="bold red" if error else "italic"))
        note.display = bool(text)

    # -- checking -------------------------------------------------------------------------------------
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
    def start(self) -> None:
        config, errors = self.request()
        if config is None:
            self.app.notify("; ".join(errors.values()), title="Cannot start", severity="error", markup=False)
            return
        self.post_message(self.Start(config))

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
    def _sizes_worker(self, config: TrainConfig, opened: OpenCorpus, device: str) -> None:
        from mlm_tui.errors import MlmError, told
        from mlm_tui.lr_find import too_short
        from mlm_tui.rundata import select_chunks

        test_size = config.on_device("test_size", device)
        try:
            chunks = select_chunks(opened.splits, config, test_size)
        except MlmError as exc:
            self.post_message(Adjusted({"chunk_size": told(exc, label)}))
            return
        notes = {}
        if len(chunks.test_chunks) < test_size:
            where = "held-out documents hold" if chunks.held_out else "test split holds"
            notes["test_size"] = f"→ {len(chunks.test_chunks):,}: all the {where}"
        if config.train_size is not None and len(chunks.train_chunks) < config.train_size:
            notes["train_size"] = f"→ {len(chunks.train_chunks):,}: all the train split holds"
        if config.learning_rate == "auto":
            batch = config.on_device("batch_size", device)
            steps, _ = config.steps(len(chunks.train_chunks), batch, config.processes * config.nodes)
            if too_short(steps) is not None:
                notes["learning_rate"] = (f"→ the rate for the model's size: {steps} steps are too short "
                                          "for a range test")
        self.post_message(Adjusted(notes))

    @on(Adjusted)
    def _show_adjusted(self, event: Adjusted) -> None:
        for name in self._adjusted - set(event.notes):
            self._note(name, "")
        for name, text in event.notes.items():
            self._note(name, text)
        self._adjusted = set(event.notes)

