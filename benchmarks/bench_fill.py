"""Fill latency: `load_model("starter").fill(text)` against the bare forward and the fill-mask pipeline.

    python benchmarks/bench_fill.py [--repeat 200]

Target (issue 6): median within 1.15x (goal 1.05x) of the bare forward, and faster than the pipeline.
"""

from __future__ import annotations

import argparse

from _common import fresh_home, median_time, report

TEXT = "The doctor prescribed a new [MASK] for the patient's infection."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    fresh_home()
    import torch
    from transformers import pipeline

    from mlm_tui import load_model

    torch.set_num_threads(1)  # latency per call, undisturbed by thread scheduling noise
    handle = load_model("starter")
    model, tok = handle.model, handle.tokenizer

    def bare() -> None:
        with torch.inference_mode():
            model(**tok(TEXT, return_tensors="pt"))

    fill_mask = pipeline("fill-mask", model=model, tokenizer=tok, device="cpu")
    assert [f.token_id for f in handle.fill(TEXT).masks[0].fills] == [r["token"] for r in fill_mask(TEXT)]
    ours = median_time(lambda: handle.fill(TEXT, top_k=5), args.repeat)
    base = median_time(bare, args.repeat)
    pipe = median_time(lambda: fill_mask(TEXT, top_k=5), args.repeat)
    print(f"fill latency, median of {args.repeat}, one mask, model {handle.name} (1 thread)")
    report("fill vs bare forward", ours * 1e3, base * 1e3, "ms", "target <= 1.15, goal <= 1.05")
    report("fill vs pipeline('fill-mask')", ours * 1e3, pipe * 1e3, "ms", "target < 1")


if __name__ == "__main__":
    main()
