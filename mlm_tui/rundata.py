"""The text a run trains and measures on, chosen in one place.

Training (`training.FineTune`, a resume too) and the views of a finished run (`learned.run_learned`) all
read the run's corpus with `run_splits` (its hub options: subset, splits, streaming, and a stream's
held-out documents), pick its chunks with `select_chunks` and mask its test chunks with `fixed_evalset`, so
the test set a run's perplexity was measured on can be rebuilt later exactly, chunk for chunk and mask for
mask.

What a run cost (issue 13, section 3) is its perplexity on general text before and after: at most
`GENERAL_CHUNKS` chunks of the general-English sample that ships with the package (`vocab.REFERENCE`),
or of the run's own `--general` corpus, masked as its test chunks are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlm_tui.errors import FieldError, UsageError

if TYPE_CHECKING:
    from mlm_tui.chunking import Progress, TokenizedSplit
    from mlm_tui.evaluate import EvalSet
    from mlm_tui.masking import TokenTables
    from mlm_tui.run_settings import TrainConfig

TEST_FRACTION = 0.1  # of the documents, held out when a corpus has no test split of its own
GENERAL_CHUNKS = 32  # enough for a stable figure, cheap next to the run's own test set
GENERAL_SEED = 0  # the same general chunks for every run of a chunk size, whatever its seed


@dataclass
class RunChunks:
    train: TokenizedSplit
    test: TokenizedSplit  # the corpus's test (or validation) split, or documents held out of train
    held_out: bool  # True when `test` was held out of the train split here
    train_chunks: np.ndarray  # what the run trains on (down-sampled to `train_size`)
    test_chunks: np.ndarray  # what its perplexity is measured on (down-sampled to the test size)


def absolute_paths(config: TrainConfig) -> tuple[TrainConfig, dict[str, str]]:
    """The config with its corpus and general text as absolute paths where they name local files, and the
    values as given that this changed. A run records where its text is, so that a resume or `runs
    learned` reads it again from any folder; what the user typed is what it shows (`RunInfo.corpus`)."""
    from dataclasses import replace

    given = {}
    for name in ("corpus", "general"):
        value = getattr(config, name)
        if value is None or not Path(value).expanduser().exists():
            continue  # a hub dataset, or a missing path refused by name later
        absolute = os.path.abspath(os.path.expanduser(value))
        if absolute != value:
            given[name] = value
    return replace(config, **{name: os.path.abspath(os.path.expanduser(getattr(config, name)))
                              for name in given}), given


def run_splits(config: TrainConfig, tokenizer: Any, test_size: int, *, progress: Progress | None = None,
               cancelled: Callable[[], bool] | None = None, status: Callable[[str], None] | None = None
               ) -> dict[str, TokenizedSplit]:
    """The run's corpus, tokenized as the run read it. `test_size` is the run's resolved test size (see
    `select_chunks`): a stream without a test split holds out that many chunks' worth of documents."""
    from mlm_tui.chunking import tokenize_corpus
    from mlm_tui.corpus import HubOptions

    hub = HubOptions(config.subset, config.train_split, config.test_split, config.streaming)
    return tokenize_corpus(config.corpus, tokenizer, config.text_field, progress=progress,
                           cancelled=cancelled, status=status, hub=hub,
                           holdout_tokens=test_size * config.chunk_size)


def train_and_test(splits: dict[str, TokenizedSplit], seed: int
                   ) -> tuple[TokenizedSplit, TokenizedSplit, bool]:
    """The run's train and test splits, and whether the test split was held out of train here."""
    train = splits.get("train") or next(iter(splits.values()))
    test = splits.get("test") or splits.get("validation")
    held_out = test is None or test is train
    if held_out:
        train, test = train.split_documents(TEST_FRACTION, seed)
    assert test is not None
    return train, test, held_out


def training_split(splits: dict[str, TokenizedSplit], seed: int) -> TokenizedSplit:
    """The documents a run trains on (before down-sampling): what may choose words to add to its
    vocabulary (`vocab_extend`), as no test document may."""
    return train_and_test(splits, seed)[0]


def select_chunks(splits: dict[str, TokenizedSplit], config: TrainConfig, test_size: int) -> RunChunks:
    """The run's train and test chunks from its tokenized corpus. `test_size` is the test size resolved
    for the run's device (`TrainConfig.on_device`), or the one it recorded in its plan."""
    train, test, held_out = train_and_test(splits, config.seed)
    train_chunks, test_chunks = train.chunks(config.chunk_size), test.chunks(config.chunk_size)
    for name, split, chunks in (("train", train, train_chunks), ("test", test, test_chunks)):
        if len(chunks) == 0:
            raise FieldError("chunk_size", f"the {name} split has {split.tokens} tokens: fewer than one "
                             f"chunk of {config.chunk_size}; lower the {{field}} or add text")
    rng = np.random.default_rng(config.seed)  # one generator, train first: the test sample depends on it
    if config.train_size is not None and config.train_size < len(train_chunks):
        train_chunks = train_chunks[np.sort(rng.choice(len(train_chunks), config.train_size, replace=False))]
    if test_size < len(test_chunks):
        test_chunks = test_chunks[np.sort(rng.choice(len(test_chunks), test_size, replace=False))]
    return RunChunks(train, test, held_out, np.ascontiguousarray(train_chunks),
                     np.ascontiguousarray(test_chunks))


def fixed_evalset(chunks: np.ndarray, tables: TokenTables, config: TrainConfig) -> EvalSet:
    """Chunks masked once, as the run masks its test chunks for every perplexity it measures."""
    from mlm_tui.evaluate import EvalSet

    return EvalSet.build(chunks, tables, config.mlm_probability, whole_word=config.whole_word_mask)


def general_name(config: TrainConfig) -> str | None:
    """What the run measures its general perplexity on, in words; None when it does not."""
    from mlm_tui.vocab import REFERENCE_NAME

    if config.no_general:
        return None
    return config.general if config.general is not None else REFERENCE_NAME


def general_evalset(config: TrainConfig, tokenizer: Any, tables: TokenTables) -> EvalSet:
    """At most GENERAL_CHUNKS chunks of the run's general text (seeded), masked as its test chunks are.
    A `--general` corpus counts whole, every split; it is read with the run's text field."""
    from mlm_tui.chunking import tokenize_corpus
    from mlm_tui.vocab import reference_split

    if config.general is None:
        chunks = reference_split(tokenizer).chunks(config.chunk_size)
    else:
        try:
            splits = tokenize_corpus(config.general, tokenizer, config.text_field)
        except UsageError as exc:  # the corpus's own message, named as the general text's
            raise FieldError("general", f"{{field}} {config.general}: {exc}") from None
        chunks = np.concatenate([s.chunks(config.chunk_size) for s in splits.values()])
    if len(chunks) == 0:
        raise FieldError("general", f"{{field}} {config.general}: shorter than one chunk of "
                         f"{config.chunk_size} tokens")
    if len(chunks) > GENERAL_CHUNKS:
        pick = np.random.default_rng(GENERAL_SEED).choice(len(chunks), GENERAL_CHUNKS, replace=False)
        chunks = chunks[np.sort(pick)]
    if bool(tables.special[np.asarray(chunks, dtype=np.int64)].all()):
        raise FieldError("general", f"{{field}} {config.general}: every token of it is special or unknown "
                         "to the model's tokenizer, so none can be masked; give text in the model's language")
    try:
        return fixed_evalset(np.ascontiguousarray(chunks), tables, config)
    except UsageError as exc:  # no masked token: its message is about the run's test set
        raise FieldError("general", f"{{field}} {general_name(config)}: none of its "
                         f"{min(len(chunks), GENERAL_CHUNKS)} chunks got a masked token at the run's mask "
                         "probability; raise it, or give more general text") from exc
