"""The Chunks pane: open a corpus, see per-split stats, browse the chunks the model will train on.

Tokenizing runs in a worker with a progress bar (the engine caches token arrays, so reopening is fast).
Chunks are drawn token by token so `[CLS]`/`[SEP]` stand out and the collator's masking can be previewed
with the same (seed, step) rule training uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from mlm_tui.app.render import chunk_text, short_ref
from mlm_tui.errors import first_line

if TYPE_CHECKING:
    from mlm_tui.chunking import TokenizedSplit

DEFAULT_CHUNK_SIZE = 128


class TokenizeProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class CorpusReady(Message):
    def __init__(self, corpus: str, tokenizer: Any, tables: Any, splits: dict[str, TokenizedSplit] | None,
                 error: str | None) -> None:
        super().__init__()
        self.corpus, self.tokenizer, self.tables = corpus, tokenizer, tables
        self.splits, self.error = splits, error


class ChunkView(VerticalScroll, can_focus=True):
    """The scrollable chunk text; focusable so the pane's keys work while browsing."""


class ChunksPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "app.open_corpus", "Open"),
        Binding("right,n", "move(1)", "Next"),
        Binding("left,p", "move(-1)", "Prev"),
        Binding("home", "move(-1000000000)", "First", show=False),
        Binding("end", "move(1000000000)", "Last", show=False),
        Binding("g", "jump", "Jump"),
        Binding("s", "next_split", "Split"),
        Binding("m", "toggle_masking", "Masking"),
        Binding("r", "reroll", "Re-roll"),
        Binding("w", "toggle_whole_word", "Words"),
        Binding("c", "chunk_size", "Size"),
        Binding("t", "tokenizer", "Tokenizer"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.corpus: str | None = None
        self.tokenizer_ref = "starter"
        self.tokenizer: Any = None
        self.tables: Any = None
        self.splits: dict[str, TokenizedSplit] = {}
        self.split = ""
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.index = 0
        self.masking = False
        self.whole_word = False
        self.mlm_probability = 0.15
        self.seed = 42

    def compose(self) -> ComposeResult:
        yield Static(Text("No corpus open: press o (or ctrl+o) to open one."), id="corpus-line")
        yield ProgressBar(id="tokenize-progress", show_eta=False)
        table: DataTable[str] = DataTable(id="stats", cursor_type="none", zebra_stripes=True)
        table.can_focus = False
        yield table
        yield Static(id="chunk-title")
        with ChunkView(id="chunk-box"):
            yield Static(id="chunk-body")

    def on_mount(self) -> None:
        self.query_one("#tokenize-progress").display = False
        table = self.query_one("#stats", DataTable)
        table.add_columns("split", "documents", "tokens", "chunks", "dropped tokens")
        table.display = False
        self.tokenizer_ref = self.app.model_ref
        if self.app.data:
            self.open(self.app.data)

    # -- opening --------------------------------------------------------------------------------------
    def open(self, corpus: str, tokenizer_ref: str | None = None) -> None:
        """Tokenize `corpus` with the tokenizer of `tokenizer_ref` (by default the current one)."""
        self.corpus = corpus
        if tokenizer_ref is not None:
            self.tokenizer_ref = tokenizer_ref
            self.tokenizer = None
        bar = self.query_one("#tokenize-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._line(f"{short_ref(corpus)} · tokenizer {short_ref(self.tokenizer_ref)} · "
                   "reading and tokenizing…")
        self._open_worker(corpus, self.tokenizer_ref, self.tokenizer)

    @work(thread=True, exclusive=True, group="tokenize")
    def _open_worker(self, corpus: str, tokenizer_ref: str, tokenizer: Any) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()
        try:
            from mlm_tui.app.heavy import import_torch, load_tokenizer

            import_torch()  # masking imports torch: never twice at once from two threads
            from mlm_tui.chunking import tokenize_corpus
            from mlm_tui.masking import TokenTables

            if tokenizer is None:
                tokenizer = load_tokenizer(tokenizer_ref)
            splits = tokenize_corpus(corpus, tokenizer,
                                     progress=lambda d, t: self.post_message(TokenizeProgress(d, t)),
                                     cancelled=lambda: worker.is_cancelled)
            tables = TokenTables.from_tokenizer(tokenizer)
        except Exception as exc:  # a bad corpus or tokenizer is a message in the app, never a crash
            self.post_message(CorpusReady(corpus, None, None, None, first_line(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(CorpusReady(corpus, tokenizer, tables, splits, None))

    @on(TokenizeProgress)
    def _progress(self, event: TokenizeProgress) -> None:
        bar = self.query_one("#tokenize-progress", ProgressBar)
        bar.update(total=event.total or None, progress=event.done)  # total 0: a hub corpus, size unknown

    @on(CorpusReady)
    def _ready(self, event: CorpusReady) -> None:
        if event.corpus != self.corpus:
            return
        self.query_one("#tokenize-progress").display = False
        if event.error is not None or event.splits is None:
            self.app.notify(event.error or "", title="Corpus not opened", severity="error", timeout=8,
                            markup=False)
            self._line(f"{short_ref(event.corpus)}: could not open it; press o to try another corpus.")
            return
        self.tokenizer, self.tables, self.splits = event.tokenizer, event.tables, event.splits
        if self.split not in self.splits:
            self.split = "train" if "train" in self.splits else next(iter(self.splits))
        self.index = 0
        self.show()

    # -- showing --------------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.query_one("#corpus-line", Static).update(Text(text))

    def show(self) -> None:
        """Stats for every split and the current chunk, for the current chunk size and settings."""
        if not self.splits or self.corpus is None:
            return
        self._line(f"{short_ref(self.corpus)} · tokenizer {short_ref(self.tokenizer_ref)} · "
                   f"chunks of {self.chunk_size} tokens")
        table = self.query_one("#stats", DataTable)
        table.clear()
        for name, split in self.splits.items():
            s = split.stats(self.chunk_size)
            table.add_row(name, f"{s['documents']:,}", f"{s['tokens']:,}", f"{s['chunks']:,}",
                          f"{s['dropped_tokens']:,}")
        table.display = True
        self._show_chunk()

    def _chunks(self) -> Any:
        return self.splits[self.split].chunks(self.chunk_size)

    def _show_chunk(self) -> None:
        chunks = self._chunks()
        title = self.query_one("#chunk-title", Static)
        body = self.query_one("#chunk-body", Static)
        if len(chunks) == 0:
            title.update(Text(f"{self.split}: not one chunk of {self.chunk_size} tokens (c: chunk size)"))
            body.update("")
            return
        self.index = max(0, min(len(chunks) - 1, self.index))
        ids = [int(t) for t in chunks[self.index]]
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        special = [bool(self.tables.special[i]) for i in ids]
        head = Text(f"{self.split} chunk {self.index + 1:,} of {len(chunks):,}", style="bold")
        masked = None
        if self.masking:
            masked, summary = self._preview(ids)
            head.append(f" · masking {summary}")
        body.update(chunk_text(tokens, special, masked))
        title.update(head)

    def _preview(self, ids: list[int]) -> tuple[list[bool], str]:
        """What the collator would do to this chunk: the same rule and generator as training's."""
        import torch

        from mlm_tui.masking import IGNORE, generator_for, mask_batch

        batch = torch.tensor([ids])
        inputs, labels = mask_batch(batch, self.tables, self.mlm_probability, self.whole_word,
                                    generator_for(self.seed, self.index))
        chosen = labels[0] != IGNORE
        to_mask = int((chosen & (inputs[0] == self.tables.mask_id)).sum())
        kept = int((chosen & (inputs[0] == batch[0])).sum())
        n = int(chosen.sum())
        unit = "whole words" if self.whole_word else "tokens"
        summary = (f"{n} of {len(ids)} tokens ({self.mlm_probability:.0%} of {unit}): {to_mask} → [MASK], "
                   f"{n - to_mask - kept} random, {kept} kept · seed {self.seed}")
        return chosen.tolist(), summary

    # -- actions --------------------------------------------------------------------------------------
    def _ready_for_keys(self) -> bool:
        if not self.splits:
            self.app.notify("Open a corpus first (o).")
            return False
        return True

    def action_move(self, step: int) -> None:
        if self._ready_for_keys():
            self.index += step
            self._show_chunk()

    def action_next_split(self) -> None:
        if self._ready_for_keys():
            names = list(self.splits)
            self.split = names[(names.index(self.split) + 1) % len(names)]
            self.index = 0
            self._show_chunk()

    def action_toggle_masking(self) -> None:
        if self._ready_for_keys():
            self.masking = not self.masking
            self._show_chunk()

    def action_toggle_whole_word(self) -> None:
        if self._ready_for_keys():
            self.whole_word = not self.whole_word
            self.masking = True
            self._show_chunk()

    def action_reroll(self) -> None:
        if self._ready_for_keys():
            self.seed += 1
            self.masking = True
            self._show_chunk()

    def action_jump(self) -> None:
        if not self._ready_for_keys():
            return
        from mlm_tui.app.prompt import PromptScreen

        def go(value: str | None) -> None:
            if value is None:
                return
            if not value.isdigit() or int(value) < 1:
                self.app.notify(f"Not a chunk number: {value}", severity="warning", markup=False)
                return
            self.index = int(value) - 1
            self._show_chunk()

        self.app.push_screen(PromptScreen(f"Jump to chunk (1–{len(self._chunks()):,})"), go)

    def action_chunk_size(self) -> None:
        from mlm_tui.app.prompt import PromptScreen

        def change(value: str | None) -> None:
            if value is None:
                return
            if not value.isdigit() or int(value) < 2:
                self.app.notify(f"Not a chunk size: {value} (a whole number, 2 or more)", severity="warning",
                                markup=False)
                return
            if self.tokenizer is not None:
                from mlm_tui.chunking import model_max_length

                limit = model_max_length(self.tokenizer)
                if limit and int(value) > limit:
                    self.app.notify(f"{value} is beyond this tokenizer's maximum of {limit} tokens",
                                    severity="warning")
                    return
            self.chunk_size = int(value)
            self.index = 0
            self.show()

        self.app.push_screen(PromptScreen("Chunk size (tokens)", str(self.chunk_size)), change)

    def action_tokenizer(self) -> None:
        from mlm_tui.app.prompt import PromptScreen

        def change(value: str | None) -> None:
            if value is None:
                return
            self.tokenizer_ref = value
            self.tokenizer = None
            if self.corpus is not None:
                self.open(self.corpus, value)

        self.app.push_screen(PromptScreen("Tokenizer of model (directory, run id, starter or hub id)",
                                          self.tokenizer_ref, paths=True), change)

    def corpus_path_hint(self) -> str:
        """Where the open-corpus prompt starts: the open corpus, else the current folder."""
        return self.corpus or (str(Path.cwd()) + "/")
