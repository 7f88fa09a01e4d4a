"""Checkpoints of a run: written to a temporary folder and renamed, so a crash or a full disk mid-write
leaves the earlier checkpoints as they were. The latest N (the run's `keep_checkpoints`) and the best (by
eval perplexity) are kept; with N = 0, none once the run completed. Which checkpoints a run has is the
run store's to say (`Run.checkpoint_steps`), for every reader.

A checkpoint holds the whole training state: the model (safetensors), the optimizer and scheduler state
(torch's format, read back with `weights_only=True`), the step, and the torch RNG states of every process
(safetensors), which drive dropout; the data order and the masks come from generators seeded by step, so
the numpy and Python RNGs play no part. Nothing in it is read with unrestricted unpickling, which is why
`Accelerator.save_state` (it pickles the RNG states) is not used.

    step-0000040/  model.safetensors, config.json, tokenizer files
                   optimizer.pt, scheduler.pt, rng_state.safetensors, trainer_state.json
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mlm_tui import atomic
from mlm_tui.errors import MlmError, first_line
from mlm_tui.runstore import BEST_CHECKPOINT, Run


def _write_model(model: Any, tokenizer: Any, path: Path) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    atomic.settle_modes(path)  # safetensors writes the weights private (0600)


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU and each CUDA device), as tensors."""
    import torch

    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save(run: Run, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, step: int,
         rng_states: list[dict[str, Any]], best: bool = False, keep: int = 1) -> Path:
    """`rng_states`: one `rng_state()` per process, in process order."""
    import torch
    from safetensors.torch import save_file

    final = run.checkpoint_path(step)
    tmp = final.with_name(f".tmp-{final.name}")
    # This process holds the run's lock, so every half-written checkpoint here is a dead writer's.
    for stale in run.checkpoints_dir.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    run.checkpoints_dir.mkdir(exist_ok=True)  # never `parents`: a deleted run is not re-created
    tmp.mkdir()
    try:
        _write_model(model, tokenizer, tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {f"{rank}.{name}": t.contiguous() for rank, st in enumerate(rng_states)
               for name, t in st.items()}
        save_file(rng, tmp / "rng_state.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if best:
        atomic.write_json(run.checkpoints_dir / BEST_CHECKPOINT, {"step": step})
    prune(run, max(1, keep))  # a run in progress keeps its latest, to resume from
    return final


def prune(run: Run, keep: int) -> None:
    """Delete all checkpoints but the latest `keep` and the best; with `keep` 0 (a completed run, which
    never resumes) the best goes too."""
    found = run.checkpoint_steps()
    kept = set(found[-keep:]) if keep else set()
    if keep and (best := run.best_checkpoint_step()) is not None:
        kept.add(best)
    for s in found:
        if s not in kept:
            shutil.rmtree(run.checkpoint_path(s), ignore_errors=True)
    if not keep:
        (run.checkpoints_dir / BEST_CHECKPOINT).unlink(missing_ok=True)


def restore(path: Path, optimizer: Any, scheduler: Any, rank: int = 0) -> tuple[int, dict[str, Any] | None]:
    """Load optimizer and scheduler state; return the step and this process's RNG state (None when the
    checkpoint has none for it: written by fewer processes, or before RNG states were kept).

    The files are torch's format read with `weights_only=True` and safetensors: tensors and plain
    containers only, so a checkpoint folder someone tampered with cannot run code when a run resumes.
    """
    import pickle

    import torch
    from safetensors.torch import load_file

    try:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        step = int(json.loads((path / "trainer_state.json").read_text())["step"])
        rng_path = path / "rng_state.safetensors"
        saved = load_file(rng_path) if rng_path.is_file() else {}
    except (OSError, pickle.UnpicklingError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise MlmError(f"checkpoint {path} cannot be restored ({first_line(exc)})") from None
    prefix = f"{rank}."
    mine = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
    return step, mine if "cpu" in mine else None


def save_final(run: Run, model: Any, tokenizer: Any) -> Path:
    tmp = run.dir / ".tmp-model"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_model(model, tokenizer, tmp)
        shutil.rmtree(run.model_path, ignore_errors=True)
        tmp.rename(run.model_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run.model_path
