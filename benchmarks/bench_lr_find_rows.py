"""Does the range test read the same rate on half of each batch as on the whole one?

The measurement behind `mlm_tui.lr_find.rows_for` (README, "The learning rate"): `mlm-tui lr-find` for a
150-step run at batch 16 (chunks of 128, the benchmark's settings), once on whole batches and once on the
first half of each, for each corpus and model and seed given, each row the suggested rate, the test's
steps and the process CPU time of the whole `lr-find` (tokenizing, loading and testing). The rows a test
trains on are set from outside (`lr_find.rows_for`): a measurement, not a feature.

    python benchmarks/bench_lr_find_rows.py legal.jsonl man.jsonl --model starter --seeds 42 7 \
        --out benchmarks/lr_find_rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", type=Path, nargs="+")
    parser.add_argument("--model", nargs="+", default=["starter"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True, help="one JSON row per test, appended")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from accelerate.state import AcceleratorState

    from mlm_tui import lr_find
    from mlm_tui.run_settings import TrainConfig
    from mlm_tui.training import FineTune

    half = lr_find.rows_for
    for model in args.model:
        for corpus in args.corpora:
            for seed in args.seeds:
                for rows, choose in ((args.batch_size, lambda batch: batch), (half(args.batch_size), half)):
                    lr_find.rows_for = choose
                    AcceleratorState._reset_state()
                    config = TrainConfig(corpus=str(corpus), model=model, max_steps=150,
                                         batch_size=args.batch_size, chunk_size=128, bpc_chars=0, seed=seed)
                    cpu = time.process_time()
                    test = FineTune(config).find_rate()
                    row = {"corpus": corpus.stem, "model": Path(model).name, "seed": seed, "rows": rows,
                           "rate": test.suggested, "steps": len(test.lrs), "cpu": time.process_time() - cpu,
                           "reason": test.reason}
                    print(json.dumps(row), flush=True)
                    with args.out.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
