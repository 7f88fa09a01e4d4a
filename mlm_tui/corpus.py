"""Corpora: local text files, JSON lines, CSV, Parquet, a folder of those, or a hub dataset.

A corpus is a set of named splits, each a list of documents (strings). Local JSON lines, CSV and Parquet
are read with Arrow's readers (the ones `datasets` uses inside), a JSON array and hub datasets with
`datasets` itself; plain `.txt` is one document per non-empty line, as `datasets`' text builder would
give, minus empty rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlm_tui.errors import UsageError, first_line

FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SPLIT_NAMES = ("train", "validation", "test", "unsupervised")


@dataclass
class Corpus:
    ref: str
    splits: dict[str, list[str]]
    text_field: str = "text"
    files: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.ref).name or self.ref


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


def load_corpus(ref: str, text_field: str = "text") -> Corpus:
    files = corpus_files(ref)
    if files is None:
        return Corpus(ref, _load_hub(ref, text_field), text_field)
    splits: dict[str, list[str]] = {}
    for split, paths in files.items():
        docs: list[str] = []
        for p in paths:
            docs.extend(_load_file(p, text_field))
        splits[split] = docs
    if not any(splits.values()):
        raise UsageError(f"{ref}: the corpus is empty (no documents with text)")
    return Corpus(ref, splits, text_field, files)


def _load_file(path: Path, text_field: str) -> list[str]:
    kind = FORMATS[path.suffix.lower()]
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: the file is empty")
    if kind == "text":
        try:
            with open(path, encoding="utf-8") as fh:
                return [line.rstrip("\r\n") for line in fh if line.strip()]
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not UTF-8 text (is it a binary file?)") from None
    if kind == "json" and _check_json(path):
        return _load_with_datasets(path, kind, text_field)  # a JSON array: datasets' own reader
    try:
        table = _read_arrow(path, kind)
    except Exception as exc:  # Arrow raises several types for a malformed file; say which file
        raise UsageError(f"{path}: could not read it as {kind} ({_first_line(exc)})") from None
    return _column(table, text_field, str(path))


def _read_arrow(path: Path, kind: str) -> Any:
    """Read a local file straight into an Arrow table, as `datasets` does inside, without its on-disk copy.

    `datasets.load_dataset` would write the whole corpus again as an Arrow cache file before we tokenize
    it once: for a 30 MB JSONL that is a second longer and about 150 MB more memory, for nothing, since the
    token cache (`chunking`) is what makes reopening a corpus fast.
    """
    if kind == "json":
        import pyarrow.json as pa_json

        return pa_json.read_json(path)
    if kind == "csv":
        import pyarrow.csv as pa_csv

        return pa_csv.read_csv(path)
    import pyarrow.parquet as pa_parquet

    return pa_parquet.read_table(path)


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


def _check_json(path: Path) -> bool:
    """Find the first broken line of a JSON-lines file so the message can name it."""
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if b"\0" in head:
        raise UsageError(f"{path}: binary data, not JSON")
    if head.lstrip().startswith(b"["):
        return True  # a JSON array: datasets reads it whole
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
    return False


def _column(ds: Any, text_field: str, where: str) -> list[str]:
    """The text column of a `datasets.Dataset` or a `pyarrow.Table`, empty documents left out."""
    if text_field not in ds.column_names:
        cols = ", ".join(ds.column_names) or "none"
        raise UsageError(f"{where}: no text field {text_field!r} (fields: {cols}); "
                         "pick one with --text-field")
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
