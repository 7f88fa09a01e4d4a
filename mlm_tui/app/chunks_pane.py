"""The Chunks pane: open a corpus, see per-split stats, browse the chunks the model will train on.

Tokenizing runs in a worker with a progress bar (the engine caches token arrays, so reopening is fast).
Chunks read as `mlm-tui chunks --show` prints them (the tokenizer's own decoding), with `[CLS]`/`[SEP]`
highlighted, and the collator's masking can be previewed with the same (seed, step) draws training uses.

A corpus being opened never mixes with the one on show: the pane keeps showing the open corpus, under
its own name, until the new one is ready; a failure leaves it as it was.
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

from mlm_tui.app.render import chunk_text, fate_legend, short_ref
from mlm_tui.errors import MissingTextField, first_line
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.chunking import TokenizedSplit
    from mlm_tui.vocab import VocabReport, WordStat

DEFAULT_CHUNK_SIZE = 128


class TokenizeProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class CorpusReady(Message):
    def __init__(self, request: int, tokenizer: Any, tables: Any, splits: dict[str, TokenizedSplit] | None,
                 error: str | None, columns: list[str] | None = None) -> None:
        super().__init__()
        self.request, self.tokenizer, self.tables = request, tokenizer, tables
        self.splits, self.error, self.columns = splits, error, columns


class CorpusOpened(Message):
    """A corpus opened successfully: the Train form takes it (and its text column) as its default."""

    def __init__(self, corpus: str, text_field: str, tokenizer_ref: str,
                 splits: dict[str, TokenizedSplit]) -> None:
        super().__init__()
        self.corpus, self.text_field, self.splits = corpus, text_field, splits
        self.tokenizer_ref = tokenizer_ref


class ChunkView(VerticalScroll, can_focus=True, inherit_bindings=False):
    """The scrollable chunk text; focusable so the pane's keys work while browsing.

    It does not inherit the scroll keys of `VerticalScroll`: its → and ← would shadow the pane's
    Next and Prev (and show as "Scroll Right" in the palette's key list).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll_up", "Scroll up", show=False),
        Binding("down", "scroll_down", "Scroll down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]


class ChunksPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right,n", "move(1)", "Next", tooltip="next chunk"),
        Binding("left,p", "move(-1)", "Prev", tooltip="previous chunk"),
        Binding("m", "toggle_masking", "Mask", tooltip="preview what the collator does to the chunk"),
        Binding("g", "jump", "Jump", tooltip="go to chunk number…"),
        Binding("o", "app.open_corpus", "Open", show=False, tooltip="open another corpus"),
        Binding("home", "move(-1000000000)", "First", show=False, tooltip="first chunk"),
        Binding("end", "move(1000000000)", "Last", show=False, tooltip="last chunk"),
        Binding("s", "next_split", "Split", show=False, tooltip="next split (train, test, …)"),
        Binding("r", "reroll", "Re-roll", show=False, tooltip="another masking draw (next seed)"),
        Binding("w", "toggle_whole_word", "Words", show=False, tooltip="whole-word masking on/off"),
        Binding("c", "chunk_size", "Size", show=False, tooltip="chunk size…"),
        Binding("t", "tokenizer", "Tokenizer", show=False, tooltip="another model's tokenizer…"),
        Binding("f", "text_field", "Text column", show=False, tooltip="the column that holds the text…"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.corpus: str | None = None  # the corpus on show (opened successfully)
        self.text_field = "text"
        self.opening: tuple[str, str, str] | None = None  # (corpus, text field, tokenizer) being read
        self._request = 0
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
        self.found: tuple[str, int] | None = None  # the word the Vocabulary pane jumped to, for the title

    def compose(self) -> ComposeResult:
        yield Static(Text("No corpus open: press o (or ctrl+o) to open one."), id="corpus-line")
        yield ProgressBar(id="tokenize-progress", show_eta=False)
        table: DataTable[str] = DataTable(id="stats", cursor_type="none", zebra_stripes=True)
        table.can_focus = False
        yield table
        yield Static(id="chunk-title")
        yield Static(fate_legend(), id="fate-legend")
        with ChunkView(id="chunk-box"):
            yield Static(id="chunk-body")

    def on_mount(self) -> None:
        self.query_one("#tokenize-progress").display = False
        table = self.query_one("#stats", DataTable)
        table.add_columns("split", "documents", "tokens", "chunks", "dropped tokens")
        table.display = False
        self.query_one("#fate-legend").display = False
        self.tokenizer_ref = self.app.model_ref  # type: ignore[attr-defined]
        if self.app.data:  # type: ignore[attr-defined]
            self.open(self.app.data, text_field=self.app.text_field)  # type: ignore[attr-defined]

    # -- opening --------------------------------------------------------------------------------------
    def open(self, corpus: str, tokenizer_ref: str | None = None, text_field: str | None = None) -> None:
        """Tokenize `corpus` with the tokenizer of `tokenizer_ref` (by default the current one).

        What is on show stays until the corpus is ready: only then do name, stats and chunks change.
        """
        field = text_field or (self.text_field if corpus == self.corpus else "text")
        ref = tokenizer_ref or self.tokenizer_ref
        tokenizer = self.tokenizer if ref == self.tokenizer_ref else None
        self._request += 1
        self.opening = (corpus, field, ref)
        bar = self.query_one("#tokenize-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._show_corpus_line()
        self._open_worker(self._request, corpus, field, ref, tokenizer)

    @work(thread=True, exclusive=True, group="tokenize")
    def _open_worker(self, request: int, corpus: str, field: str, tokenizer_ref: str, tokenizer: Any) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()
        try:
            from mlm_tui.app.heavy import import_torch, load_tokenizer

            import_torch()  # masking imports torch: never twice at once from two threads
            from mlm_tui.chunking import tokenize_corpus
            from mlm_tui.masking import TokenTables

            if tokenizer is None:
                tokenizer = load_tokenizer(tokenizer_ref)
            splits = tokenize_corpus(corpus, tokenizer, field,
                                     progress=lambda d, t: self.post_message(TokenizeProgress(d, t)),
                                     cancelled=lambda: worker.is_cancelled)
            tables = TokenTables.from_tokenizer(tokenizer)
        except MissingTextField as exc:
            self.post_message(CorpusReady(request, None, None, None, str(exc), exc.columns))
            return
        except Exception as exc:  # a bad corpus or tokenizer is a message in the app, never a crash
            self.post_message(CorpusReady(request, None, None, None, first_line(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(CorpusReady(request, tokenizer, tables, splits, None))

    @on(TokenizeProgress)
    def _progress(self, event: TokenizeProgress) -> None:
        bar = self.query_one("#tokenize-progress", ProgressBar)
        bar.update(total=event.total or None, progress=event.done)  # total 0: a hub corpus, size unknown

    @on(CorpusReady)
    def _ready(self, event: CorpusReady) -> None:
        if event.request != self._request or self.opening is None:
            return  # an older open, overtaken by a newer one
        corpus, field, ref = self.opening
        self.opening = None
        self.query_one("#tokenize-progress").display = False
        if event.error is not None or event.splits is None:
            self.app.notify(event.error or "", title="Corpus not opened", severity="error", timeout=8,
                            markup=False)
            self._show_corpus_line()
            if event.columns:
                self._pick_text_field(corpus, field, event.columns)
            return
        self.corpus, self.text_field, self.tokenizer_ref = corpus, field, ref
        self.tokenizer, self.tables, self.splits = event.tokenizer, event.tables, event.splits
        if self.split not in self.splits:
            self.split = "train" if "train" in self.splits else next(iter(self.splits))
        self.index = 0
        self.show()
        self.post_message(CorpusOpened(corpus, field, ref, self.splits))

    def _pick_text_field(self, corpus: str, field: str, columns: list[str]) -> None:
        from mlm_tui.app.prompt import PickScreen

        def chosen(column: str | None) -> None:
            if column is not None:
                self.open(corpus, text_field=column)

        self.app.push_screen(PickScreen(f"{short_ref(corpus)} has no column {field!r}: which one holds "
                                        "the text?", columns), chosen)

    # -- showing --------------------------------------------------------------------------------------
    def _show_corpus_line(self) -> None:
        """The corpus on show under its own name, and the one being opened, if any."""
        line = Text()
        if self.corpus is not None:
            field = f" · column {self.text_field}" if self.text_field != "text" else ""
            line.append(f"{short_ref(self.corpus)}{field} · tokenizer {short_ref(self.tokenizer_ref)} · "
                        f"chunks of {self.chunk_size} tokens")
        if self.opening is not None:
            line.append(("  ·  " if self.corpus else "") + f"opening {short_ref(self.opening[0])} "
                        f"(tokenizer {short_ref(self.opening[2])}): reading and tokenizing…", style="italic")
        if not line:
            line.append("No corpus open: press o (or ctrl+o) to open one.")
        self.query_one("#corpus-line", Static).update(line)

    def show(self) -> None:
        """Stats for every split and the current chunk, for the current chunk size and settings."""
        if not self.splits or self.corpus is None:
            return
        self._show_corpus_line()
        table = self.query_one("#stats", DataTable)
        table.clear()
        for name, split in self.splits.items():
            s = split.stats(self.chunk_size)
            table.add_row(name, f"{s['documents']:,}", f"{s['tokens']:,}", f"{s['chunks']:,}",
                          f"{s['dropped_tokens']:,}")
        table.display = True
        self._show_chunk()

    def show_word(self, word: WordStat, report: VocabReport) -> None:
        """Go to the first chunk holding `word` (from the Vocabulary pane), in this split if it has one."""
        holding = report.chunks_holding(word, self.chunk_size)
        splits = [self.split, *(name for name in holding if name != self.split)]
        for name in splits:
            if len(holding.get(name, ())):
                self.split, self.index = name, int(holding[name][0])
                self.found = (word.word, sum(len(v) for v in holding.values()))
                self._show_chunk()
                return
        self.app.notify(f"No whole chunk of {self.chunk_size} tokens holds {word.word!r}.", markup=False)

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
        special = [bool(self.tables.special[i]) for i in ids]
        head = Text(f"{self.split} chunk {self.index + 1:,} of {len(chunks):,}", style="bold")
        if self.found is not None:
            head.append(f" · holds {printable(self.found[0])!r} ({self.found[1]:,} chunks do)")
            self.found = None
        fates = None
        if self.masking:
            fates, summary = self._preview(ids)
            head.append(f" · masking {summary}")
        self.query_one("#fate-legend").display = self.masking
        from mlm_tui.chunking import decode

        body.update(chunk_text(lambda part: decode(self.tokenizer, part), ids, special, fates))
        title.update(head)

    def _preview(self, ids: list[int]) -> tuple[list[tuple[str, str] | None], str]:
        """What the collator would do to this chunk, position by position: the same rule and seeded
        generator as training's (`masking.mask_batch`), so what is shown is what it draws."""
        import torch

        from mlm_tui.chunking import decode
        from mlm_tui.masking import IGNORE, generator_for, mask_batch

        batch = torch.tensor([ids])
        inputs, labels = mask_batch(batch, self.tables, self.mlm_probability, self.whole_word,
                                    generator_for(self.seed, self.index))
        fates: list[tuple[str, str] | None] = []
        for original, new, label in zip(ids, inputs[0].tolist(), labels[0].tolist(), strict=True):
            if label == IGNORE:
                fates.append(None)
            elif new == self.tables.mask_id:
                fates.append(("mask", ""))
            elif new == original:
                fates.append(("kept", ""))
            else:
                fates.append(("random", decode(self.tokenizer, [new]).strip() or f"#{new}"))
        count = {fate: sum(1 for f in fates if f and f[0] == fate) for fate in ("mask", "random", "kept")}
        n = sum(count.values())
        unit = "whole words" if self.whole_word else "tokens"
        summary = (f"{n} of {len(ids)} tokens ({self.mlm_probability:.0%} of {unit}): {count['mask']} → "
                   f"[MASK], {count['random']} random, {count['kept']} kept · seed {self.seed}")
        return fates, summary

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
            if self.corpus is not None:
                self.open(self.corpus, value)
            else:
                self.tokenizer_ref, self.tokenizer = value, None

        self.app.push_screen(PromptScreen("Tokenizer of model (directory, run id, starter or hub id)",
                                          self.tokenizer_ref, paths=True), change)

    def action_text_field(self) -> None:
        if not self._ready_for_keys() or self.corpus is None:
            return
        from mlm_tui.app.prompt import PromptScreen

        corpus = self.corpus

        def change(value: str | None) -> None:
            if value:
                self.open(corpus, text_field=value)

        self.app.push_screen(PromptScreen("Column that holds the text", self.text_field), change)

    def corpus_path_hint(self) -> str:
        """Where the open-corpus prompt starts: the open corpus, else the current folder."""
        return self.corpus or (str(Path.cwd()) + "/")
