"""The workbench app: three panes (Fill, Chunks, Train) in tabs, a footer of keys and a command palette.

The app object owns what the panes share (settings, the history, which model and corpus are open, the
masking settings: see `shared`), the keys that work from everywhere, and the watch over the run store that
tells the user when a run ends. It gives the panes what they show; they ask it for changes by message.

Focus rules, because the keyboard is the whole interface: a pane key (F1-F3, ctrl+o, the palette's pane
commands, a tab click) always shows that pane and focuses its first widget (Fill the sentence, Chunks the
chunk view, Train the runs table). Only those change the pane: Textual's TabbedContent would also follow
focus into a hidden pane (a focus scheduled earlier, or one Textual moves off a widget being hidden), and
that is what once stranded users in Train with their typing going to the runs table.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from functools import cached_property, partial
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, TabbedContent, TabPane

from mlm_tui.app.commands import WorkbenchCommands
from mlm_tui.app.fill_pane import FillPane, MainModelReady
from mlm_tui.app.help import bound_key
from mlm_tui.app.shared import (
    CorpusOpened,
    FillSentence,
    LoadModel,
    Masking,
    MaskingChanged,
    OpenCorpus,
    RunsChanged,
    ShowWord,
)
from mlm_tui.app.widgets import KeysFooter
from mlm_tui.history import History
from mlm_tui.settings import load_settings, save_settings
from mlm_tui.themes import load_themes

if TYPE_CHECKING:
    from mlm_tui.app.chunks_pane import ChunksPane
    from mlm_tui.app.train_pane import TrainPane
    from mlm_tui.app.vocab_pane import VocabPane
    from mlm_tui.runstore import RunInfo

PANES = ("fill", "chunks", "train", "words")
FOCUS = {"fill": "#sentence", "chunks": "#chunk-box", "train": "#runs", "words": "#word-table"}
RUNS_POLL_S = 1.0
ENDED = {"completed": "information", "failed": "error", "cancelled": "warning", "interrupted": "warning"}
# Actions that open a dialog or move between panes: not while a dialog is already up.
GLOBAL_ACTIONS = {"show_pane", "open_corpus", "switch_model", "compare_model", "help", "change_theme"}


class RunsListed(Message):
    """The run store as the poll worker found it: runs newest first, and unreadable runs."""

    def __init__(self, infos: list[RunInfo], problems: list[str]) -> None:
        super().__init__()
        self.infos, self.problems = infos, problems


class Panes(TabbedContent):
    """Tabs that change only on the user's request, never by following focus (see the module's doc)."""

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        event.stop()


class WorkbenchApp(App[None]):
    CSS_PATH = "workbench.tcss"
    TITLE = "mlm-tui"
    COMMANDS = App.COMMANDS | {WorkbenchCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        # Pane keys are priority bindings: no focused widget (a table, an input) may take them. The tabs
        # show them ("F1 Fill"); the footer keeps its room for the pane's own keys.
        Binding("f1", "show_pane('fill')", "Fill", show=False, priority=True, tooltip="the Fill pane"),
        Binding("f2", "show_pane('chunks')", "Chunks", show=False, priority=True, tooltip="the Chunks pane"),
        Binding("f3", "show_pane('train')", "Train", show=False, priority=True, tooltip="the Train pane"),
        Binding("f5", "show_pane('words')", "Words", show=False, priority=True,
                tooltip="the Vocabulary pane: the corpus's words and their pieces"),
        Binding("ctrl+o", "open_corpus", "Corpus", tooltip="open a corpus in Chunks", priority=True),
        # Shown by the Fill pane, where they matter; they work from every pane.
        Binding("ctrl+l", "switch_model", "Model", show=False, tooltip="load another model into Fill"),
        Binding("f4", "compare_model", "Compare", show=False, tooltip="compare a second model in Fill"),
        # F10 in the footer: it works in Fill's sentence box too, which takes `?` as a character
        Binding("f10", "help", "Help", tooltip="the workflow and every key"),
        Binding("question_mark", "help", "Help", show=False, tooltip="help too, outside a text box"),
        Binding("ctrl+t", "change_theme", "Theme", show=False, tooltip="pick a theme (remembered)"),
    ]

    def __init__(self, model: str = "starter", data: str | None = None, text_field: str = "text") -> None:
        super().__init__()
        self.model_ref = model
        self.data = data
        self.text_field = text_field
        self.settings, self.settings_problem = load_settings()
        self.history = History(persist=self.settings.keep_history, limit=self.settings.history_size)
        # The theme is chosen before the first styling: set on mount, it styled the whole screen twice
        for theme in load_themes():
            self.register_theme(theme)
        self.theme = self.settings.theme if self.settings.theme in self.available_themes else "mlm-dark"
        self._wanted_pane = "fill"
        self._run_status: dict[str, str] | None = None  # None until the first look at the run store
        self.run_infos: list[RunInfo] = []  # the latest look at it
        self.corpus: OpenCorpus | None = None  # the corpus open in Chunks
        self.masking = Masking()  # the Train form's masking settings, which the Chunks preview follows
        self._last_listing: tuple[list[RunInfo], list[str]] | None = None

    # The hidden panes mount after the first frame; the app holds them from then on, to give them what they
    # show. Their modules (the Train pane's chart, form and run views above all) are imported when first
    # asked for, not before the first frame: about 45 ms of a start-up of 0.45 s (issue 26).
    @cached_property
    def chunks(self) -> ChunksPane:
        from mlm_tui.app.chunks_pane import ChunksPane

        return ChunksPane(self.model_ref, self.data, self.text_field, id="chunks-pane")

    @cached_property
    def train(self) -> TrainPane:
        from mlm_tui.app.train_pane import TrainPane

        return TrainPane(self.model_ref, self.data, self.text_field, id="train-pane")

    @cached_property
    def words(self) -> VocabPane:
        from mlm_tui.app.vocab_pane import VocabPane

        return VocabPane(id="vocab-pane")

    def compose(self) -> ComposeResult:
        with Panes(initial="fill"):
            with TabPane("F1 Fill", id="fill"):
                yield FillPane(self.history, self.settings.fill_top_k, id="fill-pane")
            # The hidden panes mount once the first frame is on screen (`_after_first_frame`).
            yield TabPane("F2 Chunks", id="chunks")
            yield TabPane("F3 Train", id="train")
            yield TabPane("F5 Words", id="words")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        if self.settings_problem:
            self.notify(self.settings_problem, title="Settings", severity="warning", markup=False)
        self.query_one("#sentence", Input).focus()
        self._after_first_frame()

    def _after_first_frame(self, tries: int = 20) -> None:
        """Start what the first frame does not show once that frame is on screen: the model's load, the
        hidden panes and the look at the run store. Textual fills the footer a refresh after the first one,
        and work started at the first refresh kept it off the screen for a second: torch's import in a
        worker holds the GIL for long stretches (its libraries load with it held), and mounting the hidden
        panes (as `Lazy` did) takes the event loop for a few hundred milliseconds."""
        if not any(key.region for key in self.query_one(Footer).children) and tries:  # not laid out yet
            self.call_after_refresh(self._after_first_frame, tries - 1)
            return
        if not gc.isenabled():  # `run_app` held it for the start-up
            gc.freeze()  # what the start-up built stays: no collection need walk it again
            gc.enable()
        self.query_one(FillPane).load(self.model_ref)
        for tab, pane in (("chunks", self.chunks), ("train", self.train), ("words", self.words)):
            self.query_one(f"#{tab}", TabPane).mount(pane)
        self.set_interval(RUNS_POLL_S, self._poll_runs)
        self._poll_runs()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Pane keys and dialogs wait while a dialog (prompt, confirmation, help, palette) is open."""
        return not (action in GLOBAL_ACTIONS and isinstance(self.screen, ModalScreen))

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
    @property
    def pane(self) -> str:
        """The pane on show."""
        return self.query_one(TabbedContent).active

    def action_show_pane(self, pane: str) -> None:
        self._wanted_pane = pane
        tabs = self.query_one(TabbedContent)
        if tabs.active != pane:
            self.screen.set_focus(None)  # nothing stays focused in the pane being hidden
        tabs.active = pane
        self._focus_pane(pane)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id or "fill"
        self._wanted_pane = pane  # a click on a tab is a wish too
        self._focus_pane(pane)

    def _focus_pane(self, pane: str, tries: int = 20) -> None:
        """Focus the pane's first widget once it is mounted (Chunks and Train mount on first show)."""
        if pane == "train":
            self._train_defaults()

        def focus() -> None:
            tabs = self.query_one(TabbedContent)
            if self._wanted_pane != pane or tabs.active != pane:
                return  # the user has moved on: focusing here would drag them back
            widget = self.query(FOCUS[pane]).first() if self.query(FOCUS[pane]) else None
            if widget is None:
                if tries:
                    self._focus_pane(pane, tries - 1)
                return
            widget.focus()

        self.call_after_refresh(focus)

    def _train_defaults(self) -> None:
        if self.train.is_mounted:
            opened = self.corpus
            self.train.set_defaults(opened.corpus if opened else self.data,
                                    opened.text_field if opened else self.text_field)

    @on(CorpusOpened)
    def _corpus_opened(self, event: CorpusOpened) -> None:
        self.corpus = event.opened
        for pane in (self.chunks, self.train, self.words):
            pane.use_corpus(event.opened)  # one not mounted yet takes it when it mounts

    @on(MaskingChanged)
    def _masking_changed(self, event: MaskingChanged) -> None:
        if event.masking != self.masking:
            self.masking = event.masking
            self.chunks.use_masking(event.masking)
            self.train.use_masking(event.masking)

    @on(ShowWord)
    def _show_word(self, event: ShowWord) -> None:
        """From the Vocabulary pane: the Chunks pane at a chunk that holds the word."""
        self.action_show_pane("chunks")
        self.chunks.show_word(event.word, event.report)

    def action_help(self) -> None:
        from mlm_tui.app.chunks_pane import ChunksPane, ChunkView
        from mlm_tui.app.fill_pane import FillPane as Fill
        from mlm_tui.app.help import BUILT_IN, HelpScreen
        from mlm_tui.app.learned_screen import LearnedScreen
        from mlm_tui.app.run_chart import RunChart
        from mlm_tui.app.runs_table import RunsTable
        from mlm_tui.app.train_pane import TrainPane
        from mlm_tui.app.vocab_pane import WordsTable

        sections = [("Everywhere", self.BINDINGS + BUILT_IN), ("Fill (F1)", Fill.BINDINGS),
                    ("Chunks (F2)", ChunksPane.BINDINGS + ChunkView.BINDINGS),
                    ("Train (F3)", TrainPane.BINDINGS),
                    ("Train (F3): the runs table", RunsTable.BINDINGS),
                    ("Train (F3): the chart (tab from the runs table)", RunChart.BINDINGS),
                    ("Train (F3): what a run learned (w in the runs table)", LearnedScreen.BINDINGS),
                    ("Words (F5): the words table", WordsTable.BINDINGS)]
        self.push_screen(HelpScreen(sections))

    # -- corpus and models --------------------------------------------------------------------------
    def action_open_corpus(self) -> None:
        from mlm_tui.app.prompt import PromptScreen

        self.action_show_pane("chunks")

        def opened(path: str | None) -> None:
            if path:
                self.action_show_pane("chunks")
                self.chunks.open(path)

        hint = self.chunks.corpus_path_hint() if self.chunks.is_mounted else ""
        self.push_screen(PromptScreen("Open corpus: file, folder or hub dataset", hint, paths=True), opened)

    def action_switch_model(self) -> None:
        self._ask_model("Model (directory, run id, starter or hub id)", "main")

    def action_compare_model(self) -> None:
        self._ask_model("Compare with model (directory, run id or hub id)", "compare")

    def _ask_model(self, title: str, role: str) -> None:
        from mlm_tui.app.prompt import ModelPickScreen
        from mlm_tui.app.render import ppl_change, short_ref
        from mlm_tui.textsafe import printable

        current = self.query_one(FillPane).refs[role] or ""
        runs = [(info.run_id, printable(f"{info.run_id} · {short_ref(info.corpus or '?')} · "
                                        f"{(info.created or '').replace('T', ' ')[:16]} · perplexity "
                                        f"{ppl_change(info.perplexity_before, info.perplexity_after)}"))
                for info in self.run_infos if info.model_path is not None]

        def chosen(ref: str | None) -> None:
            if ref:
                self.load_model(ref, role)

        self.push_screen(ModelPickScreen(title, current, runs), chosen)

    @on(LoadModel)
    def _load_model(self, event: LoadModel) -> None:
        self.load_model(event.ref, event.role)

    def load_model(self, ref: str, role: str = "main") -> None:
        """Load a model into the Fill pane as the main or the compare model, and show the pane."""
        if role == "main":
            self.model_ref = ref
        self.query_one(FillPane).load(ref, role)
        self.action_show_pane("fill")

    @on(MainModelReady)
    def _main_model_ready(self, event: MainModelReady) -> None:
        self.chunks.follow_model(event.ref)

    @on(FillSentence)
    def _fill_sentence(self, event: FillSentence) -> None:
        fill = self.query_one(FillPane)
        if event.compare is not None and event.compare not in (fill.refs["main"], fill.refs["compare"]):
            fill.load(event.compare, "compare")
        self.action_show_pane("fill")
        fill.set_sentence(event.sentence)

    def action_stop_compare(self) -> None:
        self.query_one(FillPane).load(None, "compare")

    # -- runs ending, wherever they were started ------------------------------------------------------
    def _poll_runs(self) -> None:
        self._runs_worker()

    @on(RunsChanged)
    def _runs_changed(self) -> None:
        """Look at the run store now (after starting or deleting a run), not at the next tick."""
        self._runs_worker()

    @work(thread=True, exclusive=True, group="runs-list")
    def _runs_worker(self) -> None:
        """List the store; a listing like the last one (the same cached runs) changes nothing on screen, so
        it is not sent: the idle workbench does not rebuild a table of a thousand runs every second."""
        from mlm_tui import runstore

        listing = runstore.list_infos()
        if listing != self._last_listing:
            self._last_listing = listing
            self.post_message(RunsListed(*listing))

    @on(RunsListed)
    def _runs_listed(self, event: RunsListed) -> None:
        status = {info.run_id: info.status for info in event.infos}
        if self._run_status is not None:
            for info in event.infos:
                before = self._run_status.get(info.run_id)
                if info.status in ENDED and before != info.status and (before is not None or
                                                                       info.status != "interrupted"):
                    self._run_ended(info)
        self._run_status, self.run_infos = status, event.infos
        if self.train.is_mounted:
            self.train.show_runs(event.infos, event.problems)
        else:
            self._last_listing = None  # the Train pane mounts later (lazily): it gets the next listing

    def _run_ended(self, info: RunInfo) -> None:
        from mlm_tui.app.render import ppl_change

        detail = ppl_change(info.perplexity_before, info.perplexity_after)
        self.notify(f"{info.run_id} {info.status}" + (f": perplexity {detail}" if detail else ""),
                    title=f"Run {info.status}", severity=ENDED[info.status],  # type: ignore[arg-type]
                    timeout=10, markup=False)
        if self.settings.bell:
            self.bell()

    # -- history and settings -----------------------------------------------------------------------
    def action_clear_history(self) -> None:
        self.history.clear()
        self.notify("Sentence history cleared, and its file deleted.")

    def action_toggle_keep_history(self) -> None:
        self.settings.keep_history = not self.settings.keep_history
        self.history.set_persist(self.settings.keep_history)
        self._save_settings()
        self.notify("Sentences are now kept on disk across restarts." if self.settings.keep_history else
                    "Sentences are no longer written to disk (a stored history file is kept but unused; "
                    "'Clear sentence history' deletes it).")

    def action_cycle_top_k(self) -> None:
        """Show more (or again fewer) fills per mask in Fill: the next of 5, 10, 20, remembered."""
        from mlm_tui.fill import TOP_K_CHOICES

        current = self.settings.fill_top_k
        top_k = next((k for k in TOP_K_CHOICES if k > current), TOP_K_CHOICES[0])
        self.settings.fill_top_k = top_k
        self._save_settings()
        self.query_one(FillPane).set_top_k(top_k)
        self.notify(f"Fill shows the top {top_k} fills per mask (remembered).")

    def action_toggle_bell(self) -> None:
        self.settings.bell = not self.settings.bell
        self._save_settings()
        self.notify("The terminal bell rings when a run ends." if self.settings.bell else
                    "No bell when a run ends (a notification only).")

    def palette_commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """Every command by name, with the key that does the same where there is one (read from the
        BINDINGS, so the palette cannot name a key that does something else)."""
        from mlm_tui.fill import TOP_K_CHOICES

        keep, bell, top_k = self.settings.keep_history, self.settings.bell, self.settings.fill_top_k
        next_k = next((k for k in TOP_K_CHOICES if k > top_k), TOP_K_CHOICES[0])
        fill = self.query_one(FillPane)
        commands: list[tuple[str, str, DOMNode, str]] = [
            ("Fill", "Show the Fill pane", self, "show_pane('fill')"),
            ("Chunks", "Show the Chunks pane", self, "show_pane('chunks')"),
            ("Train", "Show the Train pane", self, "show_pane('train')"),
            ("Words", "Show the Vocabulary pane: the corpus's words and their pieces", self,
             "show_pane('words')"),
            ("Help", "The workflow and every key", self, "help"),
            ("Open corpus", "Tokenize a corpus and browse its chunks", self, "open_corpus"),
            ("Switch model", "Load another model for fills", self, "switch_model"),
            ("Compare with model", "Show a second model's fills side by side", self, "compare_model"),
            ("Stop comparing", "Drop the compare model", self, "stop_compare"),
            ("Change theme", "Pick a theme; the choice is remembered", self, "change_theme"),
            ("Sentence history", "Pick a sentence tried in this session", fill, "pick_history"),
            (f"Fills per mask: {next_k}", f"Show the top {next_k} fills per mask in Fill (now {top_k}); "
             "remembered", fill, "app.cycle_top_k"),
            ("Copy fills", "Copy the fills on show as text, as `mlm-tui fill` prints them", fill,
             "copy_fills"),
            ("Clear sentence history", "Forget every sentence typed in Fill and delete the history file",
             self, "clear_history"),
            ("Keep no sentence history on disk" if keep else "Keep sentence history on disk",
             "Confidential text: write no sentences to disk" if keep else
             "Remember sentences across restarts (written to the state folder)", self, "toggle_keep_history"),
            ("Bell off when a run ends" if bell else "Bell when a run ends",
             "Ring the terminal bell as well as the notification", self, "toggle_bell"),
        ]
        if self.chunks.is_mounted:
            commands += [
                ("Chunk size", "Change the chunk size in Chunks", self.chunks, "chunk_size"),
                ("Tokenizer", "Change the tokenizer in Chunks", self.chunks, "tokenizer"),
                ("Masking preview", "Show what the collator does to the chunk", self.chunks,
                 "toggle_masking"),
                ("Text column", "Pick the corpus column that holds the text", self.chunks, "text_field"),
            ]
        if self.train.is_mounted:
            table = self.train.table
            commands += [
                ("Start run", "Start a fine-tuning run with the Train form", self.train, "start"),
                ("Cancel run", "Ask the selected run to stop, after confirming", table, "act('cancel')"),
                ("Delete run", "Delete the selected run, after confirming", table, "act('delete')"),
                ("Resume run", "Continue the selected cancelled or interrupted run", table, "act('resume')"),
                ("Copy run settings", "Put the selected run's settings into the form", table,
                 "act('copy_settings')"),
                ("Overlay run", "Draw the selected run on the chart of the next one", table,
                 "act('overlay')"),
                ("Sort runs", "By created, status, perplexity after, change", table, "sort"),
                ("What the run learned", "Words whose loss fell or rose, probes", table, "act('learned')"),
                ("Probe the run on a task", "Base against adapted: linear or fine-tune, on a labelled corpus",
                 table, "act('probe')"),
            ]
        return [(title, help_text + bound_key(node, action), partial(self.run_action, action, node))
                for title, help_text, node, action in commands]

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
