"""The workbench app: three panes (Fill, Chunks, Train) in tabs, a footer of keys and a command palette.

The app object owns what the panes share (settings, the history, which model and corpus are open) and
the actions reachable from everywhere; each pane owns its widgets and workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.lazy import Lazy
from textual.widgets import Footer, Input, TabbedContent, TabPane

from mlm_tui.app.chunks_pane import ChunksPane
from mlm_tui.app.commands import WorkbenchCommands
from mlm_tui.app.fill_pane import FillPane
from mlm_tui.app.prompt import PromptScreen
from mlm_tui.app.train_pane import TrainPane
from mlm_tui.history import History
from mlm_tui.settings import load_settings, save_settings

PANES = ("fill", "chunks", "train")
FOCUS = {"fill": "#sentence", "chunks": "#chunk-box", "train": "#runs"}


class WorkbenchApp(App[None]):
    CSS_PATH = "workbench.tcss"
    TITLE = "mlm-tui"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "show_pane('fill')", "Fill"),
        Binding("f2", "show_pane('chunks')", "Chunks"),
        Binding("f3", "show_pane('train')", "Train"),
        Binding("ctrl+o", "open_corpus", "Corpus"),
        Binding("ctrl+l", "switch_model", "Model"),
        Binding("f4", "compare_model", "Compare"),  # not ctrl+b: that is the tmux prefix
        Binding("ctrl+t", "change_theme", "Theme"),
    ]

    def __init__(self, model: str = "starter", data: str | None = None) -> None:
        super().__init__()
        self.model_ref = model
        self.data = data
        self.settings, self.settings_problem = load_settings()
        self.history = History(persist=self.settings.keep_history, limit=self.settings.history_size)

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="fill"):
            with TabPane("Fill", id="fill"):
                yield FillPane(self.history, id="fill-pane")
            with TabPane("Chunks", id="chunks"):
                yield Lazy(ChunksPane(id="chunks-pane"))
            with TabPane("Train", id="train"):
                yield Lazy(TrainPane(id="train-pane"))
        yield Footer()

    def on_mount(self) -> None:
        from mlm_tui.themes import load_themes

        for theme in load_themes():
            self.register_theme(theme)
        self.theme = self.settings.theme if self.settings.theme in self.available_themes else "mlm-dark"
        if self.settings_problem:
            self.notify(self.settings_problem, title="Settings", severity="warning", markup=False)
        self.query_one("#sentence", Input).focus()
        # Importing torch in a worker still holds the GIL for long stretches: start it after the first
        # paint, so the screen is up at once and says that the model is loading. The hidden Chunks and
        # Train panes are `Lazy` for the same reason and start their own work when they mount.
        self.call_after_refresh(lambda: self.query_one(FillPane).load(self.model_ref))

    def watch_theme(self, theme: str) -> None:
        """Remember the theme, whether chosen with ctrl+t, the palette or Textual's own picker."""
        if theme != self.settings.theme:
            self.settings.theme = theme
            self._save_settings()

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.notify(f"could not save the settings: {exc}", severity="error", markup=False)

    # -- panes ------------------------------------------------------------------------------------------
    def action_show_pane(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane
        self._focus_pane(pane)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_pane(event.pane.id or "fill")

    def _focus_pane(self, pane: str) -> None:
        if pane == "train":
            chunks = self.query_one(ChunksPane)
            self.query_one(TrainPane).set_defaults(chunks.corpus, self.query_one(FillPane).refs["main"])
        self.call_after_refresh(lambda: self.query_one(FOCUS[pane]).focus())

    # -- corpus and models --------------------------------------------------------------------------
    def action_open_corpus(self) -> None:
        chunks = self.query_one(ChunksPane)

        def opened(path: str | None) -> None:
            if path:
                self.action_show_pane("chunks")
                chunks.open(path)

        self.push_screen(PromptScreen("Open corpus: file, folder or hub dataset", chunks.corpus_path_hint(),
                                      paths=True), opened)

    def action_switch_model(self) -> None:
        self._ask_model("Model (directory, run id, starter or hub id)", "main")

    def action_compare_model(self) -> None:
        self._ask_model("Compare with model (directory, run id or hub id)", "compare")

    def _ask_model(self, title: str, role: str) -> None:
        current = self.query_one(FillPane).refs[role] or ""

        def chosen(ref: str | None) -> None:
            if ref:
                self.load_model(ref, role)

        self.push_screen(PromptScreen(title, current, paths=True), chosen)

    def load_model(self, ref: str, role: str = "main") -> None:
        """Load a model into the Fill pane as the main or the compare model, and show the pane."""
        if role == "main":
            self.model_ref = ref
        self.query_one(FillPane).load(ref, role)
        self.action_show_pane("fill")

    def action_stop_compare(self) -> None:
        self.query_one(FillPane).load(None, "compare")

    # -- history and settings -----------------------------------------------------------------------
    def action_clear_history(self) -> None:
        self.history.clear()
        self.notify("Sentence history cleared.")

    def action_toggle_keep_history(self) -> None:
        self.settings.keep_history = not self.settings.keep_history
        self.history.set_persist(self.settings.keep_history)
        self._save_settings()
        self.notify("Sentences are kept across restarts." if self.settings.keep_history else
                    "No sentence history is kept on disk (and the stored one was deleted).")

    def palette_commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        keep = self.settings.keep_history
        return [
            ("Fill", "Show the Fill pane (F1)", lambda: self.action_show_pane("fill")),
            ("Chunks", "Show the Chunks pane (F2)", lambda: self.action_show_pane("chunks")),
            ("Train", "Show the Train pane (F3)", lambda: self.action_show_pane("train")),
            ("Open corpus", "Tokenize a corpus and browse its chunks (ctrl+o)", self.action_open_corpus),
            ("Switch model", "Load another model for fills (ctrl+l)", self.action_switch_model),
            ("Compare with model", "Show a second model's fills side by side (F4)",
             self.action_compare_model),
            ("Stop comparing", "Drop the compare model", self.action_stop_compare),
            ("Change theme", "Pick a theme; the choice is remembered (ctrl+t)", self.action_change_theme),
            ("Sentence history", "Pick a sentence tried before (ctrl+r)",
             self.query_one(FillPane).action_pick_history),
            ("Clear sentence history", "Forget every sentence typed in Fill", self.action_clear_history),
            ("Keep no sentence history" if keep else "Keep sentence history",
             "Confidential text: store no sentences on disk" if keep else
             "Remember sentences across restarts",
             self.action_toggle_keep_history),
            ("Chunk size", "Change the chunk size in Chunks", self.query_one(ChunksPane).action_chunk_size),
            ("Tokenizer", "Change the tokenizer in Chunks", self.query_one(ChunksPane).action_tokenizer),
            ("Masking preview", "Toggle the collator's masks in Chunks",
             self.query_one(ChunksPane).action_toggle_masking),
            ("Start run", "Start a fine-tuning run with the Train form (ctrl+s)",
             self.query_one(TrainPane).action_start),
            ("Cancel run", "Ask the selected run to stop (x in Train)",
             self.query_one(TrainPane).action_cancel_run),
        ]

    # -- leaving ------------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        """Quit; a run still training is its own process and keeps going, and the user is told so."""
        from mlm_tui import runstore

        runs, _ = runstore.list_runs()
        live = [r.run_id for r in runs if r.is_live()]
        if live:
            self.exit(message=f"run {', '.join(live)} keeps training in the background; reopen mlm-tui "
                      "(or: mlm-tui runs) to follow it.")
        else:
            self.exit()
