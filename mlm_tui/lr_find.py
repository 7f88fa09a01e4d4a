"""The learning-rate range test behind `--learning-rate auto` and `mlm-tui lr-find`.

Smith's range test (2017), as fastai's `lr_find` and Lightning's LR finder run it: train a throwaway copy
of the starting model for a few steps while the rate grows exponentially, record the loss at each step,
and read the rate off the curve. The default 2e-5 was tuned for DistilBERT over three GPU epochs; a small
model on a short run learns far more at a higher rate, and the curve says how high it can go.

The rule (`suggest`): find where the loss diverges, the first step whose loss exceeds `DIVERGED` times the
median loss of the steps before it, and take `FRACTION` of that rate (the run then decays linearly from
it); the test stops there. Not the steepest fall of the smoothed loss, as fastai reads it: a test may only
take a tenth of a run's steps (15 for a 150-step run), and on one batch of 8-16 chunks the loss of a step
varies by +-0.3 nats, more than the whole fall over the range, so the "steepest" point is noise. The
divergence is a jump of several nats that no such noise makes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlm_tui import atomic

if TYPE_CHECKING:
    import torch

    from mlm_tui.masking import TokenTables

CURVE_FILE = "lr_find.jsonl"  # in the run's folder: one {"step", "lr", "loss"} row per step of the test
MAX_STEPS = 100  # the test takes at most this many steps, and at most SHARE of the planned ones
SHARE = 0.1
MIN_STEPS = 8  # fewer points cannot show a fall and a turn
LR_MIN, LR_MAX = 1e-5, 1e-1  # pretrained encoders diverge within it (bert-base near 1e-3, smaller later)
FRACTION = 0.02  # of the rate where the loss diverged: 0.05 overshot in the README's measurement
DIVERGED = 1.5  # a loss this many times the median before it has diverged
MASK_STREAM = 1 << 40  # mask seeds of the test, apart from the run's steps (0, 1, ...) and orders (-1, ...)


@dataclass
class RangeTest:
    """A range test's curve and the rate it suggests, with the reason in words."""

    lrs: list[float]
    losses: list[float]
    suggested: float
    reason: str

    def curve(self) -> list[dict[str, float]]:
        return [{"lr": lr, "loss": loss} for lr, loss in zip(self.lrs, self.losses, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The record of the test in a run's config (without the curve, which is `CURVE_FILE`)."""
        return {"suggested": self.suggested, "reason": self.reason, "steps": len(self.lrs)}


def too_short(planned: int) -> str | None:
    """Why a run of `planned` steps is too short for a range test (a readable curve), or None."""
    if int(planned * SHARE) >= MIN_STEPS:
        return None
    return (f"{{field}} auto needs a run of at least {MIN_STEPS / SHARE:.0f} steps (its range test takes a "
            f"tenth of them, and at least {MIN_STEPS}); this one plans {planned}: give a rate, or more steps")


def steps_for(planned: int) -> int:
    """Steps of the test for a run of `planned` steps; a run too short for a readable curve is refused."""
    problem = too_short(planned)
    if problem is not None:
        from mlm_tui.errors import FieldError

        raise FieldError("learning_rate", problem)
    return min(MAX_STEPS, int(planned * SHARE))


def rates(steps: int, lr_min: float = LR_MIN, lr_max: float = LR_MAX) -> list[float]:
    """The rate of each step: exponential from lr_min to lr_max."""
    if steps == 1:
        return [lr_min]
    return [lr_min * (lr_max / lr_min) ** (i / (steps - 1)) for i in range(steps)]


def diverged(losses: Sequence[float]) -> bool:
    """Whether the last loss has diverged: over DIVERGED times the median before it (3 points at least)."""
    if len(losses) < 4:
        return not math.isfinite(losses[-1])
    before = sorted(losses[:-1])
    median = before[len(before) // 2]
    return not math.isfinite(losses[-1]) or losses[-1] > DIVERGED * median


def suggest(lrs: Sequence[float], losses: Sequence[float], fraction: float = FRACTION) -> RangeTest:
    """The rate a curve suggests, by the rule in the module's docstring."""
    at = next((k for k in range(len(losses)) if diverged(losses[: k + 1])), None)
    if at is None:
        rate = lrs[-1] * fraction
        reason = f"the loss did not diverge up to {lrs[-1]:.1e}; {fraction:g} of that rate"
    else:
        rate = lrs[at] * fraction
        reason = (f"the loss diverged at {lrs[at]:.1e} (to {losses[at]:.2f}, over {DIVERGED:g} times its "
                  f"median before); {fraction:g} of that rate")
    return RangeTest(list(lrs), list(losses), rate, reason)


def range_test(model: torch.nn.Module, batches: Callable[[int], torch.Tensor], tables: TokenTables, *,
               steps: int, seed: int, mlm_probability: float, whole_word: bool, weight_decay: float,
               device: torch.device | str, autocast: torch.dtype | None = None,
               on_point: Callable[[int, float, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> RangeTest:
    """Train a copy of `model` for `steps` steps at rates rising from LR_MIN to LR_MAX; `batches(k)` gives
    the token ids of step k. The model, and torch's random state (the run's dropout draws), are as they
    were after it: the copy is thrown away. The masks come from their own seeded stream."""
    import torch

    from mlm_tui.heads import MaskedOnlyMLM, param_groups
    from mlm_tui.masking import generator_for, mask_batch

    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    lrs, losses = [], []
    with torch.random.fork_rng(devices=devices):
        wrapper = MaskedOnlyMLM(copy.deepcopy(model)).to(device).train()
        optimizer = torch.optim.AdamW(param_groups(wrapper.model, weight_decay), lr=LR_MIN)
        for k, lr in enumerate(rates(steps)):
            if should_stop is not None and should_stop():
                from mlm_tui.errors import RunCancelled

                raise RunCancelled("cancelled during the learning-rate range test")
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, labels = mask_batch(batches(k), tables, mlm_probability, whole_word,
                                        generator_for(seed, MASK_STREAM + k))
            inputs, labels = inputs.to(device), labels.to(device)
            with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
                loss, _ = wrapper(inputs, torch.ones_like(inputs), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value)
            if on_point is not None:
                on_point(k, lr, value)
            if diverged(losses):
                break
        del wrapper, optimizer
    return suggest(lrs, losses)


def write_curve(run_dir: Path, test: RangeTest) -> None:
    rows = [{"step": k, **point} for k, point in enumerate(test.curve())]
    atomic.write_bytes(run_dir / CURVE_FILE, "".join(atomic.dumps(r) + "\n" for r in rows).encode())


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """The recorded curve of a run, `[{"lr", "loss"}]` by step (empty when it has none): for its chart."""
    import json

    path = run_dir / CURVE_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and all(isinstance(row.get(k), int | float) for k in ("lr", "loss")):
            rows.append({"lr": float(row["lr"]), "loss": float(row["loss"])})
    return rows

