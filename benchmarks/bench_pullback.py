"""What would taking a run's final weights part of the way back to its start do? (WiSE-FT's interpolation)

The measurement behind `mlm_tui.pullback`, which bounds what an `auto` run forgets: where the run ends,
if general English rose over the budget, keep the weights at a share `alpha` of the way from the starting
ones to the trained ones (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022). One run of
the benchmark's settings (150 steps at batch 16, chunks of 128, 100 test chunks, seed 42), with the
pullback itself off unless `--budget` is given; before it measures and saves its final model, the run's
own test split and general English are measured at each `alpha` given, the weights put back to the trained
ones, and the run ends as it would have. The readings wrap the trainer from outside: a measurement, not a
feature.

    python benchmarks/bench_pullback.py legal.jsonl --model starter --out pullback-legal.json
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
    parser.add_argument("--budget", type=float, default=float("inf"), help="the pullback's own budget")
    parser.add_argument("--alphas", type=float, nargs="+",
                        default=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoModelForMaskedLM

    from mlm_tui import pullback, training
    from mlm_tui.lifecycle import TrainingRun

    pullback.BUDGET = args.budget
    config = grid_config(args.corpus, args.model, args.rate)
    readings: list[dict[str, float]] = []
    finish = training._Steps._finish

    def measure_then_finish(self: training._Steps, parts: training._Parts, plan: training.Plan, step: int,
                            runtime: float, ppl_before: float) -> dict:
        model = self.accelerator.unwrap_model(parts.wrapper).model
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        start = AutoModelForMaskedLM.from_pretrained(self.source).state_dict()
        t0 = time.process_time()
        with torch.no_grad():
            for alpha in args.alphas:
                model.load_state_dict({k: (start[k].to(v.dtype) + alpha * (v - start[k].to(v.dtype))
                                           if v.is_floating_point() else v) for k, v in trained.items()})
                test = self._perplexity(parts, plan, None)
                general = self._general_perplexity(parts, plan, None)
                readings.append({"alpha": alpha, "test": test, "drop": 1 - test / ppl_before,
                                 "general": general, "rise": general / self.general["before"] - 1})
                print(json.dumps(readings[-1]), flush=True)
            model.load_state_dict(trained)
        readings.append({"cpu_per_alpha": (time.process_time() - t0) / len(args.alphas)})
        return finish(self, parts, plan, step, runtime, ppl_before)

    training._Steps._finish = measure_then_finish
    result = TrainingRun(config).run()
    keys = ("perplexity_before", "perplexity_after", "general_perplexity_before", "general_perplexity_after",
            "learning_rate", "learning_rate_reason")
    out = {"corpus": args.corpus.name, "model": args.model, "rate": args.rate,
           "result": {k: result[k] for k in keys}, "readings": readings}
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["result"]))


if __name__ == "__main__":
    main()
