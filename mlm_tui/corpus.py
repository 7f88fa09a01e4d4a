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
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlm_tui.errors import FieldError, MissingTextField, UsageError, first_line

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
    if not path.is_dir():
        _require_regular(path)
        if path.suffix.lower() not in FORMATS:
            raise UsageError(f"{ref}: unsupported corpus format (use {', '.join(FORMATS)})")
        return {"train": [path]}
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS and not p.is_dir())
    for f in files:
        _require_regular(f)
    if not files:
        raise UsageError(f"{ref}: the folder holds no corpus files ({', '.join(FORMATS)})")
    splits: dict[str, list[Path]] = {}
    for f in files:
        stem = f.stem.lower()
        name = next((s for s in SPLIT_NAMES if stem == s or stem.startswith(s + "-") or f.parent.name == s),
                    None)
        splits.setdefault(name or "train", []).append(f)
    return splits


def _require_regular(path: Path) -> None:
    """Refuse a FIFO, a device or a socket (or a link to one): reading it would block or never end."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # a dangling link, no permission
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: not a regular file (a pipe, device or socket); copy the data to a file")


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
    """Each split's documents of local files as a restartable stream of batches, opened only when read."""
    files = corpus_files(ref)
    assert files is not None, "hub datasets are read by hub_splits"

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
        # The slow scans run only now, to name the first broken line.
        _check_utf8(path)
        if kind == "json":
            _check_json(path)
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
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, number, exc) from None
            if line.strip():
                batch.append(line.rstrip("\r\n"))
                size += len(line)
                if size >= BLOCK_BYTES:
                    yield batch
                    batch, size = [], 0
    if batch:
        yield batch


def _not_utf8(path: Path, number: int, exc: UnicodeDecodeError) -> UsageError:
    """Undecodable bytes are refused, not replaced: a silently changed corpus would train on mojibake."""
    byte, column = exc.object[exc.start], exc.start + 1
    return UsageError(f"{path}: line {number} is not UTF-8 text (byte 0x{byte:02x} at column {column}); "
                      "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _check_utf8(path: Path) -> None:
    """Name the first line that is not UTF-8, if any (run only after a reader failed on the file)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, number, exc) from None


def _arrow_batches(path: Path, kind: str, text_field: str) -> Iterator[Any]:
    """Record batches of the text column alone, straight from Arrow's readers, a block at a time.

    `datasets.load_dataset` would first write the whole corpus again as an Arrow cache file, and one
    `read_json` of the whole file would hold all of it as one table, before we tokenize it once: the token
    cache (`chunking`) is what makes reopening a corpus fast, so neither copy pays.
    """
    import pyarrow as pa

    if kind == "json":
        import pyarrow.json as pa_json

        row = _first_json_row(path)
        if row == {}:
            return  # blank lines only: no documents (Arrow would call it an error)
        if row is not None:  # None: a broken first line, which the reader fails on and `_check_json` names
            texts = [k for k, v in row.items() if isinstance(v, str)]
            _require_field(list(row), text_field, str(path), texts)
            _require_text(_json_kind(row[text_field]), text_field, str(path), texts)
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
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            names = next(csv.reader(fh), [])
        kinds = _csv_kinds(path)
        texts = [n for n, k in kinds.items() if k in TEXT_TYPES] if kinds is not None else None
        _require_field(names, text_field, str(path), texts)
        if kinds is not None and text_field in kinds:
            if kinds[text_field] in ("binary", "large_binary"):  # what Arrow makes of bytes not UTF-8
                _check_utf8(path)
            _require_text(kinds[text_field], text_field, str(path), texts)
        yield from _csv_batches(path, text_field)
    else:
        import pyarrow.parquet as pa_parquet

        parquet = pa_parquet.ParquetFile(path)
        schema = parquet.schema_arrow
        texts = [f.name for f in schema if str(f.type) in TEXT_TYPES]
        _require_field(schema.names, text_field, str(path), texts)
        _require_text(str(schema.field(text_field).type), text_field, str(path), texts)
        # Rows per batch from the file's size per row: compressed, so a batch holds a few blocks of text.
        rows = max(1, BLOCK_BYTES * parquet.metadata.num_rows // max(1, path.stat().st_size))
        yield from parquet.iter_batches(batch_size=rows, columns=[text_field])


CSV_MAX_BLOCK = 1 << 30  # Arrow's limit is 2 GB; a cell beyond this is not text anyone trains on


def _csv_parse() -> Any:
    import pyarrow.csv as pa_csv

    return pa_csv.ParseOptions(newlines_in_values=True)  # multi-line tickets, comments...


def _csv_kinds(path: Path) -> dict[str, str] | None:
    """The type Arrow infers for each column from the first block (numbers there mean a column that is not
    text); None when the first row is longer than a block: a cell that size is text, and the reader copes."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        inferred = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
                                   parse_options=_csv_parse())
    except pa.ArrowInvalid:
        return None
    return {f.name: str(f.type) for f in inferred.schema}


def _csv_batches(path: Path, text_field: str) -> Iterator[Any]:
    """The CSV's text column, a block at a time, whatever the size of a cell.

    Arrow's streaming reader needs every row to fit in one block. Blocks stay small (memory), and when a
    row does not fit (one ticket of several MB), reading starts again with blocks 16 times larger, past
    the rows already given out.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    parse = _csv_parse()
    convert = pa_csv.ConvertOptions(include_columns=[text_field], column_types={text_field: pa.string()})
    block, done = BLOCK_BYTES, 0
    while True:
        skip = done
        try:
            for batch in pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=block),
                                         parse_options=parse, convert_options=convert):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch, skip = batch.slice(skip), 0
                done += batch.num_rows
                yield batch
            return
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block >= CSV_MAX_BLOCK:
                raise
            block = min(block * 16, CSV_MAX_BLOCK)


def _first_json_row(path: Path) -> dict[str, Any] | None:
    """The first JSON line (the streaming reader is given the schema up front); {} when there is none."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return row if isinstance(row, dict) else None
    return {}


TEXT_TYPES = ("string", "large_string", "string_view")  # Arrow's types of a column of text


def _require_field(names: list[str], text_field: str, where: str,
                   text_columns: list[str] | None = None) -> None:
    """Refuse a corpus without the text column, naming the columns that hold text (all, if unknown)."""
    if text_field not in names:
        columns = [n for n in (names if text_columns is None else text_columns) if n]
        listed = ", ".join(columns) or "none"
        raise MissingTextField(f"{where}: no text field {text_field!r} (text fields: {listed}); "
                               "pick one with {field}", columns)


def _require_text(kind: str, text_field: str, where: str, text_columns: list[str] | None = None) -> None:
    """Refuse a column of numbers, dates or lists by its type, instead of calling the corpus empty; name
    the columns that hold text when they are known. A column of nulls only (Arrow's `null`, from a first
    block of empty cells) passes: its text may come later."""
    if kind in (*TEXT_TYPES, "null"):
        return
    columns = [n for n in text_columns or () if n and n != text_field]
    listed = f" (text fields: {', '.join(columns) or 'none'})" if text_columns is not None else ""
    raise MissingTextField(f"{where}: the text field {text_field!r} holds {kind}, not text{listed}; pick "
                           "another with {field}", columns)


def _json_kind(value: Any) -> str:
    """A JSON value's type in Arrow's words (what its reader would make of it), for `_require_text`."""
    if value is None or isinstance(value, str):
        return "null" if value is None else "string"
    kinds = ((bool, "bool"), (int, "int64"), (float, "double"), (list, "list"), (dict, "struct"))
    return next(name for kind, name in kinds if isinstance(value, kind))


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
    """Find the first broken line of a JSON-lines file (its bytes are UTF-8) so the message can name it."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}: line {number} is not a JSON object")


def _column(ds: Any, text_field: str, where: str) -> list[str]:
    """The text column of a `datasets.Dataset` or an Arrow record batch, empty documents left out."""
    features = getattr(ds, "features", None) or {}
    text_columns = [n for n, f in features.items() if getattr(f, "dtype", None) in TEXT_TYPES]
    _require_field(ds.column_names, text_field, where, text_columns if features else None)
    schema = getattr(ds, "schema", None)  # an Arrow batch; a Dataset describes its columns as features
    if schema is not None:
        kind = str(schema.field(text_field).type)
    else:
        feature = ds.features[text_field]
        kind = str(getattr(feature, "dtype", feature))
    _require_text(kind, text_field, where, text_columns if features else None)
    values = ds[text_field]
    values = values.to_pylist() if hasattr(values, "to_pylist") else values
    return [t for t in values if isinstance(t, str) and t.strip()]


def check_hub_dataset(name: str) -> bool:
    """Whether a hub dataset can be read now: True when cached, False when it must be downloaded (the Hub
    answered a quick probe); else one line at once (HF_HUB_OFFLINE) or within ~2 s (no network)."""
    from mlm_tui import hub
    from mlm_tui.home import configure_hf_environment

    configure_hf_environment()
    cached = hub.is_cached(name, "dataset")
    why = hub.unavailable_reason()  # also for a cached one: no network means reading the cache only
    if why is not None and not cached:
        raise UsageError(f"no corpus file, folder or cached hub dataset called {name!r}, and {why}")
    return cached


@dataclass(frozen=True)
class HubOptions:
    """How a dataset is read with `datasets.load_dataset`: a hub id, or a local folder in Hub layout (a
    README whose `configs` name each subset's data files per split), which it reads by path.

    `subset` is `load_dataset`'s `name=`; the train split defaults to `train`, the test split to `test`
    when the dataset has one. `streaming` reads an `IterableDataset`: rows go straight into the token
    cache a batch at a time, never materialised whole or written again as Arrow files.
    """

    subset: str | None = None
    train_split: str | None = None
    test_split: str | None = None
    streaming: bool = False

    @classmethod
    def of(cls, settings: Any) -> HubOptions:
        """The hub options among a run's or a command's settings (a `TrainConfig`, parsed arguments)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def given(self) -> bool:
        """Whether any option was given: then even a local folder is read by `load_dataset`."""
        return any((self.subset, self.train_split, self.test_split, self.streaming))


HubSplit = tuple[str, Batches]  # the dataset's own split name and its stream of document batches


def dataset_name(ref: str, options: HubOptions) -> str:
    """A dataset as messages name it: its reference, and its subset if one was chosen."""
    return ref + (f" ({options.subset})" if options.subset else "")


def open_dataset(ref: str, options: HubOptions) -> Any:
    """`datasets.load_dataset` of a hub id or a local folder in Hub layout (a `DatasetDict`, or an
    `IterableDatasetDict` when streaming), quiet, with one line for whatever stops it."""
    local = Path(ref).expanduser().exists()
    if not local:
        check_hub_dataset(ref)
    from mlm_tui.home import configure_hf_environment

    configure_hf_environment()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        return datasets.load_dataset(str(Path(ref).expanduser()) if local else ref, options.subset,
                                     streaming=options.streaming)
    except Exception as exc:  # an unknown subset, offline, gated...: one line either way
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set)" if offline and not local else ""
        raise UsageError(f"could not open the dataset {dataset_name(ref, options)}{hint}: "
                         f"{_first_line(exc)}") from None


def hub_splits(ref: str, text_field: str, options: HubOptions) -> dict[str, HubSplit]:
    """The train split (and the test split, if any) of a dataset `load_dataset` reads, as "train" and
    "test"; the dataset's own split names come along for messages and cache keys."""
    dd = open_dataset(ref, options)
    where = dataset_name(ref, options)
    names = list(dd)
    chosen = {"train": options.train_split or "train"}
    if options.test_split or "test" in names:
        chosen["test"] = options.test_split or "test"
    out: dict[str, HubSplit] = {}
    for role, split in chosen.items():
        if split not in names:
            raise FieldError(f"{role}_split", f"{where} has no split {split!r} (splits: {', '.join(names)}); "
                             "pick one with {field}")
        out[role] = (split, lambda ds=dd[split], split=split: _dataset_batches(ds, text_field,
                                                                               f"{where}[{split}]"))
    return out


def _dataset_batches(ds: Any, text_field: str, where: str) -> Iterator[list[str]]:
    """A `Dataset` or `IterableDataset`, a block of documents at a time, empty documents left out."""
    docs: list[str] = []
    size = 0
    for rows in ds.iter(batch_size=256):
        if text_field not in rows:
            texts = [k for k, v in rows.items() if v and isinstance(v[0], str)]
            _require_field(list(rows), text_field, where, texts)
        for text in rows[text_field]:
            if not isinstance(text, str):
                if text is None:
                    continue
                texts = [k for k, v in rows.items() if v and isinstance(v[0], str)]
                _require_text(_json_kind(text), text_field, where, texts)
            if text.strip():
                docs.append(text)
                size += len(text)
        if size >= BLOCK_BYTES:
            yield docs
            docs, size = [], 0
    if docs:
        yield docs


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:200]
