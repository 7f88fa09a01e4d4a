"""The learning-rate range test that chooses a run's rate by default (`--learning-rate auto`, `lr-find`).

Smith's range test (2017), as fastai's `lr_find` and Lightning's LR finder run it: train the starting
model for a few steps while the rate grows exponentially, record the loss at each step, and read the rate
off the curve; the run then loads its model again. The course's 2e-5 was tuned for DistilBERT over three
GPU epochs; a small model on a short run learns far more at a higher rate, and the curve says how high it
can go.

The rule (`suggest`): find where the loss diverges and take `FRACTION` of that rate (the run then decays
linearly from it). The loss has diverged at a step when it and the next step both rise over the median
of the steps before by more than `MARGIN` nats or `NOISE` times the curve's own step-to-step noise
(the median absolute change between neighbouring steps), whichever is larger; a loss that is not finite
has diverged at once. Two steps, not one: on a batch of 16 chunks one step's loss varies by +-0.3 nats,
and a single noisy step over 1.5x the median read as divergence picked a rate 7x too low (issue 21).
The rate of divergence is where the loss crossed that bar, read between the step before and the step
over it (linear in the loss, geometric in the rate), not the rate of the step over it: a 150-step run's
test has 15 steps over four decades, nearly 2x apart, and reading whole steps put two corpora that
diverge alike on either side of a 2x jump (issue 21's man pages and FOLDOC with `starter`).
Not the steepest fall of the smoothed loss, as fastai reads it: a test takes only a tenth of a run's steps,
and over so few steps the noise is larger than the fall.

What the rate costs on general English is not on the curve: an `auto` run reads it where it ends and
takes its weights part of the way back if it rose too far (`pullback`).

A run too short for a readable curve (`too_short`) takes `rule_rate` instead: a rate from the model's size
alone, fitted on the same measurement (README, "The default learning rate").
"""

from __future__ import annotations

import itertools
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
BATCH_SHARE = 0.5  # of a micro-batch's rows, each step of the test (see `rows_for`)
LR_MIN, LR_MAX = 1e-5, 1e-1  # pretrained encoders diverge within it (bert-base near 1e-3, smaller later)
FRACTION = 0.02  # of the rate where the loss diverged (fitted: README, "The default learning rate")
MARGIN, NOISE = 1.0, 3.0  # a rise over the median before, in nats and in step-to-step noise, is divergence
CONFIRM = 2  # steps in a row over it
RULE_RATE, RULE_SIZE = 1e-4, 10.8e6  # `rule_rate`: `starter`'s fitted rate, and its size outside embeddings
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
    return (f"a run of {planned} steps is too short for a range test (it takes a tenth of the run's steps, "
            f"and needs {MIN_STEPS}: {MIN_STEPS / SHARE:.0f} steps or more)")


def steps_for(planned: int) -> int:
    """Steps of the test for a run of `planned` steps (one long enough: see `too_short`)."""
    return min(MAX_STEPS, int(planned * SHARE))


def rows_for(batch_size: int) -> int:
    """Rows of each step of the test: the first half of the run's micro-batch. The bar is a tenth more CPU
    time on a 150-step run, and 15 whole batches, a model loaded again and the (since dropped) brake's
    evaluation took 10-11% (issue 21); halved, the test's steps cost a twentieth of the run's. Adam's steps
    are as large at any batch, so the rate where the loss diverges moved little: with `starter` at seeds 42
    and 7 on four corpora, half the rows read 0.63-1.07 times the whole batch's rate (median 0.88); with its
    2-layer cut 0.87-3.0 (median 1.1), within its best rates (README;
    `benchmarks/bench_lr_find_rows.py`)."""
    return max(1, int(batch_size * BATCH_SHARE))


def rule_rate(model: Any, planned: int) -> RangeTest:
    """The rate for a run too short for a range test: RULE_RATE for a model of RULE_SIZE parameters
    outside its embeddings, scaled by the inverse square root of the model's own (a larger model takes a
    lower rate, as the range tests of the README's measurement found), within [LR_MIN, 1e-3]."""
    size = model.num_parameters(exclude_embeddings=True)
    rate = min(1e-3, max(LR_MIN, RULE_RATE * (RULE_SIZE / max(size, 1)) ** 0.5))
    # what the rate is first: the run view cuts this line at the pane's width
    reason = (f"the rate for a model of {size / 1e6:.1f} M parameters outside its embeddings: "
              f"{too_short(planned)}")
    return RangeTest([], [], rate, reason)


def rates(steps: int, lr_min: float = LR_MIN, lr_max: float = LR_MAX) -> list[float]:
    """The rate of each step: exponential from lr_min to lr_max."""
    if steps == 1:
        return [lr_min]
    return [lr_min * (lr_max / lr_min) ** (i / (steps - 1)) for i in range(steps)]


def diverged_at(losses: Sequence[float]) -> int | None:
    """The step where the loss diverged by the rule in the module's docstring, or None (not yet, or never)."""
    found = divergence(losses)
    return None if found is None else found[0]


def divergence(losses: Sequence[float]) -> tuple[int, float] | None:
    """The step where the loss diverged and the bar it rose over (inf for a loss that is not finite).

    A rise is judged against the steps before it, and needs CONFIRM steps in a row (3 steps before it at
    least: fewer show no median and no noise)."""
    import statistics

    for k, loss in enumerate(losses):
        if not math.isfinite(loss):
            return k, math.inf
        if k < 3 or k + CONFIRM > len(losses):
            continue
        before = losses[:k]
        noise = statistics.median(abs(b - a) for a, b in itertools.pairwise(before))
        bar = statistics.median(before) + max(MARGIN, NOISE * noise)
        if all(not math.isfinite(x) or x > bar for x in losses[k:k + CONFIRM]):
            return k, bar
    return None


def crossing(lrs: Sequence[float], losses: Sequence[float], at: int, bar: float) -> float:
    """The rate where the loss crossed `bar` between step `at - 1` (under it) and step `at` (over it),
    read linearly in the loss and geometrically in the rate; the step before's rate when the loss is not
    finite (the limit of an ever larger rise)."""
    if at == 0:
        return lrs[0]
    low, high = losses[at - 1], losses[at]
    share = (bar - low) / (high - low) if math.isfinite(high) and high > low else 0.0
    return lrs[at - 1] * (lrs[at] / lrs[at - 1]) ** min(1.0, max(0.0, share))


def suggest(lrs: Sequence[float], losses: Sequence[float], fraction: float = FRACTION) -> RangeTest:
    """The rate a curve suggests, by the rule in the module's docstring."""
    found = divergence(losses)
    if found is None:
        rate = lrs[-1] * fraction
        reason = f"the loss did not diverge up to {lrs[-1]:.1e}; {fraction:g} of that rate"
    else:
        at, bar = found
        where = crossing(lrs, losses, at, bar)
        rate = where * fraction
        rose = "was not finite" if math.isinf(bar) else f"crossed {bar:.2f} and stayed over it"
        reason = f"the loss diverged at {where:.1e} (it {rose}); {fraction:g} of that rate"
    return RangeTest(list(lrs), list(losses), rate, reason)


def range_test(model: torch.nn.Module, batches: Callable[[int], torch.Tensor], tables: TokenTables, *,
               steps: int, seed: int, mlm_probability: float, whole_word: bool, weight_decay: float,
               device: torch.device | str, autocast: torch.dtype | None = None,
               on_point: Callable[[int, float, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> RangeTest:
    """Train `model` for `steps` steps at rates rising from LR_MIN to LR_MAX; `batches(k)` gives the token
    ids of step k. The model is the caller's to throw away (a run loads its own again: a copy kept a second
    model in memory through the test, issue 26); torch's random state (the run's dropout draws) is as it
    was before. The masks come from their own seeded stream."""
    import torch

    from mlm_tui.heads import MaskedOnlyMLM, adamw
    from mlm_tui.lean import for_cpu_training
    from mlm_tui.masking import generator_for, mask_batch
    from mlm_tui.recompute import kept_cheaply

    for_cpu_training(model, device)  # as the run trains: on the CPU, keeping less (lean.py)
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    lrs, losses = [], []
    with torch.random.fork_rng(devices=devices):
        wrapper = MaskedOnlyMLM(model).to(device).train()
        optimizer = adamw(wrapper.model, weight_decay, LR_MIN, device)
        for k, lr in enumerate(rates(steps)):
            if should_stop is not None and should_stop():
                from mlm_tui.errors import RunCancelled

                raise RunCancelled("cancelled during the learning-rate range test")
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, labels = mask_batch(batches(k), tables, mlm_probability, whole_word,
                                        generator_for(seed, MASK_STREAM + k))
            inputs, labels = inputs.to(device), labels.to(device)
            with kept_cheaply(), torch.autocast(torch.device(device).type, dtype=autocast,
                                                enabled=autocast is not None):
                loss, _ = wrapper(inputs, torch.ones_like(inputs), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            lrs.append(lr)
            losses.append(value)
            if on_point is not None:
                on_point(k, lr, value)
            if diverged_at(losses) is not None:
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

