"""The brake on forgetting: an `auto` run that is losing general English fast slows down (issue 21).

The range test (`lr_find`) reads how fast the run's own text can be learned, not what learning it costs
elsewhere, and the two do not go together: with `starter`, licence texts diverge at a higher rate than
manual pages, yet at the same rate they cost general English twice as much (+14.7% against +7.0% at 1e-4
over 150 steps). So the run measures the cost instead of guessing it. At a tenth of its steps, it reads
its perplexity on general text (the chunks it measures before and after anyway, one evaluation); a rise
over `RISE` by then is taken for a run on course for a cost over the 10% the README's bar allows (most of a
run's forgetting comes in its first third, at the highest rates, and it then levels off), and the rate is
multiplied by `FACTOR` for the rest of the run. Once: a run that goes on forgetting after it is told so in
its numbers, not braked twice.

Fitted on three 150-step runs of `starter` at the range test's rates (README, "The default learning
rate"): by step 15 general English had risen 5.5% on licence texts (+18.3% at the end), 2.9% on man pages
(+7.6%) and 2.8% on FOLDOC (+4.4%). It does not carry over: on those two corpora rebuilt from another
machine's packages, step 15 read +3.0% for the licence texts (+13.8% at the end: not braked) and +5.2%
for the man pages (+6.7% unbraked: braked for nothing). What it misses, the pullback (`pullback`) bounds
where the run ends. Only `auto` runs brake: a rate given is used exactly as given, and a run with
`--no-general` has nothing to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AT = 0.1  # of the run's steps: where the rise is read
RISE = 0.04  # a rise of general perplexity over this by then brakes the run
FACTOR = 0.3  # of the rate, from then on


@dataclass(frozen=True)
class Brake:
    """A brake applied: where, on what rise, and by how much."""

    step: int
    rise: float
    factor: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rise": self.rise, "factor": self.factor}

    @classmethod
    def from_record(cls, recorded: Any) -> Brake | None:
        """The brake a run's config records, or None (none, or a record that does not read as one)."""
        if not isinstance(recorded, dict):
            return None
        values = [recorded.get(key) for key in ("step", "rise", "factor")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        return cls(int(values[0]), float(values[1]), float(values[2]))

    def describe(self) -> str:
        return (f"cut to {self.factor:.0%} at step {self.step}, where general English had risen "
                f"{self.rise:.1%} (over {RISE:.0%})")


def check_step(planned: int) -> int | None:
    """The step of a run of `planned` steps where the rise is read, or None for a run too short for one."""
    step = round(planned * AT)
    return step if 1 <= step < planned else None


def judge(step: int, before: float, now: float) -> Brake | None:
    """The brake for general perplexity `now` at `step`, against `before` training, or None."""
    rise = now / before - 1
    return Brake(step, rise, FACTOR) if rise > RISE else None


def with_brake(reason: str, recorded: Any) -> str:
    """An `auto` run's reason for its rate, with the brake its config records, if any."""
    brake = Brake.from_record(recorded)
    return reason if brake is None else f"{reason}; {brake.describe()}"
