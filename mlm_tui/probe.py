"""Did adaptation help the task? A probe on a labelled corpus, one model against another.

Perplexity falling says a model reads the domain better, not that a task on it gained. The probe asks the
second question in one of two ways, its `method`; only how a model comes to its predictions on the test
part differs between them, the data, the figures and the verdict are shared:

- "linear" (the default, quick): frozen features from each model (the last hidden state, mean-pooled over
  each text's tokens, special tokens included, truncated at `MAX_LENGTH`), standardised, then
  scikit-learn's logistic regression with its C chosen by stratified cross-validation on the training part
  only (`linear_predictions`).
- "finetune" (the evaluation of Gururangan et al., 2020): a classification head on the encoder, the whole
  model trained for a number of steps on the training part (`finetune_predictions`).

Both models see the same training and test examples; the figures are accuracy and macro-F1 on the test part
with 95% bootstrap intervals, and for two models the paired difference (the same resampled test examples
scored under both), with a verdict in words.

The data: the corpus's own train and test (or validation) splits when it has them, else a stratified,
seeded hold-out. A class needs `MIN_TRAIN` training examples and one test example, or it is named and
left out. Features are cached per model and per text list (see `features`), so probing the same data again
costs the logistic regressions alone. Every library past the standard one, numpy included, loads on first
use: the CLI builds its parser from this module's defaults, and `mlm-tui --help` must stay instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlm_tui.errors import FieldError, MlmError, RunCancelled, UsageError, first_line

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mlm_tui.corpus import HubOptions
    from mlm_tui.models import ModelHandle

METHODS = ("linear", "finetune")
FEATURES = "mean-pooled last hidden state (special tokens included), standardised"
FEATURES_VERSION = "mean-last-v1"  # part of the cache key: a change of pooling must not read old features
MAX_LENGTH = 256  # tokens per text; longer texts are truncated (the model's own limit if lower)
BATCH_SIZE = 32
MIN_TRAIN = 5  # training examples a class needs: fewer cannot fill the cross-validation's folds
TEST_FRACTION = 0.2  # held out, per class, when the corpus has no test split of its own
DEFAULT_MAX_TRAIN = 4000
DEFAULT_MAX_TEST = 2000
FOLDS = 5
CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # the regularisation strengths cross-validation tries
BOOTSTRAP = 2000  # resamples of the test examples for the intervals
SEED = 0
# The fine-tune probe: the usual recipe for a BERT-sized encoder on a small classification task.
STEPS = 200
FINETUNE_BATCH_SIZE = 16
FINETUNE_LEARNING_RATE = 5e-5
FINETUNE_WEIGHT_DECAY = 0.01
WARMUP = 0.1  # of the steps: the learning rate rises linearly from 0, then falls linearly to 0 at the end

Label = str | int
Status = Callable[[str], None]
Cancelled = Callable[[], bool]
Progress = Callable[[int, int, str], None]  # (done, total, of what: "texts" or "steps")


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class Labelled:
    """Texts and their labels (all strings or all integers)."""

    texts: list[str]
    labels: list[Label]


def read_labelled(ref: str, text_field: str, label_field: str,
                  hub: HubOptions | None = None) -> dict[str, Labelled]:
    """The corpus's labelled examples by split ("train", and "test" when it has a test or validation
    split of its own). Rows with an empty text or no label are skipped."""
    from mlm_tui.corpus import HubOptions, corpus_files

    files = corpus_files(ref)
    options = hub or HubOptions()
    if files is None or options.given():
        return _read_dataset(ref, text_field, label_field, options)
    roles = {"train": files.get("train") or []}
    test = files.get("test") or files.get("validation")
    if test:
        roles["test"] = test
    if not roles["train"]:
        raise UsageError(f"{ref}: no training split (the files are named {', '.join(files)})")
    out = {}
    for role, paths in roles.items():
        parts = [_read_file(p, text_field, label_field) for p in paths]
        out[role] = Labelled([t for p in parts for t in p.texts], [x for p in parts for x in p.labels])
    _check_label_kinds(out, label_field, ref)
    return out


def columns(ref: str, hub: HubOptions | None = None) -> list[str]:
    """The columns of a corpus's first training file (or dataset split), for picking the label column:
    read from the header or schema, or the first row of JSON lines, not the whole file."""
    import json

    from mlm_tui.corpus import FORMATS, HubOptions, _first_json_row, _is_json_array, corpus_files

    files = corpus_files(ref)
    if files is None or (hub or HubOptions()).given():
        splits = _open_dataset(ref, hub or HubOptions())
        return list(next(iter(splits.values())).column_names)
    path = (files.get("train") or next(iter(files.values())))[0]
    kind = FORMATS[path.suffix.lower()]
    if kind == "text":
        return []
    if kind == "parquet":
        import pyarrow.parquet as pa_parquet

        return list(pa_parquet.ParquetFile(path).schema_arrow.names)
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        if kind == "csv":
            import csv

            return [n for n in next(csv.reader(fh), []) if n]
        if _is_json_array(path):
            rows = json.load(fh)
            return list(rows[0]) if isinstance(rows, list) and rows and isinstance(rows[0], dict) else []
    return list(_first_json_row(path) or {})


def _read_file(path: Path, text_field: str, label_field: str) -> Labelled:
    import pyarrow as pa

    from mlm_tui.corpus import FORMATS, _is_json_array

    kind = FORMATS[path.suffix.lower()]
    if kind == "text":
        raise UsageError(f"{path}: plain text has no label column; use CSV, JSON lines or Parquet with a "
                         f"{label_field!r} column")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: the file is empty")
    try:
        if kind == "csv":
            import pyarrow.csv as pa_csv

            parse = pa_csv.ParseOptions(newlines_in_values=True)
            convert = pa_csv.ConvertOptions(column_types={text_field: pa.string()})
            table = pa_csv.read_csv(path, parse_options=parse, convert_options=convert)
        elif kind == "parquet":
            import pyarrow.parquet as pa_parquet

            table = pa_parquet.read_table(path)
        elif _is_json_array(path):
            import json

            rows = json.loads(path.read_text(encoding="utf-8"))
            table = pa.Table.from_pylist(rows) if isinstance(rows, list) else None
            if table is None:
                raise UsageError(f"{path}: not a JSON array of objects")
        else:
            import pyarrow.json as pa_json

            table = pa_json.read_json(path)
    except UsageError:
        raise
    except Exception as exc:  # Arrow raises several types; a label of numbers and strings is the usual one
        raise UsageError(f"{path}: could not read it as {kind} ({first_line(exc)[:200]})") from None
    return _from_table(table, text_field, label_field, str(path))


def _read_dataset(ref: str, text_field: str, label_field: str, options: HubOptions) -> dict[str, Labelled]:
    """A hub dataset (or a local folder in Hub layout) through `datasets`; a ClassLabel column gives its
    class names."""
    from mlm_tui.corpus import dataset_name

    dd = _open_dataset(ref, options)
    where = dataset_name(ref, options)
    names = list(dd)
    chosen = {"train": options.train_split or "train"}
    test = options.test_split or next((n for n in ("test", "validation") if n in names), None)
    if test is not None:
        chosen["test"] = test
    out = {}
    for role, split in chosen.items():
        if split not in names:
            raise FieldError(f"{role}_split", f"{where} has no split {split!r} (splits: {', '.join(names)}); "
                             "pick one with {field}")
        ds = dd[split]
        feature = ds.features.get(label_field)
        classes = getattr(feature, "names", None)  # a ClassLabel: integers that stand for these names
        table = ds.with_format("arrow")[:]
        out[role] = _from_table(table, text_field, label_field, f"{where}[{split}]", classes)
    _check_label_kinds(out, label_field, ref)
    return out


def _open_dataset(ref: str, options: HubOptions) -> Any:
    """The dataset, read whole (the probe samples its parts from all of it), never as a stream."""
    from dataclasses import replace

    from mlm_tui.corpus import open_dataset

    return open_dataset(ref, replace(options, streaming=False))


def _from_table(table: Any, text_field: str, label_field: str, where: str,
                class_names: Sequence[str] | None = None) -> Labelled:
    import pyarrow as pa

    from mlm_tui.corpus import _require_field, _require_text

    names = table.column_names
    _require_field(names, text_field, where)
    if label_field not in names:
        others = ", ".join(n for n in names if n != text_field) or "none"
        raise FieldError("label_field", f"{where}: no label column {label_field!r} (other columns: "
                         f"{others}); pick one with {{field}}")
    _require_text(str(table.schema.field(text_field).type), text_field, where)
    kind = table.schema.field(label_field).type
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        raise FieldError("label_field", f"{where}: the label column {label_field!r} holds decimal numbers "
                         f"({kind}), not classes; map them to class names or whole numbers, or pick another "
                         "column with {field}")
    if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
        raise FieldError("label_field", f"{where}: the label column {label_field!r} holds {kind}, not "
                         "class labels (strings or whole numbers); pick another with {field}")
    texts, labels = [], []
    for text, label in zip(table.column(text_field).to_pylist(), table.column(label_field).to_pylist(),
                           strict=True):
        if not isinstance(text, str) or not text.strip() or label is None:
            continue
        if isinstance(label, str):
            label = label.strip()
            if not label:
                continue
        elif isinstance(label, bool):
            label = str(label).lower()
        elif class_names is not None and 0 <= label < len(class_names):
            label = class_names[label]
        texts.append(text)
        labels.append(label)
    return Labelled(texts, labels)


def _check_label_kinds(splits: dict[str, Labelled], label_field: str, ref: str) -> None:
    """One kind of label across the splits (a train split of numbers and a test split of names share no
    class), and some labels at all."""
    kinds = {type(x) for s in splits.values() for x in s.labels}
    if not kinds:
        raise FieldError("label_field", f"{ref}: the label column {label_field!r} is empty (no row has both "
                         "a text and a label); pick another with {field}")
    if len(kinds) > 1:
        raise FieldError("label_field", f"{ref}: the label column {label_field!r} mixes numbers and "
                         "strings across its splits; use one kind of label, or pick another column with "
                         "{field}")


@dataclass
class ProbeData:
    """What the probe trains and tests on: labels as class indices into `classes`."""

    train: Labelled
    test: Labelled
    classes: list[Label]  # sorted
    y_train: np.ndarray
    y_test: np.ndarray
    split: str  # "corpus" (its own splits) or "stratified" (held out here)
    left_out: list[dict[str, Any]] = field(default_factory=list)  # {"label", "train", "test"}

    def counts(self) -> list[dict[str, Any]]:
        import numpy as np

        train, test = np.bincount(self.y_train, minlength=len(self.classes)), np.bincount(
            self.y_test, minlength=len(self.classes))
        return [{"label": c, "train": int(a), "test": int(b)}
                for c, a, b in zip(self.classes, train, test, strict=True)]


def prepare(splits: dict[str, Labelled], max_train: int = DEFAULT_MAX_TRAIN,
            max_test: int = DEFAULT_MAX_TEST, seed: int = SEED) -> ProbeData:
    """The training and test parts: the corpus's own, or a stratified seeded hold-out; classes too small
    left out (named); each part cut to its maximum by a stratified, seeded sample."""
    import numpy as np

    rng = np.random.default_rng(seed)
    train = splits["train"]
    everything = Counter(train.labels) + Counter(splits["test"].labels if "test" in splits else [])
    if len(everything) < 2:
        only = next(iter(everything))
        raise FieldError("label_field", f"the label column holds one class only ({only!r}): a probe needs "
                         "two or more; pick another with {field}")
    if "test" in splits:
        test, split = splits["test"], "corpus"
    else:
        picked = _stratified(train.labels, lambda n: max(1, round(n * TEST_FRACTION)) if n >= 2 else 0, rng)
        rest = np.setdiff1d(np.arange(len(train.labels)), picked)
        train, test, split = _take(train, rest), _take(train, picked), "stratified"
    n_train, n_test = Counter(train.labels), Counter(test.labels)
    kept = sorted(c for c in everything if n_train[c] >= MIN_TRAIN and n_test[c] >= 1)
    left_out = [{"label": c, "train": n_train[c], "test": n_test[c]}
                for c in sorted(everything, key=lambda c: (-everything[c], str(c))) if c not in kept]
    if len(kept) < 2:
        small = ", ".join(f"{c!r} ({n_train[c]} train, {n_test[c]} test)"
                          for c in sorted(everything, key=str)[:8])
        raise UsageError(f"nothing left to probe: a class needs {MIN_TRAIN} training examples and one test "
                         f"example, and fewer than two classes have them ({small})")
    keep = set(kept)
    train = _take(train, np.array([i for i, c in enumerate(train.labels) if c in keep], dtype=np.int64))
    test = _take(test, np.array([i for i, c in enumerate(test.labels) if c in keep], dtype=np.int64))
    if len(train.labels) > max_train:
        share = max_train / len(train.labels)
        train = _take(train, _stratified(train.labels, lambda n: min(n, max(MIN_TRAIN, round(n * share))),
                                         rng))
    if len(test.labels) > max_test:
        share = max_test / len(test.labels)
        test = _take(test, _stratified(test.labels, lambda n: max(1, round(n * share)), rng))
    index = {c: i for i, c in enumerate(kept)}
    return ProbeData(train, test, kept, np.array([index[c] for c in train.labels], dtype=np.int64),
                     np.array([index[c] for c in test.labels], dtype=np.int64), split, left_out)


def _stratified(labels: list[Label], quota: Callable[[int], int], rng: np.random.Generator) -> np.ndarray:
    """Sorted row numbers of a seeded sample holding `quota(n)` of each class's n rows."""
    import numpy as np

    by_class: dict[Label, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    picked = [rng.permutation(rows)[: quota(len(rows))] for _, rows in sorted(by_class.items(),
                                                                                key=lambda kv: str(kv[0]))]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _take(data: Labelled, rows: np.ndarray) -> Labelled:
    return Labelled([data.texts[i] for i in rows], [data.labels[i] for i in rows])


# -- features -----------------------------------------------------------------------------------------
def features(handle: ModelHandle, texts: Sequence[str], *, batch_size: int = BATCH_SIZE,
             cancelled: Cancelled | None = None, progress: Callable[[int, int], None] | None = None,
             cache: bool = True) -> tuple[np.ndarray, bool]:
    """(float32 features of each text in order, whether they came from the cache).

    Cached under the state root by the model's weights (their paths, sizes and times), its tokenizer, the
    texts themselves and the pooling, written atomically: a changed model, text or pooling misses.
    """
    import numpy as np

    path = _cache_path(handle, texts) if cache else None
    if path is not None and path.is_file():
        try:
            found = np.load(path)
            if found.shape[0] == len(texts):
                return found, True
        except (OSError, ValueError):
            pass  # torn or foreign: compute again
    out = extract(handle.model, handle.tokenizer, texts, batch_size=batch_size, device=handle.device,
                  cancelled=cancelled, progress=progress)
    if path is not None:
        from mlm_tui import atomic

        buf = io.BytesIO()
        np.save(buf, out)
        with contextlib.suppress(OSError):  # an unwritable cache costs time next time, not this result
            path.parent.mkdir(parents=True, exist_ok=True)  # atomic writes make no folders
            atomic.write_bytes(path, buf.getvalue())
    return out, False


def extract(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = BATCH_SIZE,
            device: Any = "cpu", cancelled: Cancelled | None = None,
            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Mean-pooled last hidden states, in batches of texts of similar length (`_sorted_batches`)."""
    import numpy as np
    import torch

    from mlm_tui.heads import encoder_hidden

    out: np.ndarray | None = None
    model.eval()
    with torch.inference_mode():
        for rows, batch, mask in _sorted_batches(tokenizer, texts, batch_size, device, cancelled, progress):
            hidden = encoder_hidden(model, input_ids=batch, attention_mask=mask).float()
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            pooled = pooled.cpu().numpy()
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, special tokens included, cut at MAX_LENGTH (or the model's own limit)."""
    from mlm_tui.chunking import model_max_length

    limit = min(MAX_LENGTH, model_max_length(tokenizer) or MAX_LENGTH)
    return tokenizer(list(texts), truncation=True, max_length=limit, add_special_tokens=True)["input_ids"]


def _padded(ids: Sequence[list[int]], tokenizer: Any, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of token id lists, padded to the longest, and its attention mask, on `device`."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(x) for x in ids)
    batch = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for j, x in enumerate(ids):
        batch[j, : len(x)] = torch.tensor(x)
        mask[j, : len(x)] = 1
    return batch.to(torch.device(device)), mask.to(torch.device(device))


def _sorted_batches(tokenizer: Any, texts: Sequence[str], batch_size: int, device: Any,
                    cancelled: Cancelled | None, progress: Callable[[int, int], None] | None
                    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(row numbers, input ids, attention mask) of batches of texts of similar length, longest first: the
    largest batch comes first, so memory peaks at once, and padding is minimal. A cancel is seen before
    each batch; progress is told after the caller has used one."""
    import numpy as np

    ids = _token_ids(tokenizer, texts)
    order = np.argsort([-len(x) for x in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        if cancelled is not None and cancelled():
            raise RunCancelled("probe cancelled")
        rows = order[start : start + batch_size]
        yield rows, *_padded([ids[i] for i in rows], tokenizer, device)
        if progress is not None:
            progress(min(start + batch_size, len(order)), len(order))


def _cache_path(handle: ModelHandle, texts: Sequence[str]) -> Path | None:
    from mlm_tui.chunking import tokenizer_fingerprint
    from mlm_tui.home import root
    from mlm_tui.models import weight_files

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{FEATURES_VERSION}|{MAX_LENGTH}|{tokenizer_fingerprint(handle.tokenizer)}\n".encode())
    try:
        for f in weight_files(handle.path) or [handle.path]:
            st = f.stat()
            h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return root() / "cache" / "features" / f"{h.hexdigest()}.npy"


# -- the probe and its figures ------------------------------------------------------------------------
def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = SEED,
                cancelled: Cancelled | None = None) -> tuple[np.ndarray, float]:
    """Test predictions of a standardised logistic regression, and its C: the one of `CS` with the best
    mean accuracy over stratified folds of the training part (the smallest on a tie: the most
    regularised), as GridSearchCV would choose. Written as a loop, so that a cancel is seen between fits."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    def model(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    folds = min(FOLDS, int(np.bincount(y_train).min()))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x_train, y_train))
    scores = []
    # One BLAS thread: these fits are small, and threads fighting over shared cores made them 20-50 times
    # slower (0.1 s against 6 s for 1,400 x 384 features on 2 busy cores).
    with threadpool_limits(1):
        for c in CS:
            accuracies = []
            for fit_rows, check_rows in splits:
                if cancelled is not None and cancelled():
                    raise RunCancelled("probe cancelled")
                fitted = model(c).fit(x_train[fit_rows], y_train[fit_rows])
                accuracies.append(float((fitted.predict(x_train[check_rows]) == y_train[check_rows]).mean()))
            scores.append(np.mean(accuracies))
        best = CS[int(np.argmax(scores))]
        return model(best).fit(x_train, y_train).predict(x_test), best


def linear_predictions(handle: ModelHandle, data: ProbeData, name: str, *, cancelled: Cancelled | None = None,
                       progress: Callable[[int, int], None] | None = None, status: Status | None = None
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """The linear probe of one model: its test predictions, and what the report says of how it came to
    them (the C chosen, whether the features came from the cache)."""
    x, cached = features(handle, data.train.texts + data.test.texts, cancelled=cancelled, progress=progress)
    n = len(data.train.texts)
    if status is not None:
        status(f"fitting the probe on {name}'s features")
    pred, c = fit_predict(x[:n], data.y_train, x[n:], cancelled=cancelled)
    return pred, {"C": c, "cached_features": cached}


def warmup_steps(steps: int) -> int:
    """The fine-tune probe's warm-up: the first tenth of its steps."""
    return round(steps * WARMUP)


def finetune_predictions(handle: ModelHandle, data: ProbeData, steps: int = STEPS, *,
                         allow_pickle: bool = False, learning_rate: float = FINETUNE_LEARNING_RATE,
                         seed: int = SEED, cancelled: Cancelled | None = None,
                         progress: Progress | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The fine-tune probe of one model: the model's own folder loaded again with a new classification
    head (`AutoModelForSequenceClassification`: the family's own head, on its pooled output or first
    token), every weight trained `steps` steps on batches of the training part (AdamW, linear warm-up then
    decay, gradients clipped at 1, dropout on), then its test predictions; and its mean training loss over
    the last tenth of the steps. Seeded: the head's initial weights, dropout and the batches are the same
    from one probe to the next (on one machine). The loaded masked LM itself is left as it was."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

    from mlm_tui.heads import adamw
    from mlm_tui.home import quiet_transformers

    quiet_transformers()  # "some weights were newly initialised": the head, as it should be
    torch.manual_seed(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            handle.path, num_labels=len(data.classes), trust_remote_code=False,
            use_safetensors=None if allow_pickle else True)
    except Exception as exc:  # a family with no classification head, a config it cannot read: one line
        raise MlmError(f"could not put a classification head on {handle.name}: {first_line(exc)[:200]}"
                       ) from None
    device, tokenizer = torch.device(handle.device), handle.tokenizer
    model.to(device)
    optimizer = adamw(model, FINETUNE_WEIGHT_DECAY, learning_rate, device)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup_steps(steps), steps)
    ids = _token_ids(tokenizer, data.train.texts)
    size = min(FINETUNE_BATCH_SIZE, len(ids))
    rng = np.random.default_rng(seed)
    order = np.empty(0, dtype=np.int64)  # the rows still to be drawn this pass over the training part
    losses = []
    model.train()
    for step in range(steps):
        if cancelled is not None and cancelled():
            raise RunCancelled("probe cancelled")
        if len(order) < size:
            order = np.concatenate([order, rng.permutation(len(ids))])
        rows, order = order[:size], order[size:]
        batch, mask = _padded([ids[i] for i in rows], tokenizer, device)
        labels = torch.as_tensor(data.y_train[rows], device=device)
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps, "steps")
    model.eval()
    pred = np.empty(len(data.test.texts), dtype=np.int64)
    tell = None if progress is None else lambda done, total: progress(done, total, "texts")
    with torch.inference_mode():
        for rows, batch, mask in _sorted_batches(tokenizer, data.test.texts, BATCH_SIZE, device, cancelled,
                                                 tell):
            pred[rows] = model(input_ids=batch, attention_mask=mask).logits.argmax(-1).cpu().numpy()
    return pred, {"train_loss": float(np.mean(losses[-max(1, steps // 10):]))}


def f1_per_class(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """F1 of each class (0 for a class neither in the truth nor predicted, as scikit-learn's
    `zero_division=0`)."""
    import numpy as np

    tp = np.bincount(y[y == pred], minlength=k).astype(float)
    true, said = np.bincount(y, minlength=k), np.bincount(pred, minlength=k)
    denominator = true + said
    return np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)


def bootstrap(y: np.ndarray, preds: Sequence[np.ndarray], k: int, n: int = BOOTSTRAP,
              seed: int = SEED) -> dict[str, np.ndarray]:
    """Accuracy and macro-F1 of each prediction over `n` resamples of the test examples, every model on
    the same resamples (so their difference is paired): arrays of shape (models, n).

    A resample is a row of multinomial counts; a class absent from a resample's truth and predictions
    has no F1 there and is left out of that resample's mean."""
    import numpy as np

    m = len(y)
    weights = np.random.default_rng(seed).multinomial(m, np.full(m, 1 / m), size=n).astype(np.float64)
    truth = np.eye(k)[y]  # (m, k)
    t = weights @ truth
    acc, macro = [], []
    for pred in preds:
        said = np.eye(k)[pred]
        tp = weights @ (truth * said)
        p = weights @ said
        acc.append(weights @ (pred == y).astype(np.float64) / m)
        denominator = t + p
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(denominator > 0, 2 * tp / denominator, np.nan)
        macro.append(np.nanmean(f1, axis=1))
    return {"accuracy": np.array(acc), "macro_f1": np.array(macro)}


def interval(values: np.ndarray) -> list[float]:
    """The 95% percentile interval."""
    import numpy as np

    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def verdict(first: str, second: str, diff: float, ci: Sequence[float]) -> str:
    """In words, on the accuracy difference (second minus first) and its 95% interval."""
    points = f"{abs(diff) * 100:.1f} points ({ci[0] * 100:+.1f} to {ci[1] * 100:+.1f})"
    if ci[0] > 0:
        return f"{second} better by {points}"
    if ci[1] < 0:
        return f"{first} better by {points}"
    return f"no difference beyond noise ({second} {diff * 100:+.1f} points, {ci[0] * 100:+.1f} to " \
           f"{ci[1] * 100:+.1f})"


@dataclass
class ModelScore:
    model: str
    role: str  # how the verdict names it: "base", "adapted", or the reference
    accuracy: float
    accuracy_ci: list[float]
    macro_f1: float
    macro_f1_ci: list[float]
    per_class: list[dict[str, Any]]  # {"label", "f1", "support"}
    details: dict[str, Any]  # the method's own: linear {"C", "cached_features"}, finetune {"train_loss"}
    predictions: np.ndarray | None = field(repr=False, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "accuracy": self.accuracy, "accuracy_ci": self.accuracy_ci,
                "macro_f1": self.macro_f1, "macro_f1_ci": self.macro_f1_ci, "per_class": self.per_class,
                **self.details}


@dataclass
class ProbeReport:
    corpus: str
    text_field: str
    label_field: str
    data: ProbeData
    majority: dict[str, Any]
    models: list[ModelScore]
    difference: dict[str, Any] | None
    method: str = "linear"
    steps: int = STEPS  # of the fine-tune probe
    learning_rate: float = FINETUNE_LEARNING_RATE  # of the fine-tune probe

    def how(self) -> tuple[str, Any]:
        """The method's settings, as the JSON names them: the linear probe's features, the fine-tune's
        training."""
        if self.method == "linear":
            return "features", FEATURES
        return "finetune", {"steps": self.steps, "batch_size": FINETUNE_BATCH_SIZE,
                            "learning_rate": self.learning_rate,
                            "warmup_steps": warmup_steps(self.steps), "weight_decay": FINETUNE_WEIGHT_DECAY,
                            "max_length": MAX_LENGTH, "seed": SEED}

    def to_dict(self) -> dict[str, Any]:
        key, how = self.how()
        return {"corpus": self.corpus, "text_field": self.text_field, "label_field": self.label_field,
                "method": self.method, key: how, "split": self.data.split,
                "train": len(self.data.train.labels), "test": len(self.data.test.labels),
                "classes": self.data.counts(), "left_out": self.data.left_out, "majority": self.majority,
                "models": [m.to_dict() for m in self.models], "difference": self.difference}


def score(data: ProbeData, pred: np.ndarray, model: str, role: str, details: dict[str, Any]) -> ModelScore:
    """One model's point figures from its test predictions, whichever method made them (intervals come
    with `compare`)."""
    import numpy as np

    k = len(data.classes)
    f1 = f1_per_class(data.y_test, pred, k)
    support = np.bincount(data.y_test, minlength=k)
    per_class = [{"label": label, "f1": float(f), "support": int(s)}
                 for label, f, s in zip(data.classes, f1, support, strict=True)]
    return ModelScore(model, role, float((pred == data.y_test).mean()), [], float(f1.mean()), [], per_class,
                      details, pred)


def compare(data: ProbeData, scores: list[ModelScore]) -> dict[str, Any] | None:
    """Fill in each model's intervals; for two models, the paired difference and the verdict."""
    boot = bootstrap(data.y_test, [s.predictions for s in scores if s.predictions is not None],
                     len(data.classes))
    for i, s in enumerate(scores):
        s.accuracy_ci, s.macro_f1_ci = interval(boot["accuracy"][i]), interval(boot["macro_f1"][i])
    if len(scores) != 2:
        return None
    first, second = scores
    diff = second.accuracy - first.accuracy
    ci = interval(boot["accuracy"][1] - boot["accuracy"][0])
    return {"accuracy": diff, "ci": ci, "macro_f1": second.macro_f1 - first.macro_f1,
            "macro_f1_ci": interval(boot["macro_f1"][1] - boot["macro_f1"][0]),
            "of": f"{second.role} - {first.role}", "verdict": verdict(first.role, second.role, diff, ci)}


def majority(data: ProbeData) -> dict[str, Any]:
    """The baseline any probe must beat: always the most common training class."""
    import numpy as np

    top = int(np.bincount(data.y_train).argmax())
    pred = np.full_like(data.y_test, top)
    return {"label": data.classes[top], "accuracy": float((data.y_test == top).mean()),
            "macro_f1": float(f1_per_class(data.y_test, pred, len(data.classes)).mean())}


def check_method(method: str, steps: int, learning_rate: float) -> None:
    """Refuse a method or a fine-tune setting that cannot be, before anything is read or loaded."""
    if method not in METHODS:
        raise FieldError("method", f"{{field}} is {' or '.join(METHODS)}, not {method!r}")
    if steps < 1:
        raise FieldError("steps", f"{{field}} must be at least 1 (got {steps})")
    if not 0 < learning_rate < float("inf"):
        raise FieldError("learning_rate", f"{{field}} must be a number above 0 (got {learning_rate})")


def run_probe(corpus: str, label_field: str, models: Sequence[tuple[str, str, str]], *,
              text_field: str = "text", method: str = "linear", steps: int = STEPS,
              learning_rate: float = FINETUNE_LEARNING_RATE,
              hub: HubOptions | None = None, max_train: int = DEFAULT_MAX_TRAIN,
              max_test: int = DEFAULT_MAX_TEST, device: str = "auto", allow_pickle: bool = False,
              cancelled: Cancelled | None = None, status: Status | None = None,
              progress: Progress | None = None) -> ProbeReport:
    """The whole probe, for the CLI and the workbench alike. `models` are (what to load, how the verdict
    calls it, how the report names it); with two, the difference is the second's minus the first's.
    `method` is "linear" or "finetune" (`steps` steps). Nothing is written but the feature cache."""
    from mlm_tui.models import load_model
    from mlm_tui.training import pick_device

    say = status or (lambda message: None)
    check_method(method, steps, learning_rate)
    if not label_field:
        raise FieldError("label_field", "{field} is required: the corpus column that holds each text's class")
    say(f"reading {corpus}")
    data = prepare(read_labelled(corpus, text_field, label_field, hub), max_train, max_test)
    for c in data.left_out:
        say(f"left out class {c['label']!r}: {c['train']} train / {c['test']} test examples (a class needs "
            f"{MIN_TRAIN} train and 1 test)")
    device = pick_device(device)
    texts = None if progress is None else lambda done, total: progress(done, total, "texts")
    scores = []
    for ref, role, name in models:
        try:
            handle = load_model(ref, allow_pickle=allow_pickle, device=device)
        except MlmError as exc:
            raise type(exc)(f"model {name}: {exc}") from None
        if method == "linear":
            say(f"features from {name} ({len(data.train.labels)} train + {len(data.test.labels)} test texts)")
            pred, details = linear_predictions(handle, data, name, cancelled=cancelled, progress=texts,
                                               status=say)
        else:
            say(f"fine-tuning {name} with a classification head: {steps} steps of {FINETUNE_BATCH_SIZE} of "
                f"the {len(data.train.labels)} train texts, then predicting the {len(data.test.labels)} test "
                "texts")
            pred, details = finetune_predictions(handle, data, steps, allow_pickle=allow_pickle,
                                                 learning_rate=learning_rate, cancelled=cancelled,
                                                 progress=progress)
        scores.append(score(data, pred, name, role, details))
    difference = compare(data, scores)
    return ProbeReport(corpus, text_field, label_field, data, majority(data), scores, difference, method,
                       steps, learning_rate)


def probe_run(run_id: str, label_field: str, corpus: str | None = None, *, text_field: str | None = None,
              hub: HubOptions | None = None, method: str = "linear", steps: int = STEPS,
              learning_rate: float = FINETUNE_LEARNING_RATE, **kwargs: Any) -> ProbeReport:
    """`run_probe` of a run's base model against its final model (or the last checkpoint of a run that
    ended without one: `runstore.model_refs`), on the run's own corpus, read with its hub options, unless
    another is given (then its text field too, unless given)."""
    from mlm_tui.corpus import HubOptions
    from mlm_tui.runstore import model_refs

    check_method(method, steps, learning_rate)
    refs = model_refs(run_id)
    config = refs.config
    name = run_id if refs.model == refs.run.model_path else f"{run_id} ({refs.which})"
    if corpus is None and hub is None:
        hub = HubOptions.of(config)
    try:
        models = [(refs.base, "base", config.model), (str(refs.model), "adapted", name)]
        return run_probe(corpus or config.corpus, label_field, models,
                         text_field=text_field or config.text_field, hub=hub, method=method, steps=steps,
                         learning_rate=learning_rate, allow_pickle=config.allow_pickle, **kwargs)
    except FieldError as exc:
        if corpus is not None or exc.field != "label_field":
            raise
        raise FieldError("label_field", f"{exc.template}; or name a labelled corpus after the run id "
                         "(the run's own was read)") from None


def summary_lines(report: ProbeReport) -> list[str]:
    """The report as the CLI prints it (and the workbench shows it)."""
    d = report.data
    where = "the corpus's own train/test splits" if d.split == "corpus" else \
        f"a stratified hold-out of {TEST_FRACTION:.0%} (seed {SEED})"
    if report.method == "linear":
        how = f"features: {FEATURES}; logistic regression, C by {FOLDS}-fold CV on the train part"
    else:
        ft = report.how()[1]
        n, warmup = ft["steps"], ft["warmup_steps"]
        how = (f"fine-tuned: a classification head on each model, all weights trained {n} step"
               f"{'' if n == 1 else 's'} of {ft['batch_size']} train texts (AdamW, learning rate "
               f"{ft['learning_rate']:g}, {warmup} warm-up step{'' if warmup == 1 else 's'}, "
               f"seed {ft['seed']})")
    lines = [f"{report.corpus}: {len(d.train.labels):,} train / {len(d.test.labels):,} test examples, "
             f"{len(d.classes)} classes of {report.label_field!r}, {where}", how]
    if d.left_out:
        lines.append("left out (too few examples): " + ", ".join(
            f"{c['label']!r} ({c['train']} train, {c['test']} test)" for c in d.left_out))
    m = report.majority
    lines.append(f"majority class {m['label']!r}: accuracy {m['accuracy']:.1%}, macro-F1 {m['macro_f1']:.1%}")
    width = max(12, *(len(s.model) for s in report.models))
    lines.append(f"{'model':<{width}}  {'accuracy (95% CI)':<24}  macro-F1 (95% CI)")
    for s in report.models:
        lines.append(f"{s.model:<{width}}  {_pct(s.accuracy, s.accuracy_ci):<24}  "
                     f"{_pct(s.macro_f1, s.macro_f1_ci)}")
    if report.difference is not None:
        lines.append(f"difference ({report.difference['of']}): {report.difference['verdict']}")
    return lines


def _pct(value: float, ci: Sequence[float]) -> str:
    return f"{value:.1%} ({ci[0]:.1%} to {ci[1]:.1%})"
