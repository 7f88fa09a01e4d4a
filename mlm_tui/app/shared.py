"""What the panes share through the app, and the requests they make of it.

The app holds the open corpus and the masking settings once; the panes that show them are given them
(`use_corpus`, `use_masking`) and ask for a change by message, never by calling the app or another pane
by name. So the Chunks preview masks exactly as the Train form says, and a chunk size changed in Chunks is
the one the next run takes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from textual.message import Message

from mlm_tui.run_settings import TrainConfig

if TYPE_CHECKING:
    from mlm_tui.chunking import TokenizedSplit
    from mlm_tui.vocab import VocabReport, WordStat


@dataclass(frozen=True)
class Masking:
    """The settings that decide what a chunk looks like to the model: named as in `TrainConfig`, with its
    defaults, so the form's fields map onto them one to one."""

    chunk_size: int = TrainConfig.__dataclass_fields__["chunk_size"].default
    mlm_probability: float = TrainConfig.__dataclass_fields__["mlm_probability"].default
    whole_word_mask: bool = TrainConfig.__dataclass_fields__["whole_word_mask"].default
    seed: int = TrainConfig.__dataclass_fields__["seed"].default


MASKING = tuple(f.name for f in fields(Masking))  # the form fields that are masking settings


@dataclass(frozen=True)
class OpenCorpus:
    """A corpus Chunks opened: its tokens, and the tokenizer they were read with."""

    corpus: str
    text_field: str
    tokenizer_ref: str
    tokenizer: Any
    tables: Any  # masking.TokenTables of the tokenizer
    splits: dict[str, TokenizedSplit]
    added: frozenset[int] = frozenset()  # the ids a vocabulary extension added (`vocab_extend.added_ids`)


class CorpusOpened(Message):
    """A corpus opened successfully: the app holds it and gives it to every pane that shows it."""

    def __init__(self, opened: OpenCorpus) -> None:
        super().__init__()
        self.opened = opened


class MaskingChanged(Message):
    """A pane changed a masking setting (the form's fields, Chunks' size, whole-word and re-roll keys)."""

    def __init__(self, masking: Masking) -> None:
        super().__init__()
        self.masking = masking


class LoadModel(Message):
    """Load a model into Fill as its main or compare model (and show Fill)."""

    def __init__(self, ref: str, role: str) -> None:
        super().__init__()
        self.ref, self.role = ref, role


class FillSentence(Message):
    """Show Fill with this sentence typed in and, when `compare` (a run id) is given and is not Fill's
    main model, that run's model as the compare model (what a run learned: a probe's sentence)."""

    def __init__(self, sentence: str, compare: str | None = None) -> None:
        super().__init__()
        self.sentence, self.compare = sentence, compare


class RunsChanged(Message):
    """A run was started or deleted here: look at the run store now, not at the next tick."""


class ShowWord(Message):
    """Show the Chunks pane at a chunk that holds the word (from the Words pane)."""

    def __init__(self, word: WordStat, report: VocabReport) -> None:
        super().__init__()
        self.word, self.report = word, report
