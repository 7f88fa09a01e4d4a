"""Training throughput: `mlm-tui train` against the course's plain recipe, back to back, same machine.

    python benchmarks/bench_train.py [--steps 40] [--precision fp32|bf16|default]

Baseline: `transformers.Trainer` + `DataCollatorForLanguageModeling(mlm_probability=0.15)`; both on the
starter model, the same chunks, batch 16, chunk 128, the same number of steps, lr 2e-5, weight decay 0.01.
Tokens/s = steps x 16 x 128 / train_runtime (the training loop's seconds, as both report it).
`fp32` and `bf16` run both sides at that precision; `default` runs each as a user gets it with no flag
(ours: `auto`, bf16 on a CPU with native bf16, else fp32; the Trainer: fp32).
Target (issue 6): ours >= 1.5x (goal 2.5x) the baseline's tokens/s.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from _common import fresh_home, report
from bench_chunks import build_corpus

BATCH, CHUNK = 16, 128


def baseline(model_dir: str, chunks: list[list[int]], steps: int, precision: str, *, batch: int = BATCH,
             device: str = "cpu", learning_rate: float = 2e-5) -> tuple[float, float]:
    """The course's plain recipe: (train_runtime seconds, mean training loss). `bench_gpu.py` runs it on a
    GPU at its own batch and rate."""
    from datasets import Dataset
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    ds = Dataset.from_dict({"input_ids": chunks, "labels": [list(c) for c in chunks]})
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch,
                             max_steps=steps, learning_rate=learning_rate, weight_decay=0.01,
                             logging_steps=steps, save_strategy="no", report_to=[], use_cpu=device == "cpu",
                             bf16=precision == "bf16", disable_tqdm=True, seed=42)
    collator = DataCollatorForLanguageModeling(tokenizer=tok, mlm_probability=0.15)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
    metrics = trainer.train().metrics
    return metrics["train_runtime"], metrics["train_loss"]


def ours(corpus: str, steps: int, precision: str) -> tuple[float, float]:
    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig
    from mlm_tui.runstore import find_run

    result = TrainingRun(TrainConfig(corpus=corpus, model="starter", batch_size=BATCH, chunk_size=CHUNK,
                                     max_steps=steps, device="cpu", precision=precision, test_size=16,
                                     save_steps=10**6)).run()
    run = find_run(result["run_id"])
    assert run is not None
    losses = [r["loss"] for r in run.metrics() if "loss" in r]
    return result["train_runtime"], sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--precision", choices=["fp32", "bf16", "default"], default="fp32")
    args = parser.parse_args()
    fresh_home()
    work = Path(tempfile.mkdtemp(prefix="mlm-bench-train-"))
    corpus = work / "corpus.jsonl"
    build_corpus(corpus, 2)
    from mlm_tui.chunking import open_tokenizer, tokenize_corpus
    from mlm_tui.models import resolve

    model_dir = str(resolve("starter").path)
    split = tokenize_corpus(str(corpus), open_tokenizer("starter"))["train"]
    chunks = split.chunks(CHUNK)[: BATCH * args.steps].tolist()
    tokens = args.steps * BATCH * CHUNK
    default = args.precision == "default"
    ours_s, ours_loss = ours(str(corpus), args.steps, "auto" if default else args.precision)
    base_s, base_loss = baseline(model_dir, chunks, args.steps, "fp32" if default else args.precision)
    from mlm_tui.training import pick_precision

    what = f"defaults: ours {pick_precision('auto', 'cpu')}, Trainer fp32" if default else args.precision
    print(f"training throughput, {args.steps} steps x batch {BATCH} x chunk {CHUNK}, {what}, CPU")
    print(f"mean training loss: ours {ours_loss:.3f}, Trainer recipe {base_loss:.3f} "
          f"(perplexity-scale check: {math.exp(ours_loss):.0f} vs {math.exp(base_loss):.0f})")
    report("tokens/s, ours vs Trainer recipe", tokens / ours_s, tokens / base_s, "tok/s",
           "target >= 1.5, goal >= 2.5")
    print(json.dumps({"ours_runtime": ours_s, "baseline_runtime": base_s}))


if __name__ == "__main__":
    main()
