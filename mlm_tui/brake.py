"""The brake on forgetting, as the runs that had it recorded it: kept to read those runs (issue 21).

From 2026-12-05 until the pullback (`pullback`) replaced it the same day, an `auto` run read its general
English at a tenth of its steps and, if it had risen over 4% by then, trained on at 30% of its rate: a
guess at the run's cost from its start. It guessed wrong both ways on texts it was not fitted on (licence
texts +3.0% at step 15 and +13.8% at the end, not braked; man pages +5.2%, braked, +6.7% unbraked: README,
"Measured: does the default adapt?"), and the pullback bounds the cost where it is known, at the end. A
run that braked still trained at the cut rate (its checkpoints' scheduler keeps it, a resume too), so its
config's `lr_find.brake` record is read, and its reason and the Train pane say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RISE = 0.04  # the rise of general perplexity those runs braked over


@dataclass(frozen=True)
class Brake:
    """A brake a run applied: where, on what rise, and by how much."""

    step: int
    rise: float
    factor: float

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


def with_brake(reason: str, recorded: Any) -> str:
    """An `auto` run's reason for its rate, with the brake its config records, if any."""
    brake = Brake.from_record(recorded)
    return reason if brake is None else f"{reason}; {brake.describe()}"
