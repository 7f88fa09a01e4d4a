"""Model references and loading.

A reference is resolved in this order: a local `save_pretrained` directory, a run id (that run's final
model), `starter` (the offline default), then a hub id. Loaded models stay in memory, so the workbench's
live fills and repeated API calls pay one forward pass each, not a load.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlm_tui.errors import FieldError, MlmError, UsageError, first_line
from mlm_tui.fill import MASK_ALIAS, NO_MASK, TOP_K
from mlm_tui.home import configure_hf_environment, quiet_transformers

if TYPE_CHECKING:
    from mlm_tui.fill import FillResult

DEFAULT_MODEL = "starter"
# What `from_pretrained` reads in a model folder, in its order of preference; `.safetensors` files hold
# tensors only, anything else it reads (`.bin`, `.pt`, `.pth`, `.ckpt`) goes through pickle.
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ResolvedRef:
    """Where a reference points: `path` for anything on disk, else `hub_id`."""

    ref: str
    kind: str  # "dir" | "run" | "starter" | "hub"
    path: Path | None = None
    hub_id: str | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else str(self.hub_id)


def _inside(folder: Path, name: str, named_by: Path) -> Path:
    """`folder / name`, refusing a name that leads out of the folder (`../x.bin`, an absolute path).

    Judged on the names, as transformers does: in the hub cache every file is a link into `blobs/`.
    """
    folder = Path(os.path.abspath(folder))
    path = Path(os.path.abspath(folder / name)) if isinstance(name, str) else folder
    if folder not in path.parents:
        raise UsageError(f"{named_by} names a weights file outside its folder ({name!r}); not loading it")
    return path


def weight_files(path: Path) -> list[Path]:
    """The weights files `from_pretrained` would read from a model folder, shards of an index included.

    Decided the way transformers decides (an explicit `transformers_weights` in config.json first, then the
    names in `WEIGHT_NAMES`), so the pickle check looks at what would really be loaded, not at names.
    """
    try:
        explicit = json.loads((path / "config.json").read_text(encoding="utf-8")).get("transformers_weights")
    except (OSError, ValueError, AttributeError):
        explicit = None
    names = [explicit] if isinstance(explicit, str) else WEIGHT_NAMES
    for name in names:
        file = _inside(path, name, path / "config.json")
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return [file]
        try:
            weight_map = json.loads(file.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(f"{file}: not a readable weights index (no weight_map)") from None
        return [_inside(path, shard, file) for shard in shards]
    return []


def check_model_dir(path: Path, *, allow_pickle: bool = False, local: bool = True) -> None:
    """Refuse a folder that is not a model, or whose weights would be unpickled without the user's leave.

    `local=False` is a hub snapshot holding only the small JSON files so far: what it would load is
    checked, missing weights are left for the download to fetch.
    """
    if local and not (path / "config.json").is_file():
        raise UsageError(f"{path} is not a model directory (no config.json)")
    files = weight_files(path)
    pickles = [f for f in files if f.suffix != ".safetensors"]
    if pickles and not allow_pickle:
        raise FieldError(
            "allow_pickle",
            f"{path} would load pickle weights ({pickles[0].name}), which can run code when loaded; "
            "convert them to safetensors, or allow them with {field} if you trust the source",
        )
    if not local:
        return
    if not files:
        raise UsageError(f"{path} has no model weights (model.safetensors)")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"{path}: the weights index names {missing[0].name}, which is missing")


def resolve(ref: str | None) -> ResolvedRef:
    """Turn a user's model reference into a location, without loading anything heavy."""
    configure_hf_environment()
    ref = (ref or DEFAULT_MODEL).strip()
    if not ref:
        raise UsageError("empty model reference")
    path = Path(ref).expanduser()
    if path.is_dir():
        return ResolvedRef(ref, "dir", path=path.resolve())
    from mlm_tui import runstore

    run = runstore.find_run(ref)
    if run is not None:
        model_path = run.model_path
        if not (model_path / "config.json").is_file():
            raise UsageError(f"run {run.run_id} has no final model yet (status: {run.status()})")
        return ResolvedRef(ref, "run", path=model_path)
    if runstore.RUN_ID.fullmatch(ref):  # shaped like a run id: saying "not on the hub" would mislead
        raise UsageError(f"no run called {ref!r} (see: mlm-tui runs)")
    if ref == DEFAULT_MODEL:
        from mlm_tui.starter import starter_path

        return ResolvedRef(ref, "starter", path=starter_path())
    looks_like_path = ref.startswith((".", "/", "~")) or path.suffix in {".bin", ".pt", ".safetensors"}
    if looks_like_path or not _HUB_ID.match(ref):
        raise UsageError(f"no model directory, run or hub id called {ref!r}")
    return ResolvedRef(ref, "hub", hub_id=ref)


@dataclass
class ModelHandle:
    """A loaded masked LM with its tokenizer; `path` is a directory `from_pretrained` loads."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    device: str = "cpu"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fill(self, text: str, top_k: int = TOP_K) -> FillResult:
        from mlm_tui.fill import fill

        with self._lock:
            return fill(self.model, self.tokenizer, text, top_k, device=self.device, name=self.name)


_cache: dict[tuple[str, bool], ModelHandle] = {}
_cache_lock = threading.Lock()


def check_hub_available(hub_id: str) -> bool:
    """Whether a hub model can be loaded now: True when it is cached, False when it must be downloaded
    (the Hub answered a quick probe); else a one-line UsageError at once (HF_HUB_OFFLINE set) or within
    about two seconds (no network), instead of huggingface_hub's half a minute of retries.

    The workbench's model dialog calls this before loading a hub id; loading itself calls it too.
    """
    from mlm_tui import hub

    configure_hf_environment()
    cached = hub.is_cached(hub_id, "model")
    why = hub.unavailable_reason()  # for a cached model too: no network means loading from the cache only
    if why is not None and not cached:
        raise UsageError(f"model {hub_id!r} is not in the local cache and {why}")
    return cached


def require_mask(text: str, model_ref: str | None) -> None:
    """Refuse a text with no mask before the model loads (seconds of importing torch): no `[MASK]`, nor
    the model's own mask token as its tokenizer files name it. A model whose files are not at hand (a hub
    id not yet fetched) is left to `fill`, which checks the tokenized text."""
    if MASK_ALIAS in text:
        return
    token = mask_token_of(model_ref)
    if token is not None and token not in text:
        raise UsageError(NO_MASK)


def mask_token_of(ref: str | None) -> str | None:
    """The mask token a local model's tokenizer files name, read without loading anything; None when they
    do not say (or the reference is not a local model)."""
    try:
        resolved = resolve(ref)
    except MlmError:
        return None
    if resolved.path is None:
        return None
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            token = json.loads((resolved.path / name).read_text(encoding="utf-8")).get("mask_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(token, dict):  # an AddedToken, as some tokenizers save it
            token = token.get("content")
        if isinstance(token, str) and token:
            return token
    return None


def load_tokenizer(ref: str | None, *, allow_pickle: bool = False) -> Any:
    """Only the tokenizer of a reference: chunking never needs the weights."""
    resolved = resolve(ref)
    _prepare_hub(resolved, allow_pickle)
    from transformers import AutoTokenizer

    quiet_transformers()

    try:
        return AutoTokenizer.from_pretrained(resolved.source, trust_remote_code=False)
    except Exception as exc:  # OSError, ValueError, a parser's own error type: one line either way
        raise _load_error(resolved, exc) from None


def load_model(ref: str | None = None, *, allow_pickle: bool = False, device: str = "cpu") -> ModelHandle:
    resolved = resolve(ref)
    key = (resolved.source + "@" + device, allow_pickle)
    with _cache_lock:
        handle = _cache.get(key)
        if handle is not None:
            return handle
        handle = _load(resolved, allow_pickle=allow_pickle, device=device)
        _cache[key] = handle
        return handle


def _prepare_hub(resolved: ResolvedRef, allow_pickle: bool) -> None:
    """Before a hub model is loaded: answer at once if it cannot be, and check what it would unpickle.

    Only the repository's JSON files are fetched for the check (a few KB); the weights come after.
    """
    if resolved.hub_id is None:
        return
    check_hub_available(resolved.hub_id)
    from huggingface_hub import snapshot_download

    from mlm_tui import hub

    try:
        snapshot = Path(snapshot_download(resolved.hub_id, allow_patterns=["*.json"],
                                          local_files_only=hub.offline_requested()))
    except Exception as exc:  # gated, no such repository, the network went away: one line
        raise _load_error(resolved, exc) from None
    check_model_dir(snapshot, allow_pickle=allow_pickle, local=False)


def load_weights(source: str, *, allow_pickle: bool = False) -> Any:
    """The masked LM at `source` (a checked folder or a prepared hub id), for filling and training.

    A damaged weights file is named with what to do about it; an assembled `starter` that fails to load
    is verified and, when damaged, rebuilt once.
    """
    from transformers import AutoModelForMaskedLM

    from mlm_tui import starter

    quiet_transformers()

    def load() -> Any:
        return AutoModelForMaskedLM.from_pretrained(
            source, trust_remote_code=False, use_safetensors=None if allow_pickle else True)

    try:
        model = load()
    except Exception as exc:
        path = Path(source)
        if not path.is_dir():
            raise
        if starter.is_assembled(path) and starter.repair(path):
            return load()
        damaged = damaged_weights(path)
        if damaged is None:
            raise
        raise MlmError(f"{damaged}: the weights file is damaged ({first_line(exc)[:120]}); "
                       f"{damage_advice(path)}") from None
    bad = nonfinite_weight(model)
    if bad is not None:
        raise MlmError(f"the model {source} gives NaN before any training: its weights hold NaN or infinite "
                       f"values ({bad}); {damage_advice(Path(source))}")
    return model


def nonfinite_weight(model: Any) -> str | None:
    """The name of the first parameter holding NaN or an infinity, if any: such a model's every loss and
    fill is NaN, and no learning rate can train it."""
    import torch

    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return name
    return None


def damaged_weights(path: Path) -> Path | None:
    """The first safetensors file of a model folder that is truncated or not safetensors at all."""
    from safetensors import safe_open

    for file in weight_files(path):
        if file.suffix != ".safetensors":
            continue
        try:
            with safe_open(file, framework="pt"):
                pass
        except Exception:  # SafetensorError, OSError: unreadable either way
            return file
    return None


def damage_advice(path: Path) -> str:
    from mlm_tui.home import runs_dir

    try:
        inside_runs = path.resolve().relative_to(runs_dir().resolve())
    except ValueError:
        return "copy, download or save the model again"
    run_id = inside_runs.parts[0]
    if "checkpoints" in inside_runs.parts:
        return f"delete {path} to resume run {run_id} from its earlier checkpoint, or train again"
    return (f"train run {run_id} again, or load one of its checkpoints with "
            f"--model {runs_dir() / run_id / 'checkpoints'}/step-N")


def _load_error(resolved: ResolvedRef, exc: Exception) -> MlmError:
    if resolved.kind == "hub":
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such model"
        return UsageError(f"model {resolved.hub_id!r} is not in the local cache and {why}")
    return MlmError(f"could not load model from {resolved.source}: {first_line(exc)}")


def _load(resolved: ResolvedRef, *, allow_pickle: bool, device: str) -> ModelHandle:
    if resolved.path is not None:
        check_model_dir(resolved.path, allow_pickle=allow_pickle)
    tokenizer = load_tokenizer(resolved.source if resolved.path is not None else resolved.ref,
                               allow_pickle=allow_pickle)
    import torch

    try:
        model = load_weights(resolved.source, allow_pickle=allow_pickle)
    except (OSError, ValueError) as exc:
        raise _load_error(resolved, exc) from None
    if tokenizer.mask_token is None:
        raise UsageError(f"{resolved.ref} has no mask token: it is not a masked language model")
    model.eval()
    model.to(torch.device(device))
    if resolved.path is not None:
        path = resolved.path
    else:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(resolved.hub_id, local_files_only=True))
    name = resolved.ref if resolved.kind != "dir" else resolved.path.name
    return ModelHandle(name=name, path=path, model=model, tokenizer=tokenizer, device=device)
