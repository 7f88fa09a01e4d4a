"""Tokenize a corpus and cut it into fixed-size chunks, as the course does, at tokenizer speed.

Each document is encoded with its special tokens (`[CLS] ... [SEP]`), the whole split is concatenated
into one int32 array and cut into `chunk_size` rows; only the final remainder is dropped. Token ids go
straight from the Rust tokenizer into numpy (no `BatchEncoding` of Python lists). For local files the ids
are streamed batch by batch into the token cache under the state root (keyed by the files' identity and
the tokenizer) and served memory-mapped from there, so tokenizing holds one batch, not the corpus or the
token array, and reopening a corpus or changing the chunk size costs no tokenizing. Word boundaries for
whole-word masking are derived from the vocabulary when needed (see `masking.word_start_table`) instead
of being stored per token.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlm_tui.errors import FieldError, UsageError
from mlm_tui.run_settings import check_value

if TYPE_CHECKING:
    from mlm_tui.corpus import HubOptions

Progress = Callable[[int, int], None]  # (characters read, corpus bytes; 0 when not known)


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
        train_docs, test_docs = held_out_documents(self.documents, test_fraction, seed)
        return self._select(train_docs), self._select(test_docs)

    def _select(self, docs: np.ndarray) -> TokenizedSplit:
        starts = np.concatenate([[0], np.cumsum(self.doc_lengths)[:-1]])
        lengths = self.doc_lengths[docs]
        index = np.repeat(starts[docs] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        index += np.arange(lengths.sum())
        return TokenizedSplit(self.ids[index], lengths)


def held_out_documents(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) document indices, sorted: the seeded hold-out of a corpus without a test split (also
    what bits per character reads back as text, `bpc.measured_texts`)."""
    if n < 2:
        raise UsageError("the corpus has one document: a test split needs at least two")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def check_chunk_size(chunk_size: int, tokenizer: Any) -> None:
    """The chunk size within its declared bound (`TrainConfig.chunk_size`) and the model's maximum."""
    check_value("chunk_size", chunk_size)
    limit = model_max_length(tokenizer)
    if limit and chunk_size > limit:
        raise FieldError("chunk_size", f"{{field}} {chunk_size} is beyond this model's maximum of {limit} "
                         "tokens")


def model_max_length(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**6 else None


def backend_of(tokenizer: Any) -> Any:
    """The Rust `tokenizers.Tokenizer` behind a tokenizer, or None for a slow (Python) one."""
    return getattr(tokenizer, "backend_tokenizer", None)


def decode(tokenizer: Any, ids: list[int]) -> str:
    """A chunk as people read it, the same in the CLI and the workbench: the tokenizer's own decoder
    (with its clean-up of spaces before punctuation), special tokens kept."""
    backend = backend_of(tokenizer)
    if backend is not None:
        return backend.decode(ids, skip_special_tokens=False)
    return tokenizer.decode(ids, skip_special_tokens=False)


_fingerprints: dict[str, str] = {}  # digest of a tokenizer's raw spec -> its fingerprint


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of what the tokenizer produces; its truncation and padding settings do not count.

    Normalising the spec (a sorted dump of the whole vocabulary) costs about 0.1 s; it is a function of
    the raw spec alone, so it is remembered by the raw spec's digest (a few ms), and a command that keys
    two caches with one tokenizer (the vocabulary view: corpus and reference sample) pays it once."""
    backend = backend_of(tokenizer)
    if backend is None:
        text = repr(sorted(tokenizer.get_vocab().items()))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    raw = backend.to_str()
    digest = hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()
    if digest not in _fingerprints:
        spec = json.loads(raw)
        spec.pop("truncation", None)
        spec.pop("padding", None)
        text = json.dumps(spec, sort_keys=True)
        _fingerprints[digest] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return _fingerprints[digest]


@dataclass
class ChunkTokenizer:
    """Just enough of a tokenizer to count, chunk and decode: the Rust tokenizer and the model's limit.

    Loading it from the model directory's `tokenizer.json` takes milliseconds and imports neither torch
    nor transformers, so `mlm-tui chunks` on a cached corpus answers at once.
    """

    backend_tokenizer: Any
    model_max_length: int | None


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


Encoded = tuple[np.ndarray, np.ndarray, int]  # int32 ids, tokens per document, characters read


def encode_batches(tokenizer: Any, batches: Iterable[list[str]],
                   cancelled: Callable[[], bool] | None = None) -> Iterator[Encoded]:
    """Encode document batches with special tokens, each batch in one call the Rust side parallelises:
    (int32 ids, tokens per document, characters read) per batch.

    The Rust call releases the GIL, so the next batch is read and encoded on a helper thread while this
    thread turns the last one into numpy: the cores stay busy between batches (about 8% faster on 2)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    backend = backend_of(tokenizer)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()

    def encode(batch: list[str]) -> tuple[list[list[int]], int]:
        return _encode_batch(tokenizer, backend, batch), sum(map(len, batch))

    pending: Future[tuple[list[list[int]], int]] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="mlm-tokenize") as pool:
        for batch in chain(batches, [None]):
            if cancelled is not None and cancelled():
                raise UsageError("tokenizing cancelled")
            ahead = pool.submit(encode, batch) if batch is not None else None
            if pending is not None:
                ids_lists, chars = pending.result()
                lengths = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
                ids = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int32, count=int(lengths.sum()))
                yield ids, lengths, chars
            pending = ahead


def encode_documents(tokenizer: Any, docs: list[str]) -> TokenizedSplit:
    """A list of documents, encoded in memory."""
    from mlm_tui.corpus import batched

    return _in_memory(encode_batches(tokenizer, batched(docs)), lambda chars: None)


def _in_memory(encoded: Iterable[Encoded], report: Callable[[int], None]
               ) -> TokenizedSplit:
    pieces, lengths = [], []
    for ids, lens, chars in encoded:
        pieces.append(ids)
        lengths.append(lens)
        report(chars)
    if not pieces:
        return TokenizedSplit(np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64))
    return TokenizedSplit(np.concatenate(pieces), np.concatenate(lengths))


def _encode_batch(tokenizer: Any, backend: Any, batch: list[str]) -> list[list[int]]:
    if backend is None:  # a slow (Python) tokenizer: correct, just slower
        return tokenizer(batch, add_special_tokens=True)["input_ids"]
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in encode(batch, add_special_tokens=True)]


def _cache_paths(key: str) -> tuple[Path, Path]:
    from mlm_tui.home import chunks_cache_dir

    base = chunks_cache_dir()
    return base / f"{key}.ids.npy", base / f"{key}.docs.npy"


def _npy_header(n_tokens: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i4", "fortran_order": False, "shape": (n_tokens,)})
    return buf.getvalue()


TMP_PREFIX = ".tmp-"


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file renamed into place: a reader never sees half a cache file.

    The writer holds a lock on its temporary file until it is renamed or removed, so that a file left by
    a process that died (kill -9, power loss) is told apart from one being written now: see `sweep`.
    """
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".npy")
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)  # a sweep took it between its creation and our lock: make another
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            os.replace(tmp, path)  # before the lock goes with the file's closing
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep(folder: Path) -> None:
    """Remove the temporary files of writers that died: those whose lock nobody holds. Never by age: a
    slow writer in another pane holds its lock and keeps its file."""
    for tmp in folder.glob(f"{TMP_PREFIX}*"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue  # gone already
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink(missing_ok=True)
        except OSError:  # BlockingIOError: its writer is alive
            pass
        finally:
            os.close(fd)


class _CacheUnwritable(Exception):
    pass


def _encode_to_cache(key: str, tokenizer: Any, batches: Iterator[list[str]], report: Callable[[int], None],
                     cancelled: Callable[[], bool] | None) -> TokenizedSplit:
    """Stream each batch's ids into the cache file as it is encoded (an .npy whose header, of fixed size,
    is written last), then serve the split memory-mapped: the token array is never built in memory."""
    ids_path, docs_path = _cache_paths(key)
    lengths: list[np.ndarray] = []

    def write_ids(fh: Any) -> None:
        fh.seek(len(_npy_header(0)))
        n = 0
        for ids, lens, chars in encode_batches(tokenizer, batches, cancelled):
            try:
                fh.write(ids.data)
            except OSError as exc:
                raise _CacheUnwritable from exc
            lengths.append(lens)
            n += len(ids)
            report(chars)
        header = _npy_header(n)
        assert len(header) == len(_npy_header(0))
        fh.seek(0)
        fh.write(header)

    try:
        _write_atomic(ids_path, write_ids)
        doc_lengths = np.concatenate(lengths) if lengths else np.empty(0, dtype=np.int64)
        _write_atomic(docs_path, lambda fh: np.save(fh, doc_lengths))
    except OSError as exc:  # mkstemp, the header, the rename: the cache folder is not writable
        raise _CacheUnwritable from exc
    split = _load(key)
    if split is None:
        raise _CacheUnwritable
    return split


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


def _encode(key: str | None, tokenizer: Any, batches: Callable[[], Iterator[list[str]]],
            report: Callable[[int], None], cancelled: Callable[[], bool] | None) -> TokenizedSplit:
    """Through the cache when there is a key and the cache can be written, else in memory: a cache that
    cannot be written costs memory, not correctness."""
    if key is not None:
        try:
            return _encode_to_cache(key, tokenizer, batches(), report, cancelled)
        except _CacheUnwritable:
            pass
    return _in_memory(encode_batches(tokenizer, batches(), cancelled), report)


def tokenize_stream(identity: str, tokenizer: Any, batches: Callable[[], Iterator[list[str]]]
                    ) -> TokenizedSplit:
    """Documents that are no corpus on disk (the vocabulary view's shipped reference sample), tokenized
    once through the token cache: `identity` names the text (e.g. a hash of it), the tokenizer the rest."""
    text = f"{identity}|{tokenizer_fingerprint(tokenizer)}"
    key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    split = _load(key)
    return split if split is not None else _encode(key, tokenizer, batches, lambda chars: None, None)


def tokenize_corpus(corpus_ref: str, tokenizer: Any, text_field: str = "text",
                    progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                    status: Callable[[str], None] | None = None, hub: HubOptions | None = None,
                    holdout_tokens: int | None = None) -> dict[str, TokenizedSplit]:
    """Every split of a corpus, tokenized; served from the cache when files and tokenizer are unchanged.

    A hub dataset, or a local folder with `hub` options given, is read by `datasets` (see
    `corpus.HubOptions`) into "train" and, when it has one, "test". With `holdout_tokens` and no test
    split, a streamed dataset's first documents (enough for that many tokens) become the test split and
    the train split skips them: a stream cannot be shuffled into a held-out set without reading it whole.
    """
    from mlm_tui.corpus import HubOptions, corpus_files, split_streams, stat_key
    from mlm_tui.home import chunks_cache_dir

    files = corpus_files(corpus_ref)
    sweep(chunks_cache_dir())
    if files is None or (hub is not None and hub.given()):
        out = _tokenize_dataset(corpus_ref, tokenizer, text_field, hub or HubOptions(),
                                stat_key(files) if files else f"hub:{corpus_ref}", holdout_tokens, progress,
                                cancelled, status)
    else:
        base = f"{stat_key(files)}|{text_field}|{tokenizer_fingerprint(tokenizer)}"
        keys = {s: hashlib.blake2b(f"{base}|{s}".encode(), digest_size=16).hexdigest() for s in files}
        cached = {s: _load(k) for s, k in keys.items()}
        out = dict(cached) if all(v is not None for v in cached.values()) else {}  # type: ignore[arg-type]
        if not out:
            total = sum(p.stat().st_size for paths in files.values() for p in paths)
            if status is not None:
                status("tokenizing")
            report = _reporter(progress, total)
            for split, batches in split_streams(corpus_ref, text_field).items():
                out[split] = _encode(keys[split], tokenizer, batches, report, cancelled)
            if progress is not None and total:
                progress(total, total)
    if not any(split.documents for split in out.values()):
        raise UsageError(f"{corpus_ref}: the corpus is empty (no documents with text)")
    return out


def _reporter(progress: Progress | None, total: int) -> Callable[[int], None]:
    done = 0

    def report(chars: int) -> None:
        nonlocal done
        done += chars
        if progress is not None:
            progress(min(done, total) if total else done, total)

    return report


def _tokenize_dataset(ref: str, tokenizer: Any, text_field: str, options: HubOptions, identity: str,
                      holdout_tokens: int | None, progress: Progress | None,
                      cancelled: Callable[[], bool] | None, status: Callable[[str], None] | None
                      ) -> dict[str, TokenizedSplit]:
    """A dataset `datasets` reads, each split streamed into the token cache (keyed by the dataset's name,
    or its local files, the subset, the split and the tokenizer)."""
    from mlm_tui.corpus import hub_splits

    if status is not None:
        status("reading corpus")
    splits = hub_splits(ref, text_field, options)
    if status is not None:
        status("tokenizing")
    base = f"{identity}|{options.subset}|{text_field}|{tokenizer_fingerprint(tokenizer)}"
    report = _reporter(progress, 0)
    out: dict[str, TokenizedSplit] = {}
    for role, (split, batches) in splits.items():
        if role == "train" and "test" not in splits and holdout_tokens and options.streaming:
            out["test"], skip = _hold_out(tokenizer, batches(), holdout_tokens, cancelled)
            batches = lambda whole=batches, n=skip: _skip_documents(whole(), n)  # noqa: E731
            split = f"{split}|after {skip} documents"
        key = hashlib.blake2b(f"{base}|{split}".encode(), digest_size=16).hexdigest()
        out[role] = _load(key) or _encode(key, tokenizer, batches, report, cancelled)
    return out


def _hold_out(tokenizer: Any, batches: Iterator[list[str]], tokens: int,
              cancelled: Callable[[], bool] | None) -> tuple[TokenizedSplit, int]:
    """The first documents of a stream that hold at least `tokens` tokens, and how many they are."""
    held = []
    have = 0
    for ids, lengths, _ in encode_batches(tokenizer, batches, cancelled):
        held.append((ids, lengths))
        have += len(ids)
        if have >= tokens:
            break
    ids = np.concatenate([i for i, _ in held]) if held else np.empty(0, dtype=np.int32)
    lengths = np.concatenate([n for _, n in held]) if held else np.empty(0, dtype=np.int64)
    n = min(len(lengths), int(np.searchsorted(np.cumsum(lengths), tokens)) + 1)
    return TokenizedSplit(ids[: int(lengths[:n].sum())], lengths[:n]), n


def _skip_documents(batches: Iterator[list[str]], n: int) -> Iterator[list[str]]:
    for batch in batches:
        if n >= len(batch):
            n -= len(batch)
            continue
        yield batch[n:]
        n = 0
