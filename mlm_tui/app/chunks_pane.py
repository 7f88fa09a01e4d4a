"""The Chunks pane: open a corpus, see per-split stats, browse the chunks the model will train on.

Tokenizing runs in a worker with a progress bar (the engine caches token arrays, so reopening is fast).
Chunks read as `mlm-tui chunks --show` prints them (the tokenizer's own decoding), with `[CLS]`/`[SEP]`
highlighted (and, with the tokenizer of a run that extended its vocabulary, the tokens it added), and
the collator's masking can be previewed with the same (seed, step) draws training uses. The tokenizer is
that of Fill's model, and follows it when another is loaded there (a run that extended its vocabulary
chunks its corpus otherwise), until the user picks another with `t`.

A corpus being opened never mixes with the one on show: the pane keeps showing the open corpus, under
its own name, until the new one is ready; a failure leaves it as it was. The open corpus and the masking
settings are the app's (`shared`): the pane posts what it opened or changed, and shows what it is given.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from mlm_tui.app.render import WORD_STYLE, chunk_text, fate_legend, new_token_legend, short_ref
from mlm_tui.app.shared import CorpusOpened, Masking, MaskingChanged, OpenCorpus
from mlm_tui.errors import MissingTextField, told
from mlm_tui.run_settings import label as form_label
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    import numpy as np

    from mlm_tui.chunking import TokenizedSplit
    from mlm_tui.vocab import VocabReport, WordStat


class TokenizeProgress(Message):
    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total


class CorpusReady(Message):
    def __init__(self, request: int, tokenizer: Any, tables: Any, splits: dict[str, TokenizedSplit] | None,
                 error: str | None, columns: list[str] | None = None, added: frozenset[int] = frozenset()
                 ) -> None:
        super().__init__()
        self.request, self.tokenizer, self.tables = request, tokenizer, tables
        self.splits, self.error, self.columns, self.added = splits, error, columns, added


def named(name: str) -> str:
    """A setting as this pane's messages name it: the text column by its key here, the others by their
    Train form labels (never the CLI's flags)."""
    return "the Text column key (f)" if name == "text_field" else form_label(name)


@dataclass(frozen=True)
class FoundWord:
    """A word looked up from the Words pane: where it begins in each split's chunks, and the chunks that
    hold it, in split order (what n and p step through)."""

    word: str
    length: int  # its tokens
    at: dict[str, np.ndarray]  # token positions, per split
    places: list[tuple[str, int]]  # (split, chunk index)

    @classmethod
    def of(cls, word: WordStat, report: VocabReport, chunk_size: int) -> FoundWord:
        import numpy as np

        at = report.occurrences(word, chunk_size)
        places = [(name, int(chunk)) for name, found in at.items()
                  for chunk in np.unique(found // chunk_size)]
        return cls(word.word, len(word.ids), at, places)

    def marked(self, split: str, index: int, chunk_size: int) -> set[int]:
        """The positions in chunk `index` of `split` that are the word's tokens."""
        start = index * chunk_size
        found = self.at[split]
        begins = found[(found >= start) & (found < start + chunk_size)] - start
        return {int(b) + k for b in begins for k in range(self.length) if b + k < chunk_size}


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
        Binding("right", "move(1)", "Next", tooltip="next chunk"),
        Binding("left", "move(-1)", "Prev", tooltip="previous chunk"),
        Binding("n", "step(1)", "Next", show=False,
                tooltip="next chunk; after enter on a word in Words, the next chunk that holds it"),
        Binding("p", "step(-1)", "Prev", show=False,
                tooltip="previous chunk; after a word in Words, the previous one that holds it"),
        Binding("escape", "leave_word", "Every chunk", tooltip="n/p step through every chunk again"),
        Binding("m", "toggle_masking", "Mask", tooltip="preview what the collator does to the chunk"),
        Binding("g", "jump", "Jump", tooltip="go to chunk number…"),
        Binding("o", "app.open_corpus", "Open", show=False, tooltip="open another corpus"),
        Binding("home", "move(-1000000000)", "First", show=False, tooltip="first chunk"),
        Binding("end", "move(1000000000)", "Last", show=False, tooltip="last chunk"),
        Binding("s", "next_split", "Split", show=False, tooltip="next split (train, test, …)"),
        Binding("r", "reroll", "Re-roll", show=False,
                tooltip="another masking draw (next seed, the Train form's too)"),
        Binding("w", "toggle_whole_word", "Words", show=False,
                tooltip="whole-word masking on/off (the Train form's too)"),
        Binding("c", "chunk_size", "Size", show=False, tooltip="chunk size… (the Train form's too)"),
        Binding("t", "tokenizer", "Tokenizer", show=False, tooltip="another model's tokenizer…"),
        Binding("f", "text_field", "Text column", show=False, tooltip="the column that holds the text…"),
    ]

    def __init__(self, tokenizer_ref: str, corpus: str | None, text_field: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._start = (corpus, text_field)  # the corpus given on the command line, opened on mount
        self.opened: OpenCorpus | None = None  # the corpus on show, as the app gave it
        self.opening: tuple[str, str, str] | None = None  # (corpus, text field, tokenizer) being read
        self._request = 0
        self.tokenizer_ref = tokenizer_ref  # the tokenizer the next corpus is opened with
        self.model_ref = tokenizer_ref  # Fill's model, which the tokenizer follows unless picked with `t`
        self.follows_model = True
        self.split = ""
        self.index = 0
        self.masking = Masking()  # as the app gave it
        self.preview = False  # the masking preview is on
        self.found: FoundWord | None = None  # the word the Words pane looked up, while n/p step through it
        # A corpus that did not open for want of its text column: (corpus, column asked, text columns)
        self.unpicked: tuple[str, str, list[str]] | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("No corpus open: press o (or ctrl+o) to open one."), id="corpus-line")
        yield ProgressBar(id="tokenize-progress", show_eta=False)
        table: DataTable[str] = DataTable(id="stats", cursor_type="none", zebra_stripes=True)
        table.can_focus = False
        yield table
        yield Static(id="chunk-title")
        yield Static(fate_legend(), id="fate-legend")
        yield Static(id="new-token-legend")
        with ChunkView(id="chunk-box"):
            yield Static(id="chunk-body")

    def on_mount(self) -> None:
        self.query_one("#tokenize-progress").display = False
        table = self.query_one("#stats", DataTable)
        table.add_columns("split", "documents", "tokens", "chunks", "dropped tokens")
        table.display = False
        self.query_one("#fate-legend").display = False
        self.query_one("#new-token-legend").display = False
        corpus, text_field = self._start
        if corpus:
            self.open(corpus, text_field=text_field)

    @property
    def splits(self) -> dict[str, TokenizedSplit]:
        return self.opened.splits if self.opened is not None else {}

    @property
    def chunk_size(self) -> int:
        return self.masking.chunk_size

    def use_corpus(self, opened: OpenCorpus) -> None:
        """Show the corpus the app holds (the one this pane just opened)."""
        self.opened = opened
        self.found = None
        self.tokenizer_ref = opened.tokenizer_ref
        if self.split not in opened.splits:
            self.split = "train" if "train" in opened.splits else next(iter(opened.splits))
        self.index = 0
        if self.is_mounted:
            self.show()

    def use_masking(self, masking: Masking) -> None:
        """Show chunks and their masking as the app's settings say (the Train form's, or this pane's keys)."""
        if masking.chunk_size != self.masking.chunk_size:
            self.index = 0
            self.found = None  # its chunks are other chunks now
        self.masking = masking
        if self.is_mounted:
            self.show()

    def follow_model(self, ref: str) -> None:
        """Fill's model is now `ref`: tokenize with its tokenizer, the corpus on show (or being opened)
        again, unless the user picked a tokenizer of their own with `t`."""
        self.model_ref = ref
        if not self.follows_model or ref == (self.opening[2] if self.opening else self.tokenizer_ref):
            return
        corpus = self.opening[0] if self.opening else self.opened.corpus if self.opened else None
        if corpus is not None and self.is_mounted:
            self.open(corpus, ref, self.opening[1] if self.opening else None)
        else:
            self.tokenizer_ref = ref

    # -- opening --------------------------------------------------------------------------------------
    def open(self, corpus: str, tokenizer_ref: str | None = None, text_field: str | None = None) -> None:
        """Tokenize `corpus` with the tokenizer of `tokenizer_ref` (by default the current one).

        What is on show stays until the corpus is ready: only then do name, stats and chunks change.
        """
        opened = self.opened
        same_corpus = opened.text_field if opened is not None and corpus == opened.corpus else "text"
        field = text_field or same_corpus
        ref = tokenizer_ref or self.tokenizer_ref
        tokenizer = opened.tokenizer if opened is not None and ref == opened.tokenizer_ref else None
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
            from mlm_tui.vocab_extend import added_ids

            added = added_ids(tokenizer_ref)
        except MissingTextField as exc:
            self.post_message(CorpusReady(request, None, None, None, told(exc, named), exc.columns))
            return
        except Exception as exc:  # a bad corpus or tokenizer is a message in the app, never a crash
            self.post_message(CorpusReady(request, None, None, None, told(exc, named)))
            return
        if not worker.is_cancelled:
            self.post_message(CorpusReady(request, tokenizer, tables, splits, None, added=added))

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
            self.unpicked = (corpus, field, event.columns) if event.columns is not None else None
            if event.columns:
                self._pick_text_field(corpus, field, event.columns)
            return
        self.unpicked = None
        self.post_message(CorpusOpened(OpenCorpus(corpus, field, ref, event.tokenizer, event.tables,
                                                  event.splits, event.added)))

    def _pick_text_field(self, corpus: str, field: str, columns: list[str]) -> None:
        from mlm_tui.app.prompt import PickScreen

        def chosen(column: str | None) -> None:
            if column is not None:
                self.open(corpus, text_field=column)

        self.app.push_screen(PickScreen(f"Which column of {short_ref(corpus)} holds the text? (not "
                                        f"{field!r})", columns), chosen)

    # -- showing --------------------------------------------------------------------------------------
    def _show_corpus_line(self) -> None:
        """The corpus on show under its own name, and the one being opened, if any."""
        line = Text()
        opened = self.opened
        if opened is not None:
            field = f" · column {opened.text_field}" if opened.text_field != "text" else ""
            line.append(f"{short_ref(opened.corpus)}{field} · tokenizer {short_ref(opened.tokenizer_ref)} · "
                        f"chunks of {self.chunk_size} tokens")
        if self.opening is not None:
            line.append(("  ·  " if opened else "") + f"opening {short_ref(self.opening[0])} "
                        f"(tokenizer {short_ref(self.opening[2])}): reading and tokenizing…", style="italic")
        if not line:
            line.append("No corpus open: press o (or ctrl+o) to open one.")
        self.query_one("#corpus-line", Static).update(line)

    def show(self) -> None:
        """Stats for every split and the current chunk, for the current chunk size and settings."""
        if self.opened is None:
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
        """Go to the first chunk holding `word` (from the Words pane), in this split if it has one; n and p
        then step through every chunk that holds it."""
        found = FoundWord.of(word, report, self.chunk_size)
        if not found.places:
            self.app.notify(f"No whole chunk of {self.chunk_size} tokens holds {word.word!r}.", markup=False)
            return
        self.found = found
        self.split, self.index = next((p for p in found.places if p[0] == self.split), found.places[0])
        self.refresh_bindings()
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
        opened = self.opened
        assert opened is not None
        special = [bool(opened.tables.special[i]) for i in ids]
        head = Text(f"{self.split} chunk {self.index + 1:,} of {len(chunks):,}", style="bold")
        marked: set[int] = set()
        if (found := self.found) is not None:
            place = (self.split, self.index)
            word = Text(printable(found.word), style=WORD_STYLE)
            if place in found.places:
                marked = found.marked(self.split, self.index, self.chunk_size)
                head.append(f" · chunk {found.places.index(place) + 1:,} of {len(found.places):,} holding ")
            else:
                head.append(" · not one of the chunks holding ")
            head.append("'").append_text(word).append("'")
            head.append(" · n/p: the others", style="dim")  # esc (every chunk) is in the footer
        fates = None
        if self.preview:
            fates, summary = self._preview(ids)
            head.append(f"\nmasking {summary}")  # its own line: never wrapped mid-phrase at 80 columns
        self.query_one("#fate-legend").display = self.preview
        legend = self.query_one("#new-token-legend", Static)
        legend.display = bool(opened.added)
        if opened.added:
            legend.update(new_token_legend(len(opened.added)))
        from mlm_tui.chunking import decode

        body.update(chunk_text(lambda part: decode(opened.tokenizer, part), ids, special, fates, marked,
                               opened.added))
        title.update(head)

    def _preview(self, ids: list[int]) -> tuple[list[tuple[str, str] | None], str]:
        """What the collator would do to this chunk, position by position: the same rule and seeded
        generator as training's (`masking.mask_batch`), so what is shown is what it draws."""
        import torch

        from mlm_tui.chunking import decode
        from mlm_tui.masking import IGNORE, generator_for, mask_batch

        opened, masking = self.opened, self.masking
        assert opened is not None
        batch = torch.tensor([ids])
        inputs, labels = mask_batch(batch, opened.tables, masking.mlm_probability, masking.whole_word_mask,
                                    generator_for(masking.seed, self.index))
        fates: list[tuple[str, str] | None] = []
        for original, new, label in zip(ids, inputs[0].tolist(), labels[0].tolist(), strict=True):
            if label == IGNORE:
                fates.append(None)
            elif new == opened.tables.mask_id:
                fates.append(("mask", ""))
            elif new == original:
                fates.append(("kept", ""))
            else:
                fates.append(("random", decode(opened.tokenizer, [new]).strip() or f"#{new}"))
        count = {fate: sum(1 for f in fates if f and f[0] == fate) for fate in ("mask", "random", "kept")}
        n = sum(count.values())
        unit = "whole words" if masking.whole_word_mask else "tokens"
        summary = (f"{n} of {len(ids)} ({masking.mlm_probability:.0%} of {unit}): {count['mask']} → "
                   f"[MASK], {count['random']} random, {count['kept']} kept · seed {masking.seed}")
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

    def action_step(self, step: int) -> None:
        """The next (or previous) chunk; after a word from the Words pane, the next one holding it."""
        found = self.found
        if found is None:
            self.action_move(step)
            return
        order = list(self.splits)
        here = (order.index(self.split), self.index)
        keys = [(order.index(name), index) for name, index in found.places]
        i = bisect.bisect_right(keys, here) if step > 0 else bisect.bisect_left(keys, here) - 1
        if not 0 <= i < len(keys):
            self.app.notify(f"No {'later' if step > 0 else 'earlier'} chunk holds {found.word!r} "
                            f"({len(keys):,} do).", timeout=3, markup=False)
            return
        self.split, self.index = found.places[i]
        self._show_chunk()

    def action_leave_word(self) -> None:
        self._leave_word()
        self._show_chunk()

    def _leave_word(self) -> None:
        self.found = None
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_word":
            return self.found is not None  # escape does nothing else here; the footer shows it only then
        return True

    def action_next_split(self) -> None:
        if self._ready_for_keys():
            names = list(self.splits)
            if len(names) == 1:
                self.app.notify(f"This corpus has one split: {self.split} (a test split is held out of it "
                                "when training).", timeout=4)
                return
            self.split = names[(names.index(self.split) + 1) % len(names)]
            self.index = 0
            self._show_chunk()

    def action_toggle_masking(self) -> None:
        if self._ready_for_keys():
            self.preview = not self.preview
            self._show_chunk()

    def action_toggle_whole_word(self) -> None:
        if self._ready_for_keys():
            self.preview = True
            self.post_message(MaskingChanged(replace(self.masking,
                                                     whole_word_mask=not self.masking.whole_word_mask)))

    def action_reroll(self) -> None:
        if self._ready_for_keys():
            self.preview = True
            self.post_message(MaskingChanged(replace(self.masking, seed=self.masking.seed + 1)))

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
            if self.opened is not None:
                from mlm_tui.chunking import model_max_length

                limit = model_max_length(self.opened.tokenizer)
                if limit and int(value) > limit:
                    self.app.notify(f"{value} is beyond this tokenizer's maximum of {limit} tokens",
                                    severity="warning")
                    return
            self.post_message(MaskingChanged(replace(self.masking, chunk_size=int(value))))

        self.app.push_screen(PromptScreen("Chunk size (tokens)", str(self.chunk_size)), change)

    def action_tokenizer(self) -> None:
        from mlm_tui.app.prompt import PromptScreen

        def change(value: str | None) -> None:
            if value is None:
                return
            self.follows_model = value == self.model_ref  # another model's: kept when Fill's changes
            if self.opened is not None:
                self.open(self.opened.corpus, value)
            else:
                self.tokenizer_ref = value

        self.app.push_screen(PromptScreen("Tokenizer of model (directory, run id, starter or hub id)",
                                          self.tokenizer_ref, paths=True), change)

    def action_text_field(self) -> None:
        """Pick the corpus's text column: among the text columns of one that did not open for want of it,
        else by name for the open corpus."""
        if self.unpicked is not None and self.unpicked[2]:
            self._pick_text_field(*self.unpicked)
            return
        if not self._ready_for_keys() or self.opened is None:
            return
        from mlm_tui.app.prompt import PromptScreen

        corpus = self.opened.corpus

        def change(value: str | None) -> None:
            if value:
                self.open(corpus, text_field=value)

        self.app.push_screen(PromptScreen("Column that holds the text", self.opened.text_field), change)

    def corpus_path_hint(self) -> str:
        """Where the open-corpus prompt starts: the open corpus, else the current folder."""
        return self.opened.corpus if self.opened is not None else str(Path.cwd()) + "/"
