"""The vocabulary view: how the tokenizer cuts a corpus into words and pieces, beside general English.

The course's motive for domain adaptation is that a domain's important words are rare for a general model
and get split into many pieces. This module measures that on the user's own corpus. Words are the groups
whole-word masking masks together (a token that starts a word per the vocabulary's word-start table,
and the continuation pieces after it), so "a word in 3 pieces" here is exactly what the collator treats
as one word. Special tokens other than the unknown token are not text and belong to no word; the
unknown token is one piece of text the vocabulary could not spell (a word of its own, as the collator
groups it).

Counting runs on the cached token ids with numpy, a block of documents at a time, so it costs a few
passes over the token array and holds a few times one block: one-piece words are counted by token id
(`bincount`), longer words by a 64-bit hash of their piece sequence.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlm_tui.chunking import Progress, TokenizedSplit, backend_of
from mlm_tui.corpus import HubOptions
from mlm_tui.errors import UsageError

REFERENCE = Path(__file__).resolve().parent / "data" / "general_english.txt.gz"
REFERENCE_NAME = "The Devil's Dictionary"
BLOCK_TOKENS = 1 << 19  # documents are counted a block of about this many tokens at a time

_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd multipliers of a splitmix-style mix: pieces -> 64-bit values
_MIX = np.uint64(0xBF58476D1CE4E5B9)
_LEN = np.uint64(0x94D049BB133111EB)


WordMarker = tuple[str, str]  # ("continues", "##"): pieces that continue a word; ("starts", "▁"): word starts


def word_marker(tokenizer: Any) -> WordMarker | None:
    """How a tokenizer marks words, read from its model, decoder and pre-tokenizer (the Rust tokenizer's
    spec); None when it marks neither.

    WordPiece marks continuations with its `continuing_subword_prefix` (`##ing`, whatever the prefix),
    as a BPE model with one does; byte-level BPE marks word starts with the space byte's `Ġ`, SentencePiece
    (Unigram or BPE, the Metaspace pre-tokenizer, or a decoder that turns `▁` into spaces) with `▁`. A
    vocabulary with few such pieces is still marked so: the tokenizer's design decides, not a count.
    """
    backend = backend_of(tokenizer)
    if backend is None:  # a Python tokenizer: BERT's has a WordPiece part, SentencePiece ones use ▁
        if hasattr(tokenizer, "wordpiece_tokenizer"):
            return ("continues", "##")
        return ("starts", "▁") if hasattr(tokenizer, "sp_model") else None
    model = type(backend.model).__name__
    prefix = getattr(backend.model, "continuing_subword_prefix", None)
    if model in ("WordPiece", "BPE") and prefix:
        return ("continues", prefix)
    if model == "WordPiece":
        return ("continues", "##")  # WordPiece's default prefix
    # The decoder's and pre-tokenizer's own specs (small: not the vocabulary, as the whole spec is)
    specs = [json.loads(part.__getstate__()) for part in (backend.decoder, backend.pre_tokenizer) if part]
    for part in (c for spec in specs for c in _components(spec)):
        kind = part.get("type")
        if kind == "WordPiece" and part.get("prefix"):
            return ("continues", part["prefix"])
        if kind == "ByteLevel":
            return ("starts", "Ġ")
        if kind == "Metaspace":
            return ("starts", part.get("replacement") or "▁")
        pattern = part.get("pattern") or {}
        if kind == "Replace" and pattern.get("String") == "▁" and part.get("content") == " ":
            return ("starts", "▁")
    return None


def _components(part: Any) -> list[dict[str, Any]]:
    """A decoder or pre-tokenizer spec as a flat list (a `Sequence` holds others)."""
    if not isinstance(part, dict):
        return []
    if part.get("type") == "Sequence":
        children = part.get("decoders") or part.get("pretokenizers") or []
        return [c for child in children for c in _components(child)]
    return [part]


def word_starts(tokenizer: Any, vocab: dict[str, int], vocab_size: int) -> np.ndarray:
    """Which tokens of `vocab` start a word, by the tokenizer's own marker (`word_marker`); bool[vocab].
    A tokenizer with no marker gets every token as a word start (whole-word = token masking).
    Whole-word masking (`masking.word_start_table`) and the vocabulary view both use this one rule.
    """
    table = np.ones(vocab_size, dtype=bool)
    marker = word_marker(tokenizer)
    if marker is not None:
        role, text = marker
        for t, i in vocab.items():
            table[i] = t.startswith(text) == (role == "starts")
    return table


@dataclass
class Vocabulary:
    """What counting words needs from a tokenizer: a `transformers` tokenizer or a `ChunkTokenizer`."""

    word_start: np.ndarray  # bool[vocab]: starts a word (special tokens too, as in the collator's table)
    ignored: np.ndarray  # bool[vocab]: special tokens that stand for no text (all but the unknown token)
    unk_id: int | None
    pieces: list[str]  # id -> the token's string in the vocabulary
    tokenizer: Any

    @classmethod
    def of(cls, tokenizer: Any) -> Vocabulary:
        if hasattr(tokenizer, "all_special_ids"):  # `transformers`: the same facts the collator uses
            vocab = tokenizer.get_vocab()
            special = list(tokenizer.all_special_ids)
            unk = tokenizer.unk_token_id
        else:  # a `ChunkTokenizer`: the Rust tokenizer's own
            backend = backend_of(tokenizer)
            vocab = backend.get_vocab(with_added_tokens=True)
            special = [i for i, t in backend.get_added_tokens_decoder().items() if t.special]
            unk = _backend_unk(backend)
        vocab_size = max(vocab.values()) + 1
        word_start = word_starts(tokenizer, vocab, vocab_size)
        word_start[special] = True
        ignored = np.zeros(vocab_size, dtype=bool)
        ignored[special] = True
        if unk is not None:
            ignored[unk] = False
        pieces = [""] * vocab_size
        for t, i in vocab.items():
            pieces[i] = t
        return cls(word_start, ignored, unk, pieces, tokenizer)

    def decode(self, words: list[Sequence[int]]) -> list[str]:
        """Each word's text as the tokenizer spells it (WordPiece's `##` joined, byte-level BPE's bytes)."""
        seqs = [[int(i) for i in w] for w in words]
        backend = backend_of(self.tokenizer)
        if backend is not None:
            texts = backend.decode_batch(seqs, skip_special_tokens=False)
        else:
            texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=False)
        return [t.strip() for t in texts]


def _backend_unk(backend: Any) -> int | None:
    """The unknown token's id: WordPiece and BPE models name it (byte-level BPE usually has none); the
    Python `models.Unigram` object does not expose its `unk_id`, so that one is read from the spec."""
    unk = getattr(backend.model, "unk_token", None)
    if unk:
        return backend.token_to_id(unk)
    unk_id = json.loads(backend.to_str())["model"].get("unk_id")
    return unk_id if isinstance(unk_id, int) else None


@dataclass
class Figures:
    """How a tokenizer cuts one text: the corpus half of the view, and the reference half."""

    running_words: int
    distinct_words: int
    tokens: int  # text tokens: every token of every word (special tokens other than unknown left out)
    split_2plus_words: int
    split_3plus_words: int
    unknown_tokens: int

    @property
    def fertility(self) -> float:
        return self.tokens / self.running_words if self.running_words else 0.0

    @property
    def split_2plus(self) -> float:
        return self.split_2plus_words / self.running_words if self.running_words else 0.0

    @property
    def split_3plus(self) -> float:
        return self.split_3plus_words / self.running_words if self.running_words else 0.0

    @property
    def unknown_share(self) -> float:
        return self.unknown_tokens / self.tokens if self.tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"running_words": self.running_words, "distinct_words": self.distinct_words,
                "tokens": self.tokens, "fertility": self.fertility, "split_2plus": self.split_2plus,
                "split_3plus": self.split_3plus, "unknown_share": self.unknown_share}


@dataclass
class WordStat:
    """One distinct word: its text, how often it occurs, and the pieces (ids and strings) it is cut into."""

    word: str
    count: int
    ids: tuple[int, ...]
    pieces: list[str]

    @property
    def need(self) -> int:
        """How much adapting the word needs: each occurrence costs (pieces - 1) extra predictions."""
        return self.count * (len(self.ids) - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "count": self.count, "pieces": self.pieces}


@dataclass
class WordCounts:
    """Counts of every distinct word of a text, before any strings are made.

    One-piece words are counted per token id; longer words per hash, each hash with where one of its
    occurrences lies (split, position, length), from which its pieces are read back."""

    vocabulary: Vocabulary
    splits: dict[str, TokenizedSplit]
    single: np.ndarray  # int64[vocab]: occurrences of the one-piece word of each token id
    multi_counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    multi_split: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # index into splits
    multi_pos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    multi_len: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    running_words: int = 0
    tokens: int = 0
    split_2plus: int = 0
    split_3plus: int = 0
    unknown: int = 0

    def figures(self) -> Figures:
        distinct = int(np.count_nonzero(self.single)) + len(self.multi_counts)
        return Figures(self.running_words, distinct, self.tokens, self.split_2plus, self.split_3plus,
                       self.unknown)

    def words(self, min_count: int, limit: int | None = None, split_only: bool = False) -> list[WordStat]:
        """Words seen at least `min_count` times, most in need of adapting first, then the most frequent,
        then by text; only the first `limit`, and only words cut into pieces with `split_only`. Strings
        are made for the words returned alone, so the head of a large table costs next to nothing."""
        multi = np.flatnonzero(self.multi_counts >= min_count)
        single = np.empty(0, np.int64) if split_only else np.flatnonzero(self.single >= min_count)
        count = np.concatenate([self.single[single], self.multi_counts[multi]])
        need = count * (np.concatenate([np.ones(len(single), np.int64), self.multi_len[multi]]) - 1)
        if limit is not None and limit < len(count):  # the head, with every word tied with its last
            last = np.lexsort((-count, -need))[limit - 1]
            chosen = (need > need[last]) | ((need == need[last]) & (count >= count[last]))
            single, multi = single[chosen[: len(single)]], multi[chosen[len(single) :]]
        seqs = [(int(i),) for i in single] + self._pieces_of(multi)
        counts = [*self.single[single].tolist(), *self.multi_counts[multi].tolist()]
        pieces = self.vocabulary.pieces
        out = [WordStat(text, c, ids, [pieces[i] for i in ids])
               for text, c, ids in zip(self.vocabulary.decode(seqs), counts, seqs, strict=True)]
        out.sort(key=lambda w: (-w.need, -w.count, w.word))
        return out[:limit]

    def _pieces_of(self, multi: np.ndarray) -> list[tuple[int, ...]]:
        """The piece ids of the multi-piece words `multi`, read back from one occurrence of each."""
        out: list[tuple[int, ...]] = [()] * len(multi)
        for n, split in enumerate(self.splits.values()):
            rows = np.flatnonzero(self.multi_split[multi] == n)
            lengths = self.multi_len[multi[rows]]
            offsets = np.cumsum(lengths) - lengths
            index = np.repeat(self.multi_pos[multi[rows]] - offsets, lengths) + np.arange(int(lengths.sum()))
            flat = np.asarray(split.ids[index]).tolist()
            for row, a, k in zip(rows.tolist(), offsets.tolist(), lengths.tolist(), strict=True):
                out[row] = tuple(flat[a : a + k])
        return out


@dataclass
class VocabReport:
    """The vocabulary view of a corpus: its figures, the `top` words that most need adapting (the ones
    `mlm-tui vocab` lists), the reference figures, and the counts behind them for the whole table."""

    corpus: str
    model: str
    figures: Figures
    top: list[WordStat]
    reference: Figures | None
    min_count: int
    counts: WordCounts = field(repr=False)

    def words(self) -> list[WordStat]:
        """Every word seen at least `min_count` times, ranked as `top` is (the Vocabulary pane's table)."""
        return self.counts.words(self.min_count)

    def occurrences(self, word: WordStat, chunk_size: int) -> dict[str, np.ndarray]:
        """Per split, where `word` begins in the chunks of `chunk_size` (see `occurrences`)."""
        return occurrences(self.counts.splits, word.ids, self.counts.vocabulary, chunk_size)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"corpus": self.corpus, "model": self.model, **self.figures.to_dict(),
                               "top": [w.to_dict() for w in self.top]}
        out["reference"] = self.reference.to_dict() if self.reference is not None else None
        return out


def word_bounds(ids: np.ndarray, doc_starts: np.ndarray, vocabulary: Vocabulary
                ) -> tuple[np.ndarray, np.ndarray]:
    """(keep, begins) over a token array: which tokens are text, and which of those begin a word.

    A kept token begins a word when the table says it starts one, when the token before it is not text
    (the collator's group then begins at that special token, which is never masked), or at a document's
    first token (documents are separate texts; the collator sees them through chunk rows)."""
    keep = ~vocabulary.ignored[ids]
    begins = vocabulary.word_start[ids]
    begins[1:] |= ~keep[:-1]
    begins[doc_starts[doc_starts < len(ids)]] = True
    return keep, begins & keep


def _blocks(split: TokenizedSplit) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, end, document starts relative to start) for runs of whole documents of ~BLOCK_TOKENS."""
    ends = np.cumsum(split.doc_lengths)
    start, doc = 0, 0
    while doc < len(ends):
        last = max(doc, int(np.searchsorted(ends, start + BLOCK_TOKENS, side="right")) - 1)
        end = int(ends[last])
        starts = np.concatenate([[start], ends[doc:last]]) - start
        yield start, end, starts
        start, doc = end, last + 1


def count_words(splits: dict[str, TokenizedSplit], vocabulary: Vocabulary,
                cancelled: Callable[[], bool] | None = None) -> WordCounts:
    """Count every word of the splits (all of them: the view is about the whole corpus)."""
    counts = WordCounts(vocabulary, splits, np.zeros(len(vocabulary.pieces), dtype=np.int64))
    keys, found, where, lens, which = [], [], [], [], []
    for n, split in enumerate(splits.values()):
        for start, end, doc_starts in _blocks(split):
            if cancelled is not None and cancelled():
                raise UsageError("counting words cancelled")
            ids = np.asarray(split.ids[start:end])
            keep, begins = word_bounds(ids, doc_starts, vocabulary)
            text = ids[keep]
            first = np.flatnonzero(begins[keep])
            length = np.diff(first, append=len(text))
            counts.running_words += len(first)
            counts.tokens += len(text)
            counts.split_2plus += int(np.count_nonzero(length >= 2))
            counts.split_3plus += int(np.count_nonzero(length >= 3))
            if vocabulary.unk_id is not None:
                counts.unknown += int(np.count_nonzero(text == vocabulary.unk_id))
            multi = length > 1
            counts.single += np.bincount(text[first[~multi]], minlength=len(counts.single))
            if not multi.any():
                continue
            first, length = first[multi], length[multi]
            hashes = _hash_words(text, first, length)
            uniq, index, c = np.unique(hashes, return_index=True, return_counts=True)
            # back from positions among the kept tokens to positions in the split: add the tokens left out
            # before each (left-out token j has `skipped[j] - j` kept tokens before it)
            at = first[index]
            skipped = np.flatnonzero(~keep)
            at += np.searchsorted(skipped - np.arange(len(skipped)), at, side="right")
            keys.append(uniq)
            found.append(c)
            where.append(start + at)
            lens.append(length[index])
            which.append(np.full(len(uniq), n))
    if keys:
        uniq, index, inverse = np.unique(np.concatenate(keys), return_index=True, return_inverse=True)
        counts.multi_counts = np.bincount(inverse, weights=np.concatenate(found)).astype(np.int64)
        counts.multi_pos = np.concatenate(where)[index]
        counts.multi_len = np.concatenate(lens)[index]
        counts.multi_split = np.concatenate(which)[index]
    return counts


def _hash_words(text: np.ndarray, first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each word's piece sequence (words at `first`, of `length` pieces, in `text`): each
    piece id mixed, weighted by a power that depends on its place in the word, summed over the word; the
    length mixed in last. Two different words share a hash with a chance of about 2**-64 a pair, far
    below anything a corpus could show."""
    offsets = np.cumsum(length) - length
    place = np.arange(int(length.sum())) - np.repeat(offsets, length)
    with np.errstate(over="ignore"):
        v = text[np.repeat(first, length) + place].astype(np.uint64) + np.uint64(1)
        v *= _MUL
        v ^= v >> np.uint64(31)
        v *= _MIX
        v *= np.cumprod(np.full(int(length.max()), _MIX, dtype=np.uint64))[place]
        h = np.add.reduceat(v, offsets)
        h ^= length.astype(np.uint64) * _LEN
    return h


def word_positions(split: TokenizedSplit, word_ids: Sequence[int], vocabulary: Vocabulary,
                   limit: int | None = None) -> np.ndarray:
    """Where in the split (token positions, ascending) the word occurs as a whole word: `token` inside
    `tokenization` does not count. Only occurrences beginning before `limit` when it is given."""
    target = np.asarray(word_ids, dtype=np.int64)
    n = len(target)
    ids = split.ids
    at = np.flatnonzero(np.asarray(ids[:limit]) == target[0])
    at = at[at + n <= len(ids)]
    for k in range(1, n):
        at = at[ids[at + k] == target[k]]
    doc_starts = np.concatenate([[0], np.cumsum(split.doc_lengths)])
    starts_doc = np.isin(at, doc_starts)
    begins = vocabulary.word_start[ids[at]] | starts_doc
    begins[~starts_doc] |= vocabulary.ignored[ids[at[~starts_doc] - 1]]
    after = at + n
    inside = after < len(ids)
    ends = np.ones(len(at), dtype=bool)
    ends[inside] = vocabulary.word_start[ids[after[inside]]] | np.isin(after[inside], doc_starts)
    return at[begins & ends]


def occurrences(splits: dict[str, TokenizedSplit], word_ids: Sequence[int], vocabulary: Vocabulary,
                chunk_size: int) -> dict[str, np.ndarray]:
    """Per split, the token positions (ascending) where the word begins as a whole word, in the split's
    chunks of `chunk_size`: position // chunk_size is the chunk (an index into `chunks(chunk_size)`), and a
    word cut by a chunk boundary counts for the chunk it begins in; words in the dropped remainder for
    none."""
    return {name: word_positions(split, word_ids, vocabulary, (split.tokens // chunk_size) * chunk_size)
            for name, split in splits.items()}


def reference_documents() -> list[str]:
    """The general-English reference sample shipped with the package, one document per line."""
    with gzip.open(REFERENCE, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.strip()]


def reference_split(tokenizer: Any) -> TokenizedSplit:
    """The reference sample's token ids, through the token cache like a corpus's, keyed by its content."""
    from mlm_tui.chunking import tokenize_stream
    from mlm_tui.corpus import batched

    identity = "reference:" + hashlib.blake2b(REFERENCE.read_bytes(), digest_size=16).hexdigest()
    return tokenize_stream(identity, tokenizer, lambda: batched(reference_documents()))


def reference_figures(tokenizer: Any, vocabulary: Vocabulary | None = None) -> Figures:
    """The same figures on general English: how far from ordinary text the user's corpus is."""
    split = reference_split(tokenizer)
    return count_words({"reference": split}, vocabulary or Vocabulary.of(tokenizer)).figures()


def vocab_report(splits: dict[str, TokenizedSplit], tokenizer: Any, corpus: str, model: str,
                 min_count: int = 5, top: int = 50, reference: bool = True,
                 cancelled: Callable[[], bool] | None = None) -> VocabReport:
    """The view of an already tokenized corpus (the workbench has its splits from the Chunks pane)."""
    vocabulary = Vocabulary.of(tokenizer)
    counts = count_words(splits, vocabulary, cancelled)
    ref = reference_figures(tokenizer, vocabulary) if reference else None
    return VocabReport(corpus, model, counts.figures(), counts.words(min_count, top, split_only=True), ref,
                       min_count, counts)


def analyse_corpus(corpus: str, tokenizer: Any, model: str, text_field: str = "text", min_count: int = 5,
                   top: int = 50, reference: bool = True, progress: Progress | None = None,
                   cancelled: Callable[[], bool] | None = None,
                   status: Callable[[str], None] | None = None, hub: HubOptions | None = None) -> VocabReport:
    """Tokenize (or read from the token cache) every split of a corpus, then count its words."""
    from mlm_tui.chunking import tokenize_corpus

    splits = tokenize_corpus(corpus, tokenizer, text_field, progress, cancelled, status, hub=hub)
    if status is not None:
        status("counting words")
    return vocab_report(splits, tokenizer, corpus, model, min_count, top, reference, cancelled)
