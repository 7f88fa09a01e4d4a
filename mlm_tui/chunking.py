"""Tokenize a corpus and cut it into fixed-size chunks, as the course does, at tokenizer speed.

Each document is encoded with its special tokens (`[CLS] ... [SEP]`), the whole split is concatenated
into one int32 array and cut into `chunk_size` rows; only the final remainder is dropped. Token ids go
straight from the Rust tokenizer into numpy (no `BatchEncoding` of Python lists), and the token arrays are
cached under the state root, keyed by the files' identity and the tokenizer, so reopening a corpus or
changing the chunk size costs no tokenizing. Word boundaries for whole-word masking are derived from the
vocabulary when needed (see `masking.word_start_table`) instead of being stored per token.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from mlm_tui.errors import UsageError

# Documents go to the Rust tokenizer in batches of about this many characters: big enough to keep every
# core busy, small enough that the batch's Encoding objects (a few hundred bytes per token) stay small.
BATCH_CHARS = 500_000
Progress = Callable[[int, int], None]  # (documents done, documents total)


@dataclass
class TokenizedSplit:
    """One split as a flat token stream; `doc_lengths` recovers document boundaries."""

    ids: np.ndarray  # int32, all documents concatenated
    doc_lengths: np.ndarray  # int64, tokens per document

    @property
    def documents(self) -> int:
        return len(self.doc_lengths)

    @property
    def tokens(self) -> int:
        return len(self.ids)

    def chunks(self, chunk_size: int) -> np.ndarray:
        """A (n, chunk_size) view: no copy, the final remainder left out."""
        n = self.tokens // chunk_size
        return self.ids[: n * chunk_size].reshape(n, chunk_size)

    def stats(self, chunk_size: int) -> dict[str, int]:
        n = self.tokens // chunk_size
        return {"documents": self.documents, "tokens": self.tokens, "chunks": n,
                "dropped_tokens": self.tokens - n * chunk_size}

    def split_documents(self, test_fraction: float, seed: int) -> tuple[TokenizedSplit, TokenizedSplit]:
        """Hold out whole documents (seeded), so no text is in both parts."""
        n = self.documents
        if n < 2:
            raise UsageError("the corpus has one document: a test split needs at least two")
        n_test = min(n - 1, max(1, round(n * test_fraction)))
        order = np.random.default_rng(seed).permutation(n)
        test_docs, train_docs = np.sort(order[:n_test]), np.sort(order[n_test:])
        return self._select(train_docs), self._select(test_docs)

    def _select(self, docs: np.ndarray) -> TokenizedSplit:
        starts = np.concatenate([[0], np.cumsum(self.doc_lengths)[:-1]])
        lengths = self.doc_lengths[docs]
        index = np.repeat(starts[docs] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        index += np.arange(lengths.sum())
        return TokenizedSplit(self.ids[index], lengths)


def check_chunk_size(chunk_size: int, tokenizer: Any) -> None:
    limit = model_max_length(tokenizer)
    if chunk_size < 2:
        raise UsageError(f"--chunk-size must be at least 2 (got {chunk_size})")
    if limit and chunk_size > limit:
        raise UsageError(f"--chunk-size {chunk_size} is beyond this model's maximum of {limit} tokens")


def model_max_length(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**6 else None


def backend_of(tokenizer: Any) -> Any:
    """The Rust `tokenizers.Tokenizer` behind a tokenizer, or None for a slow (Python) one."""
    return getattr(tokenizer, "backend_tokenizer", None)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of what the tokenizer produces; its truncation and padding settings do not count."""
    backend = backend_of(tokenizer)
    if backend is None:
        text = repr(sorted(tokenizer.get_vocab().items()))
    else:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class ChunkTokenizer:
    """Just enough of a tokenizer to count, chunk and decode: the Rust tokenizer and the model's limit.

    Loading it from the model directory's `tokenizer.json` takes milliseconds and imports neither torch
    nor transformers, so `mlm-tui chunks` on a cached corpus answers at once.
    """

    backend_tokenizer: Any
    model_max_length: int | None

    def decode(self, ids: list[int]) -> str:
        return self.backend_tokenizer.decode(ids, skip_special_tokens=False)


def open_tokenizer(model_ref: str | None) -> Any:
    """The chunking tokenizer of a model reference: `tokenizer.json` directly when the model has one."""
    from mlm_tui.models import load_tokenizer, resolve

    resolved = resolve(model_ref)
    path = resolved.path
    if path is None or not (path / "tokenizer.json").is_file():
        return load_tokenizer(model_ref)
    from tokenizers import Tokenizer

    limit = None
    limits = (("tokenizer_config.json", "model_max_length"), ("config.json", "max_position_embeddings"))
    for name, key in limits:
        try:
            value = json.loads((path / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value < 10**6:
            limit = value if limit is None else min(limit, value)
    return ChunkTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")), limit)


def encode_documents(tokenizer: Any, docs: list[str], progress: Progress | None = None,
                     cancelled: Callable[[], bool] | None = None) -> TokenizedSplit:
    """Encode documents with special tokens into one int32 stream, in batches the Rust side parallelises."""
    backend = backend_of(tokenizer)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
    lengths = np.empty(len(docs), dtype=np.int64)
    pieces: list[np.ndarray] = []
    for start, end in _batches(docs):
        if cancelled is not None and cancelled():
            raise UsageError("tokenizing cancelled")
        batch = docs[start:end]
        ids_lists = _encode_batch(tokenizer, backend, batch)
        n = 0
        for i, ids in enumerate(ids_lists):
            lengths[start + i] = len(ids)
            n += len(ids)
        pieces.append(np.fromiter(chain.from_iterable(ids_lists), dtype=np.int32, count=n))
        if progress is not None:
            progress(end, len(docs))
    ids = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int32)
    return TokenizedSplit(ids, lengths)


def _batches(docs: list[str]) -> Iterator[tuple[int, int]]:
    start, size = 0, 0
    for i, doc in enumerate(docs):
        size += len(doc)
        if size >= BATCH_CHARS:
            yield start, i + 1
            start, size = i + 1, 0
    if start < len(docs):
        yield start, len(docs)


def _encode_batch(tokenizer: Any, backend: Any, batch: list[str]) -> list[list[int]]:
    if backend is None:  # a slow (Python) tokenizer: correct, just slower
        return tokenizer(batch, add_special_tokens=True)["input_ids"]
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in encode(batch, add_special_tokens=True)]


def _cache_paths(key: str) -> tuple[Path, Path]:
    from mlm_tui.home import chunks_cache_dir

    base = chunks_cache_dir()
    return base / f"{key}.ids.npy", base / f"{key}.docs.npy"


def _save(key: str, split: TokenizedSplit) -> None:
    import os
    import tempfile

    ids_path, docs_path = _cache_paths(key)
    for path, arr in ((docs_path, split.doc_lengths), (ids_path, split.ids)):
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return  # a cache that cannot be written costs speed, not correctness


def _load(key: str) -> TokenizedSplit | None:
    ids_path, docs_path = _cache_paths(key)
    try:
        ids = np.load(ids_path, mmap_mode="r")
        lengths = np.load(docs_path)
    except (OSError, ValueError):
        return None
    if int(lengths.sum()) != len(ids):
        return None  # a torn or mismatched pair: tokenize again
    return TokenizedSplit(ids, lengths)


def tokenize_corpus(corpus_ref: str, tokenizer: Any, text_field: str = "text",
                    progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                    status: Callable[[str], None] | None = None) -> dict[str, TokenizedSplit]:
    """Every split of a corpus, tokenized; served from the cache when files and tokenizer are unchanged."""
    from mlm_tui.corpus import corpus_files, load_corpus, stat_key

    files = corpus_files(corpus_ref)
    keys: dict[str, str] = {}
    if files is not None:
        base = f"{stat_key(files)}|{text_field}|{tokenizer_fingerprint(tokenizer)}"
        keys = {s: hashlib.blake2b(f"{base}|{s}".encode(), digest_size=16).hexdigest() for s in files}
        cached = {s: _load(k) for s, k in keys.items()}
        if all(v is not None for v in cached.values()):
            return dict(cached)  # type: ignore[arg-type]
    if status is not None:
        status("reading corpus")
    corpus = load_corpus(corpus_ref, text_field)
    if status is not None:
        status("tokenizing")
    out: dict[str, TokenizedSplit] = {}
    total = sum(len(d) for d in corpus.splits.values())
    done = 0
    for split, docs in corpus.splits.items():
        offset = done

        def report(n: int, _total: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + n, total)

        out[split] = encode_documents(tokenizer, docs, report, cancelled)
        done += len(docs)
        if split in keys:
            _save(keys[split], out[split])
    return out

