"""Checkpoints of a run: written to a temporary folder and renamed, so a crash or a full disk mid-write
leaves the earlier checkpoints as they were. The latest and the best (by eval perplexity) are kept.

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
import re
import shutil
from pathlib import Path
from typing import Any

from mlm_tui import atomic
from mlm_tui.errors import MlmError, first_line
from mlm_tui.runstore import Run

STEP_DIR = re.compile(r"^step-(\d+)$")


def _step_dirs(run: Run) -> list[tuple[int, Path]]:
    if not run.checkpoints_dir.is_dir():
        return []
    found = []
    for p in run.checkpoints_dir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def steps(run: Run) -> list[int]:
    """The steps the run has checkpoints of, oldest first."""
    return [step for step, _ in _step_dirs(run)]


def latest_checkpoint(run: Run) -> Path | None:
    dirs = _step_dirs(run)
    return dirs[-1][1] if dirs else None


def best_step(run: Run) -> int | None:
    try:
        return int(atomic.read_json(run.checkpoints_dir / "best.json")["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_model(model: Any, tokenizer: Any, path: Path) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


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
         rng_states: list[dict[str, Any]], best: bool = False) -> Path:
    """`rng_states`: one `rng_state()` per process, in process order."""
    import torch
    from safetensors.torch import save_file

    final = run.checkpoints_dir / f"step-{step:07d}"
    tmp = run.checkpoints_dir / f".tmp-step-{step:07d}"
    # This process holds the run's lock, so every half-written checkpoint here is a dead writer's.
    for stale in run.checkpoints_dir.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
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
        atomic.write_json(run.checkpoints_dir / "best.json", {"step": step})
    keep = {step, best_step(run)}
    for s, path in _step_dirs(run):
        if s not in keep:
            shutil.rmtree(path, ignore_errors=True)
    return final


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
