"""Corpora: local text files, JSON lines, CSV, Parquet, a folder of those, or a hub dataset.

A corpus is a set of named splits, each a stream of documents (strings) read a block at a time, so that a
corpus is never held whole in memory: tokenizing needs each document once, in order. Local JSON lines,
CSV and Parquet are read a block at a time with Arrow's readers (Arrow is what `datasets` uses inside),
a JSON array and hub datasets with `datasets` itself; plain `.txt` is one document per non-empty line, as
`datasets`' text builder would give, minus empty rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlm_tui.errors import FieldError, UsageError, first_line

FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLIT_NAMES = ("train", "validation", "test", "unsupervised")


# Documents come in batches of about this much text: big enough for the tokenizer to keep every core busy,
# small enough that a batch's Python strings and the tokenizer's Encoding objects stay a few tens of MB.
BLOCK_BYTES = 1 << 17
Batches = Callable[[], Iterator[list[str]]]  # a fresh stream of one split's document batches


def corpus_files(ref: str) -> dict[str, list[Path]] | None:
    """The local files of a corpus reference by split, or None when it is not a local path."""
    path = Path(ref).expanduser()
    if not path.exists():
        if ref.startswith((".", "/", "~")) or path.suffix.lower() in FORMATS:
            raise UsageError(f"no such corpus file or folder: {ref}")
        return None
    if path.is_file():
        if path.suffix.lower() not in FORMATS:
            raise UsageError(f"{ref}: unsupported corpus format (use {', '.join(FORMATS)})")
        return {"train": [path]}
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    if not files:
        raise UsageError(f"{ref}: the folder holds no corpus files ({', '.join(FORMATS)})")
    splits: dict[str, list[Path]] = {}
    for f in files:
        stem = f.stem.lower()
        name = next((s for s in SPLIT_NAMES if stem == s or stem.startswith(s + "-") or f.parent.name == s),
                    None)
        splits.setdefault(name or "train", []).append(f)
    return splits


def stat_key(files: dict[str, list[Path]]) -> str:
    """Cheap identity of local files (path, size, mtime): a changed file changes the key."""
    h = hashlib.blake2b(digest_size=16)
    for split, paths in sorted(files.items()):
        for p in paths:
            st = p.stat()
            h.update(f"{split}\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(ref: str) -> str:
    """Content hash of a local corpus (or the dataset name for a hub corpus), stored with each run."""
    files = corpus_files(ref)
    if files is None:
        return f"hub:{ref}"
    h = hashlib.blake2b(digest_size=16)
    for split, paths in sorted(files.items()):
        for p in paths:
            h.update(f"{split}\0{p.name}\0".encode())
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


def split_streams(ref: str, text_field: str = "text") -> dict[str, Batches]:
    """Each split's documents as a restartable stream of batches; local files are only opened when read."""
    files = corpus_files(ref)
    if files is None:
        splits = _load_hub(ref, text_field)
        return {split: (lambda docs=docs: batched(docs)) for split, docs in splits.items()}

    def stream(paths: list[Path]) -> Iterator[list[str]]:
        for path in paths:
            yield from iter_documents(path, text_field)

    return {split: (lambda paths=paths: stream(paths)) for split, paths in files.items()}


def iter_documents(path: Path, text_field: str = "text") -> Iterator[list[str]]:
    """The non-empty documents of one local file, a block at a time."""
    kind = FORMATS[path.suffix.lower()]
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: the file is empty")
    if kind == "text":
        yield from _text_batches(path)
        return
    if kind == "json" and _is_json_array(path):
        yield from batched(_load_with_datasets(path, kind, text_field))  # datasets reads an array whole
        return
    try:
        for batch in _arrow_batches(path, kind, text_field):
            yield _column(batch, text_field, str(path))
    except UsageError:
        raise
    except Exception as exc:  # Arrow raises several types for a malformed file; say which file
        if kind == "json":
            _check_json(path)  # the slow scan runs only now, to name the first broken line
        raise UsageError(f"{path}: could not read it as {kind} ({_first_line(exc)})") from None


def batched(docs: list[str]) -> Iterator[list[str]]:
    start, size = 0, 0
    for i, doc in enumerate(docs):
        size += len(doc)
        if size >= BLOCK_BYTES:
            yield docs[start : i + 1]
            start, size = i + 1, 0
    if start < len(docs):
        yield docs[start:]


def _text_batches(path: Path) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    batch.append(line.rstrip("\r\n"))
                    size += len(line)
                    if size >= BLOCK_BYTES:
                        yield batch
                        batch, size = [], 0
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (is it a binary file?)") from None
    if batch:
        yield batch


def _arrow_batches(path: Path, kind: str, text_field: str) -> Iterator[Any]:
    """Record batches of the text column alone, straight from Arrow's readers, a block at a time.

    `datasets.load_dataset` would first write the whole corpus again as an Arrow cache file, and one
    `read_json` of the whole file would hold all of it as one table, before we tokenize it once: the token
    cache (`chunking`) is what makes reopening a corpus fast, so neither copy pays.
    """
    import pyarrow as pa

    if kind == "json":
        import pyarrow.json as pa_json

        names = _first_json_row(path)
        if names == []:
            return  # blank lines only: no documents (Arrow would call it an error)
        if names is not None:  # None: a broken first line, which the reader fails on and `_check_json` names
            _require_field(names, text_field, str(path))
        parse = pa_json.ParseOptions(explicit_schema=pa.schema([(text_field, pa.string())]),
                                     unexpected_field_behavior="ignore")
        # Whole lines, a block at a time, each parsed as one Arrow block: Arrow's own streaming reader
        # fails on a line longer than its block (one long legal document), this never splits a line.
        with open(path, "rb") as fh:
            while lines := fh.readlines(BLOCK_BYTES):
                data = b"".join(lines)
                read = pa_json.ReadOptions(block_size=len(data) + 1, use_threads=False)
                yield from pa_json.read_json(pa.py_buffer(data), read, parse).to_batches()
    elif kind == "csv":
        import pyarrow.csv as pa_csv

        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            _require_field(next(csv.reader(fh), []), text_field, str(path))
        yield from pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),  # multi-line tickets, comments...
            convert_options=pa_csv.ConvertOptions(include_columns=[text_field],
                                                  column_types={text_field: pa.string()}))
    else:
        import pyarrow.parquet as pa_parquet

        parquet = pa_parquet.ParquetFile(path)
        _require_field(parquet.schema_arrow.names, text_field, str(path))
        # Rows per batch from the file's size per row: compressed, so a batch holds a few blocks of text.
        rows = max(1, BLOCK_BYTES * parquet.metadata.num_rows // max(1, path.stat().st_size))
        yield from parquet.iter_batches(batch_size=rows, columns=[text_field])


def _first_json_row(path: Path) -> list[str] | None:
    """The field names of the first JSON line (the streaming reader is given the schema up front)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return list(row) if isinstance(row, dict) else None
    return []


def _require_field(names: list[str], text_field: str, where: str) -> None:
    if text_field not in names:
        cols = ", ".join(n for n in names if n) or "none"
        raise FieldError("text_field", f"{where}: no text field {text_field!r} (fields: {cols}); "
                         "pick one as the {field}")


def _load_with_datasets(path: Path, kind: str, text_field: str) -> list[str]:
    from mlm_tui.home import configure_hf_environment

    configure_hf_environment()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for a malformed file; say which file
        raise UsageError(f"{path}: could not read it as {kind} ({_first_line(exc)})") from None
    return _column(ds, text_field, str(path))


def _is_json_array(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if b"\0" in head:
        raise UsageError(f"{path}: binary data, not JSON")
    return head.lstrip().startswith(b"[")


def _check_json(path: Path) -> None:
    """Find the first broken line of a JSON-lines file so the message can name it."""
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise UsageError(f"{path}: line {number} is not a JSON object")
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text") from None


def _column(ds: Any, text_field: str, where: str) -> list[str]:
    """The text column of a `datasets.Dataset` or an Arrow record batch, empty documents left out."""
    _require_field(ds.column_names, text_field, where)
    values = ds[text_field]
    values = values.to_pylist() if hasattr(values, "to_pylist") else values
    return [t for t in values if isinstance(t, str) and t.strip()]


def _load_hub(name: str, text_field: str) -> dict[str, list[str]]:
    from mlm_tui.home import configure_hf_environment

    configure_hf_environment()
    import datasets

    datasets.disable_progress_bars()
    try:
        dd = datasets.load_dataset(name)
    except Exception as exc:  # offline, unknown name, gated...: one line either way
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set)" if offline else ""
        raise UsageError(f"no corpus file, folder or reachable hub dataset called {name!r}{hint}: "
                         f"{_first_line(exc)}") from None
    return {split: _column(ds, text_field, f"{name}[{split}]") for split, ds in dd.items()}


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:200]
