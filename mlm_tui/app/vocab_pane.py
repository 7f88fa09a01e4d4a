"""The Vocabulary pane: why the corpus open in Chunks needs adapting, word by word.

The words are grouped as whole-word masking groups them and counted over the whole corpus, from the token
ids the Chunks pane already holds (`vocab.vocab_report`, in a worker): the corpus figures beside the
general-English sample's, and a table of every word seen often enough, searchable and sortable, from
which enter jumps to the chunks that hold a word.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from mlm_tui.app.render import short_ref
from mlm_tui.app.shared import ShowWord
from mlm_tui.app.widgets import TextBox
from mlm_tui.errors import first_line
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.app.shared import OpenCorpus
    from mlm_tui.vocab import VocabReport, WordStat

SORTS = {"need": "count × (pieces − 1)", "count": "count", "pieces": "pieces", "word": "word"}
SHOWN = 500  # rows in the table; the search looks through every word


class VocabReady(Message):
    def __init__(self, request: int, report: VocabReport | None, error: str | None) -> None:
        super().__init__()
        self.request, self.report, self.error = request, report, error


class WordsTable(DataTable[str]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "jump", "Chunks", tooltip="show the chunks that hold the word"),
        Binding("slash", "search", "Search", tooltip="search the words"),
        Binding("s", "sort", "Sort", tooltip="sort by need, count, pieces or word"),
    ]

    def action_jump(self) -> None:
        self.query_ancestor(VocabPane).jump()

    def action_search(self) -> None:
        self.query_ancestor(VocabPane).query_one("#word-search").focus()

    def action_sort(self) -> None:
        self.query_ancestor(VocabPane).next_sort()


class VocabPane(Vertical):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report: VocabReport | None = None
        self.words: list[WordStat] = []
        self.sort = "need"
        self._request = 0
        self._opened: OpenCorpus | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Open a corpus (ctrl+o): its words are counted here."), id="vocab-figures")
        yield TextBox(placeholder="search words (/ from the table)", id="word-search")
        table: WordsTable = WordsTable(id="word-table", cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        table = self.query_one("#word-table", WordsTable)
        table.add_column("word", key="word")
        table.add_column("count", key="count")
        table.add_column("pieces", key="pieces")
        table.add_column("need", key="need")
        if self._opened is not None:  # opened before this pane mounted
            self.use_corpus(self._opened)

    def use_corpus(self, opened: OpenCorpus) -> None:
        """Count the words of the corpus Chunks just opened (its token ids are already in memory)."""
        self._opened = opened
        if not self.is_mounted:
            return
        self._request += 1
        self.query_one("#vocab-figures", Static).update(Text(f"{short_ref(opened.corpus)}: counting words…"))
        self._worker(self._request, opened.splits, opened.tokenizer, opened.corpus, opened.tokenizer_ref)

    @work(thread=True, exclusive=True, group="vocab")
    def _worker(self, request: int, splits: Any, tokenizer: Any, corpus: str, model: str) -> None:
        from textual.worker import get_current_worker

        from mlm_tui.vocab import vocab_report

        worker = get_current_worker()
        try:
            report = vocab_report(splits, tokenizer, corpus, model, cancelled=lambda: worker.is_cancelled)
        except Exception as exc:  # a message in the pane, never a crash
            self.post_message(VocabReady(request, None, first_line(exc)))
            return
        self.post_message(VocabReady(request, report, None))

    @on(VocabReady)
    def _ready(self, event: VocabReady) -> None:
        if event.request != self._request:
            return
        if event.report is None:
            self.query_one("#vocab-figures", Static).update(Text(f"could not count words: {event.error}"))
            return
        self.report = event.report
        self.words = event.report.words()
        self._figures()
        self.show_words()

    def _figures(self) -> None:
        assert self.report is not None
        f, ref = self.report.figures, self.report.reference
        text = Text(f"{printable(short_ref(self.report.corpus))}: {f.running_words:,} running words, "
                    f"{f.distinct_words:,} distinct, {f.tokens:,} tokens\n", style="bold")

        def versus(label: str, mine: float, general: float | None, percent: bool = True) -> None:
            shown = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.2f}")
            if label != "fertility":
                text.append(" · ")
            text.append(f"{label} {shown(mine)}")
            if general is not None:
                text.append(f" vs {shown(general)} general", style="dim")

        versus("fertility", f.fertility, ref.fertility if ref else None, percent=False)
        versus("cut in 2+ pieces", f.split_2plus, ref.split_2plus if ref else None)
        versus("3+", f.split_3plus, ref.split_3plus if ref else None)
        versus("unknown", f.unknown_share, ref.unknown_share if ref else None)
        text.append(f"\nwords seen {self.report.min_count}+ times, by {SORTS[self.sort]} · enter: chunks "
                    "holding it · /: search · s: sort", style="dim")
        self.query_one("#vocab-figures", Static).update(text)

    @on(Input.Changed, "#word-search")
    def show_words(self) -> None:
        query = self.query_one("#word-search", Input).value.strip().lower()
        words = [w for w in self.words if query in w.word.lower()] if query else self.words
        key = {"need": lambda w: (-w.need, -w.count), "count": lambda w: -w.count,
               "pieces": lambda w: (-len(w.pieces), -w.count), "word": lambda w: w.word}[self.sort]
        table = self.query_one("#word-table", WordsTable)
        table.clear()
        for n, word in enumerate(sorted(words, key=key)[:SHOWN]):  # type: ignore[arg-type]
            table.add_row(printable(word.word), f"{word.count:,}", printable(" ".join(word.pieces)),
                          f"{word.need:,}", key=str(n))
        self._shown = sorted(words, key=key)[:SHOWN]  # type: ignore[arg-type]

    @on(Input.Submitted, "#word-search")
    def _searched(self) -> None:
        self.query_one("#word-table").focus()

    def next_sort(self) -> None:
        names = list(SORTS)
        self.sort = names[(names.index(self.sort) + 1) % len(names)]
        if self.report is not None:
            self._figures()
        self.show_words()

    def jump(self) -> None:
        """Show the Chunks pane at the first chunk that holds the selected word."""
        table = self.query_one("#word-table", WordsTable)
        if self.report is None or not table.row_count:
            return
        word = self._shown[table.cursor_row]
        self.post_message(ShowWord(word, self.report))
