"""The pullback: an `auto` run that ends having forgotten too much keeps weights part of the way back to its
start (issue 21).

The brake it replaced (`brake`) guessed a run's cost on general English from a reading at a tenth of the run,
and on texts it was not fitted on it guessed wrong both ways (README, "Measured: does the default adapt?").
The cost is known for certain only where the run ends; so an `auto` run measures it there, and if general
English rose by more than `BUDGET`, it keeps the weights a share `alpha` of the way from its starting weights
to its trained ones: the largest share within the budget, searched on the same general text (WiSE-FT's
interpolation, Wortsman et al. 2022). At the same cost on general English that keeps more of the domain's gain
than a lower rate: on licence texts with `starter`, 0.8 of the way kept -50.4% on the domain for +7.7%, where
5e-5 from the start gave -41.1% for +3.6% and 1e-4 -52.7% for +11.4% (`benchmarks/bench_pullback.py`). A rate
given is trained as given and its weights kept as trained, as is a run with `--no-general` (nothing to read)
or one that extended its vocabulary (its new tokens have no starting weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUDGET = 0.10  # of general perplexity: the rise an `auto` run may end with (the README's bar)
STEPS = 4  # readings of general text in the search for alpha (each 0.2 s in a `starter` run's log here)


@dataclass(frozen=True)
class Pullback:
    """A pullback applied: the share of the way kept, the rise it ended with, and the one it mended."""

    alpha: float
    rise: float
    trained_rise: float

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "rise": self.rise, "trained_rise": self.trained_rise}

    @classmethod
    def from_record(cls, recorded: Any) -> Pullback | None:
        """The pullback a run's config records, or None (none, or a record that does not read as one)."""
        if not isinstance(recorded, dict):
            return None
        values = [recorded.get(key) for key in ("alpha", "rise", "trained_rise")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        return cls(*map(float, values))

    def describe(self) -> str:
        return (f"final weights {self.alpha:.2f} of the way from the start (general English "
                f"{self.rise:+.1%}; trained {self.trained_rise:+.1%}, over {BUDGET:.0%})")


def search(rise_at: Callable[[float], float], trained_rise: float, budget: float = BUDGET,
           steps: int = STEPS) -> tuple[float, float]:
    """The largest share alpha in [0, 1] whose rise (`rise_at(alpha)`) is within `budget`, found to within
    what `steps` readings can, and that rise; the rise grows with alpha, from none at the start (0) to
    `trained_rise` (over the budget) at the end. False position (Illinois): each reading is where the
    straight line between the nearest shares on either side of the budget crosses it, as the rise is
    close to straight in alpha, so a few readings (each an evaluation of general text) land near the
    budget where halving the interval would take twice as many."""
    low, low_rise, high, high_rise = 0.0, 0.0, 1.0, trained_rise  # the rises as the line takes them
    found = (0.0, 0.0)  # the largest share read within the budget, and its rise as read
    kept = 0  # which end the last reading kept: -1 the high one, +1 the low one
    for _ in range(steps):
        alpha = (low * (high_rise - budget) + high * (budget - low_rise)) / (high_rise - low_rise)
        alpha = min(max(alpha, low), high)  # a budget no share can meet (below none) points outside
        rise = rise_at(alpha)
        if rise <= budget:
            low, low_rise = alpha, rise
            found = max(found, (alpha, rise))
            if kept == -1:  # the high end held twice: halve its distance from the budget (Illinois)
                high_rise = budget + (high_rise - budget) / 2
            kept = -1
        else:
            high, high_rise = alpha, rise
            if kept == 1:
                low_rise = budget - (budget - low_rise) / 2
            kept = 1
    return found


def interpolate(model: Any, start: dict[str, Any], trained: dict[str, Any], alpha: float) -> None:
    """Set `model`'s weights `alpha` of the way from `start` to `trained` (state dicts of the same model;
    integer buffers, such as position ids, are left as they are). In place, so that each share the search
    reads asks for no new memory the size of the model."""
    import torch

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and name in start:
                tensor.copy_(start[name])
                tensor.lerp_(trained[name].to(tensor.device, tensor.dtype), alpha)


def explained(found: dict[str, Any]) -> str:
    """An `auto` run's reason for its rate, with what its config records was done after: the brake's cut,
    the pullback."""
    from mlm_tui.brake import with_brake

    reason = with_brake(str(found.get("reason")), found.get("brake"))
    pullback = Pullback.from_record(found.get("pullback"))
    return f"auto: {reason}" + (f"; {pullback.describe()}" if pullback is not None else "")
