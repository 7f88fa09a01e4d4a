"""Model references and loading.

A reference is resolved in this order: a local `save_pretrained` directory, a run id (that run's final
model), `starter` (the offline default), then a hub id. Loaded models stay in memory, so the workbench's
live fills and repeated API calls pay one forward pass each, not a load.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlm_tui.errors import FieldError, MlmError, UsageError
from mlm_tui.home import configure_hf_environment, quiet_transformers

if TYPE_CHECKING:
    from mlm_tui.fill import FillResult

DEFAULT_MODEL = "starter"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "model.pt")
SAFE_FILES = ("model.safetensors", "model.safetensors.index.json")
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


def check_model_dir(path: Path, *, allow_pickle: bool = False) -> None:
    """Refuse a directory that is not a model, or whose weights are pickles the user did not allow."""
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} is not a model directory (no config.json)")
    if any((path / name).is_file() for name in SAFE_FILES):
        return
    if any((path / name).is_file() for name in PICKLE_FILES):
        if allow_pickle:
            return
        raise FieldError(
            "allow_pickle",
            f"{path} holds pickle weights only (pytorch_model.bin), which can run code when loaded; "
            "convert them to safetensors, or allow them with {field} if you trust the source",
        )
    raise UsageError(f"{path} has no model weights (model.safetensors)")


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

    def fill(self, text: str, top_k: int = 5) -> FillResult:
        from mlm_tui.fill import fill

        with self._lock:
            return fill(self, text, top_k=top_k)


_cache: dict[tuple[str, bool], ModelHandle] = {}
_cache_lock = threading.Lock()


def load_tokenizer(ref: str | None, *, allow_pickle: bool = False) -> Any:
    """Only the tokenizer of a reference: chunking never needs the weights."""
    resolved = resolve(ref)
    from transformers import AutoTokenizer

    quiet_transformers()

    try:
        return AutoTokenizer.from_pretrained(resolved.source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
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


def _load_error(resolved: ResolvedRef, exc: Exception) -> MlmError:
    if resolved.kind == "hub":
        import os

        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such model"
        return UsageError(f"model {resolved.hub_id!r} is not in the local cache and {why}")
    return MlmError(f"could not load model from {resolved.source}: {str(exc).splitlines()[0]}")


def _load(resolved: ResolvedRef, *, allow_pickle: bool, device: str) -> ModelHandle:
    if resolved.path is not None:
        check_model_dir(resolved.path, allow_pickle=allow_pickle)
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.source, trust_remote_code=False)
        model = AutoModelForMaskedLM.from_pretrained(
            resolved.source, trust_remote_code=False, use_safetensors=None if allow_pickle else True
        )
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

