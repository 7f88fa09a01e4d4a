"""The probe's feature extraction (`probe.extract`) against two baselines on the same texts and model:

- bare forward passes over the same length-sorted batches (the floor: what the features must cost), and
- the naive loop, batches in corpus order padded to their longest text (what sorting saves).

    python benchmarks/bench_probe.py CORPUS.jsonl [--texts 512] [--model starter] [--repeat 3]

Target (issue 23): within 1.10x of the bare forward passes, and faster than the naive loop on texts of
mixed length. The texts are the corpus's first --texts rows of its "text" field.
"""

from __future__ import annotations

import argparse
import json

from _common import fresh_home, median_time, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--model", default="starter")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    fresh_home()
    import numpy as np
    import torch

    from mlm_tui.heads import encoder_hidden
    from mlm_tui.models import load_model
    from mlm_tui.probe import BATCH_SIZE, MAX_LENGTH, extract

    with open(args.corpus, encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line, _ in zip(fh, range(args.texts), strict=False)]
    handle = load_model(args.model)
    model, tok = handle.model, handle.tokenizer
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    order = np.argsort([-n for n in lengths], kind="stable")

    def batches(indices: list[int]) -> list[list[int]]:
        return [indices[i : i + BATCH_SIZE] for i in range(0, len(indices), BATCH_SIZE)]

    def forward(rows: list[int]) -> None:
        enc = tok([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_LENGTH,
                  return_tensors="pt")
        with torch.inference_mode():
            encoder_hidden(model, **enc)

    def bare_sorted() -> None:
        for rows in batches(order.tolist()):
            forward(rows)

    def naive() -> None:
        for rows in batches(list(range(len(texts)))):
            forward(rows)

    ours = median_time(lambda: extract(model, tok, texts), args.repeat, warmup=1)
    floor = median_time(bare_sorted, args.repeat, warmup=1)
    unsorted = median_time(naive, args.repeat, warmup=1)
    print(f"probe features: {len(texts)} texts of {min(lengths)}-{max(lengths)} tokens (mean "
          f"{np.mean(lengths):.0f}), model {handle.name}, batch {BATCH_SIZE}, "
          f"{torch.get_num_threads()} threads, median of {args.repeat}")
    report("extract vs bare sorted forward passes", ours, floor, target="target <= 1.10")
    report("extract vs corpus-order batches", ours, unsorted, target="target < 1")


if __name__ == "__main__":
    main()
