"""Checkpoints of a run: written to a temporary folder and renamed, so a crash or a full disk mid-write
leaves the earlier checkpoints as they were. The latest and the best (by eval perplexity) are kept."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from mlm_tui import atomic
from mlm_tui.errors import MlmError
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


def save(run: Run, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, step: int,
         best: bool = False) -> Path:
    import torch

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


def restore(path: Path, optimizer: Any, scheduler: Any) -> int:
    """Load optimizer and scheduler state and return the step.

    The files are torch's format read with `weights_only=True`: tensors and plain containers only, so a
    checkpoint folder someone tampered with cannot run code when a run resumes.
    """
    import pickle

    import torch

    try:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        return int(json.loads((path / "trainer_state.json").read_text())["step"])
    except (OSError, pickle.UnpicklingError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MlmError(f"checkpoint {path} cannot be restored ({first})") from None


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
