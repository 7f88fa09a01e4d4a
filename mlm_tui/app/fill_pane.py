"""The Fill pane: type a sentence with [MASK], see each mask's top fills live, a second model's beside them.

Fills run in an exclusive thread worker after a short debounce; every request carries a number and only
the newest number's answer is shown, so a slow forward pass can never overwrite a newer sentence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Static

from mlm_tui.app.render import fills_text, short_ref
from mlm_tui.app.widgets import TextBox
from mlm_tui.errors import MlmError, first_line
from mlm_tui.fill import MASK_ALIAS, TOP_K

if TYPE_CHECKING:
    from mlm_tui.fill import FillResult
    from mlm_tui.history import History
    from mlm_tui.models import ModelHandle

DEBOUNCE_S = 0.12
# Fills fetched per mask when comparing (at least), so a shown fill's score in the other model is known.
COMPARE_DEPTH = 50


class ModelLoaded(Message):
    def __init__(self, role: str, token: int, handle: ModelHandle | None, error: str | None) -> None:
        super().__init__()
        self.role, self.token, self.handle, self.error = role, token, handle, error


class MainModelReady(Message):
    """Fill's main model is loaded (and is what fills now come from): Chunks tokenizes with it."""

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref


class FillAnswer(Message):
    def __init__(self, request: int, main: FillResult | None, compare: FillResult | None,
                 error: str | None) -> None:
        super().__init__()
        self.request, self.main, self.compare, self.error = request, main, compare, error


class FillPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Older", tooltip="previous sentence from history"),
        Binding("down", "history(1)", "Newer", show=False),
        Binding("ctrl+r", "pick_history", "History", tooltip="pick a sentence typed in this session"),
        Binding("ctrl+l", "app.switch_model", "Model", tooltip="load another model"),
        Binding("f4", "app.compare_model", "Compare", tooltip="a second model's fills beside the first"),
        Binding("ctrl+n", "app.cycle_top_k", "Top-k", tooltip="fills per mask: 5, 10 or 20 (remembered)"),
        Binding("ctrl+y", "copy_fills", "Copy",
                tooltip="copy the fills as text (as mlm-tui fill prints them)"),
        Binding("enter", "keep", "Keep", show=False, tooltip="add the sentence to the history"),
        Binding("escape", "cancel_load", "Stop", tooltip="stop loading the model (its line says so too)"),
        Binding("pagedown", "scroll_fills(1)", "Page down", show=False,
                tooltip="scroll the fills down (a third mask's, below a short screen)"),
        Binding("pageup", "scroll_fills(-1)", "Page up", show=False, tooltip="scroll the fills up"),
    ]

    def __init__(self, history: History, top_k: int = TOP_K, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history = history
        self.top_k = top_k  # fills shown per mask: the app's setting
        self.shown: tuple[FillResult, FillResult | None] | None = None  # the fills on show, for copying
        self.handles: dict[str, ModelHandle | None] = {"main": None, "compare": None}
        self.refs: dict[str, str | None] = {"main": None, "compare": None}
        self.loading: dict[str, int] = {}  # role -> the load's token; a result with another token is dropped
        self._load_token = 0
        self.request = 0
        self._timer: Timer | None = None
        self._history_pos: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="model-line")
        yield TextBox(placeholder=f"Type a sentence with {MASK_ALIAS}, e.g. This is a great {MASK_ALIAS}.",
                    id="sentence", select_on_focus=False)  # back on Fill, a key must not wipe the sentence
        yield Static(id="fill-hint", classes="hint")
        with Horizontal(id="fill-results"):
            with VerticalScroll(id="fills-main-box"):
                yield Static(id="fills-main")
            with VerticalScroll(id="fills-compare-box"):
                yield Static(id="fills-compare")

    def on_mount(self) -> None:
        self.query_one("#fills-compare-box").display = False
        self._show_model_line()
        self._hint(f"Put {MASK_ALIAS} where a word should be predicted.")

    # -- models ---------------------------------------------------------------------------------------
    def load(self, ref: str | None, role: str = "main") -> None:
        """Load a model in a worker; the pane says it is loading and fills resume when it is ready."""
        if ref is None:  # dropping the compare model
            self.refs[role], self.handles[role] = None, None
            self.query_one("#fills-compare-box").display = False
            self._show_model_line()
            self.refresh_fills()
            return
        self.refs[role] = ref
        self._load_token += 1
        self.loading[role] = self._load_token
        self._show_model_line()
        self.refresh_bindings()
        self._load_worker(ref, role, self._load_token)

    @work(thread=True, group="load-model")
    def _load_worker(self, ref: str, role: str, token: int) -> None:
        from mlm_tui.app.heavy import import_torch, load_model

        try:
            handle = load_model(ref)
        except Exception as exc:  # any failure to load is a message in the app, never a crash
            self.post_message(ModelLoaded(role, token, None, first_line(exc)))
            return
        from mlm_tui.launcher import thread_split

        import_torch().set_num_threads(thread_split()[0])  # leave the other cores to a training process
        self.post_message(ModelLoaded(role, token, handle, None))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_load":
            return bool(self.loading)  # escape does nothing else here, and the footer shows it only then
        return True

    def action_cancel_load(self) -> None:
        """Stop waiting: the loading thread may finish unseen, its result is dropped."""
        for role in list(self.loading):
            del self.loading[role]
            handle = self.handles[role]
            self.app.notify(f"Stopped loading {self.refs[role]}; "
                            + (f"still using {handle.name}." if handle else "no model loaded."), markup=False)
            self.refs[role] = handle.name if handle else None
        self.refresh_bindings()
        self._show_model_line()
        self.refresh_fills()

    @on(ModelLoaded)
    def _model_loaded(self, event: ModelLoaded) -> None:
        if self.loading.get(event.role) != event.token:
            return  # another model was asked for meanwhile, or the user stopped waiting
        del self.loading[event.role]
        self.refresh_bindings()
        if event.error is not None:
            self.app.notify(event.error, title="Model not loaded", severity="error", timeout=8, markup=False)
            self.refs[event.role] = self.handles[event.role].name if self.handles[event.role] else None
        else:
            self.handles[event.role] = event.handle
            if event.role == "main" and self.refs["main"] is not None:
                self.post_message(MainModelReady(self.refs["main"]))
            self._say_if_compared_with_itself()
        self.query_one("#fills-compare-box").display = self.handles["compare"] is not None
        self._show_model_line()
        self.refresh_fills()

    def _say_if_compared_with_itself(self) -> None:
        """Two loads of one folder (a run id and its model's path, say) give two columns that cannot
        differ: say so, or the user reads the run as having changed nothing."""
        main, compare = self.handles["main"], self.handles["compare"]
        if main is not None and compare is not None and main.path.resolve() == compare.path.resolve():
            self.app.notify(f"{main.name} is both the model and the compare model: the two columns are the "
                            "same.", title="Compared with itself", severity="warning", markup=False)

    def _show_model_line(self) -> None:
        parts = []
        for role, label in (("main", "model"), ("compare", "compare")):
            ref = self.refs[role]
            if ref is None:
                continue
            state = " (loading… esc: stop)" if role in self.loading else ""
            parts.append(f"{label}: {short_ref(ref)}{state}")
        self.query_one("#model-line", Static).update(Text(" · ".join(parts) or "no model"))

    # -- fills ----------------------------------------------------------------------------------------
    @on(Input.Changed, "#sentence")
    def _changed(self, event: Input.Changed) -> None:
        self._history_pos = None
        self.refresh_fills()

    def refresh_fills(self) -> None:
        """Schedule a fill of the current sentence; anything in flight becomes stale."""
        self.request += 1
        if self._timer is not None:
            self._timer.stop()
        text = self.query_one("#sentence", Input).value
        if MASK_ALIAS not in text and not self._has_model_mask(text):
            self._hint(f"Put {MASK_ALIAS} where a word should be predicted." if text.strip() else
                       f"Type a sentence with {MASK_ALIAS}.")
            self._clear_results()
            return
        if self.handles["main"] is None:
            self._hint("The model is loading; fills appear when it is ready." if "main" in self.loading else
                       "No model: switch model with ctrl+l.")
            return
        request = self.request
        self._timer = self.set_timer(DEBOUNCE_S, lambda: self._fill_worker(request, text))

    def _has_model_mask(self, text: str) -> bool:
        handle = self.handles["main"]
        return handle is not None and handle.tokenizer.mask_token in text

    @work(thread=True, exclusive=True, group="fill")
    def _fill_worker(self, request: int, text: str) -> None:
        main, compare = self.handles["main"], self.handles["compare"]
        if main is None or request != self.request:
            return
        depth = max(COMPARE_DEPTH, self.top_k) if compare is not None else self.top_k
        try:
            main_result = main.fill(text, top_k=depth)
            compare_result = compare.fill(text, top_k=depth) if compare is not None else None
        except MlmError as exc:
            self.post_message(FillAnswer(request, None, None, str(exc)))
            return
        self.post_message(FillAnswer(request, main_result, compare_result, None))

    @on(FillAnswer)
    def _answer(self, event: FillAnswer) -> None:
        if event.request != self.request:
            return  # a newer sentence is on its way
        if event.error is not None or event.main is None:
            self._hint(event.error or "")
            self._clear_results()
            return
        self._hint("")
        self.shown = (event.main, event.compare)
        main_title = short_ref(self.refs["main"] or "")
        compact = event.compare is not None  # two columns side by side still fit 80 columns
        self.query_one("#fills-main", Static).update(fills_text(event.main, main_title, top_k=self.top_k,
                                                                compact=compact))
        if event.compare is not None:
            title = f"{short_ref(self.refs['compare'] or '')} (pp vs {main_title})"
            self.query_one("#fills-compare", Static).update(
                fills_text(event.compare, title, event.main, top_k=self.top_k, compact=True))

    def set_top_k(self, top_k: int) -> None:
        """Show this many fills per mask (the app's setting changed), for the sentence on show too."""
        self.top_k = top_k
        self.refresh_fills()

    def action_copy_fills(self) -> None:
        """The fills on show to the clipboard as plain text, each model's as `mlm-tui fill` prints them."""
        if self.shown is None:
            self.app.notify(f"No fills to copy yet: type a sentence with {MASK_ALIAS}.", severity="warning")
            return
        main, compare = self.shown
        if compare is None:
            text = main.as_text(self.top_k)
        else:
            text = "\n\n".join(f"{short_ref(result.model)}:\n{result.as_text(self.top_k)}"
                                for result in (main, compare))
        self.app.copy_to_clipboard(text)
        masks = f"{len(main.masks)} mask{'s' if len(main.masks) != 1 else ''}"
        models = " and ".join(short_ref(r.model) for r in self.shown if r is not None)
        self.app.notify(f"Copied the top {self.top_k} fills of {masks} ({models}) as text, "
                        f"{len(text.splitlines())} lines.", markup=False)

    def action_scroll_fills(self, pages: int) -> None:
        """Page the fills from the sentence box, which keeps the focus (and the typing)."""
        for box in self.query("#fills-main-box, #fills-compare-box").results(VerticalScroll):
            if box.display and pages > 0:
                box.scroll_page_down()
            elif box.display:
                box.scroll_page_up()

    def _hint(self, text: str) -> None:
        self.query_one("#fill-hint", Static).update(Text(text))

    def _clear_results(self) -> None:
        self.shown = None
        self.query_one("#fills-main", Static).update("")
        self.query_one("#fills-compare", Static).update("")

    # -- history --------------------------------------------------------------------------------------
    @on(Input.Submitted, "#sentence")
    def _submitted(self, event: Input.Submitted) -> None:
        self.action_keep()

    def action_keep(self) -> None:
        self.history.add(self.query_one("#sentence", Input).value)

    def action_history(self, step: int) -> None:
        items = self.history.items
        if not items:
            return
        pos = len(items) if self._history_pos is None else self._history_pos
        pos = max(0, min(len(items) - 1, pos + step))
        self.set_sentence(items[pos])
        self._history_pos = pos

    def action_pick_history(self) -> None:
        from mlm_tui.app.prompt import PickScreen

        if not self.history.items:
            self.app.notify("No sentences in the history yet (enter in the sentence keeps one).")
            return

        def chosen(sentence: str | None) -> None:
            if sentence is not None:
                self.set_sentence(sentence)

        self.app.push_screen(PickScreen("Sentences tried", list(reversed(self.history.items))), chosen)

    def set_sentence(self, text: str) -> None:
        sentence = self.query_one("#sentence", Input)
        with sentence.prevent(Input.Changed):
            sentence.value = text
        sentence.cursor_position = len(text)
        sentence.focus()
        self.refresh_fills()
