"""General English's perplexity every few steps of a run: how a run forgets.

The measurement the brake was fitted on and dropped by (README, "The learning rate";
`benchmarks/brake_fit/`): one run of the benchmark's settings (150 steps at batch 16, chunks of 128, 100
test chunks, seed 42), reading its general-English perplexity every `--every` steps; the pullback at the
run's end as the product has it, or with `--budget` (inf: none). The readings wrap the trainer's step from
outside: a measurement, not a feature.

    python benchmarks/bench_general_curve.py legal.jsonl --model starter --every 5 --out legal.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _common import grid_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--model", default="starter")
    parser.add_argument("--rate", default="auto", help="auto (the default) or a number")
    parser.add_argument("--every", type=int, default=5, help="read general English every N steps")
    parser.add_argument("--budget", type=float, help="the pullback's BUDGET (inf: none)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mlm_tui import pullback, training
    from mlm_tui.lifecycle import TrainingRun

    if args.budget is not None:
        pullback.BUDGET = args.budget
    config = grid_config(args.corpus, args.model, args.rate)
    readings: list[dict[str, float]] = []
    step_once = training._Steps._step

    def step_and_read(self: training._Steps, parts: training._Parts, plan: training.Plan, step: int) -> None:
        step_once(self, parts, plan, step)
        if (step + 1) % args.every == 0:
            ppl = self._general_perplexity(parts, plan, None)
            readings.append({"step": step + 1, "general": ppl, "rise": ppl / self.general["before"] - 1})

    training._Steps._step = step_and_read
    t0 = time.perf_counter()
    result = TrainingRun(config).run()
    keys = ("perplexity_before", "perplexity_after", "general_perplexity_before", "general_perplexity_after",
            "learning_rate", "learning_rate_reason")
    out = {"corpus": args.corpus.name, "model": args.model, "rate": args.rate,
           "budget": pullback.BUDGET,
           "result": {k: result[k] for k in keys}, "readings": readings, "wall": time.perf_counter() - t0}
    args.out.write_text(json.dumps(out, indent=1))
    drop = result["perplexity_after"] / result["perplexity_before"] - 1
    cost = result["general_perplexity_after"] / result["general_perplexity_before"] - 1
    print(f"{args.corpus.name} {args.model}: {drop:+.1%} on the domain, {cost:+.1%} on general English "
          f"({result['learning_rate_reason']})")


if __name__ == "__main__":
    main()
