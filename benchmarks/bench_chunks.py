"""Tokenize-and-chunk speed: `mlm-tui chunks CORPUS --chunk-size 128` as a whole process, against
(a) loading with `datasets` and encoding with the fast tokenizer in batches of 1,000, and (b) the seed
notebook's own pipeline (`datasets.map` keeping `word_ids`, then `group_texts` with `sum(lists, [])`).

    python benchmarks/bench_chunks.py [--mb 32]

The corpus is built offline from the Python installation's own source files (comments, docstrings and
code: a "code comments" domain), cut into ~2 KB documents, written as JSON lines.
Targets (issue 6): ours <= 0.8x (goal 0.5x) of (a), >= 4x (goal 6x) faster than (b), same token count;
a second run (cache) <= 0.25x of the first. Ours and (a) run --repeat times, interleaved; medians count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import sysconfig
import tempfile
from pathlib import Path

from _common import PYTHON, fresh_home, report, run_process

BASELINE = r'''
import sys, datasets
from transformers import AutoTokenizer
datasets.disable_progress_bars()
tok = AutoTokenizer.from_pretrained(sys.argv[2])
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[3])
texts = ds["text"]
total = 0
for i in range(0, len(ds), 1000):
    enc = tok(list(texts[i:i + 1000]))
    total += sum(len(x) for x in enc["input_ids"])
print(total)
'''

SEED = r'''
import sys, datasets
from transformers import AutoTokenizer
datasets.disable_progress_bars()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
chunk_size = 128
ds = datasets.load_dataset("json", data_files=sys.argv[1], cache_dir=sys.argv[3])

def tokenize_function(examples):
    result = tokenizer(examples["text"])
    if tokenizer.is_fast:
        result["word_ids"] = [result.word_ids(i) for i in range(len(result["input_ids"]))]
    return result

def group_texts(examples):
    concatenated_examples = {k: sum(examples[k], []) for k in examples.keys()}
    total_length = len(concatenated_examples[list(examples.keys())[0]])
    total_length = (total_length // chunk_size) * chunk_size
    result = {k: [t[i : i + chunk_size] for i in range(0, total_length, chunk_size)]
              for k, t in concatenated_examples.items()}
    result["labels"] = result["input_ids"].copy()
    return result

tokenized = ds.map(tokenize_function, batched=True, remove_columns=ds["train"].column_names)
total = sum(len(x) for x in tokenized["train"]["input_ids"])
lm = tokenized.map(group_texts, batched=True)
print(total)
'''


# What `mlm-tui chunks` holds before it reads a byte of the corpus: Python, its libraries, the tokenizer.
FLOOR = r'''
import sys
import pyarrow.json
import mlm_tui.cli
from mlm_tui.chunking import open_tokenizer
open_tokenizer(sys.argv[1])
'''


def build_corpus(path: Path, megabytes: float) -> None:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    target = int(megabytes * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for root in roots:
            for src in sorted(root.rglob("*.py")):
                try:
                    text = src.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                for start in range(0, len(text), 2000):
                    doc = text[start : start + 2000].strip()
                    if doc:
                        line = json.dumps({"text": doc}) + "\n"
                        out.write(line)
                        written += len(line)
                if written >= target:
                    return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=32)
    parser.add_argument("--skip-seed", action="store_true", help="leave out the (slow) seed pipeline")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs of ours and the baseline (medians)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlm-bench-chunks-"))
    corpus = work / "corpus.jsonl"
    build_corpus(corpus, args.mb)
    home = fresh_home()
    # The starter is assembled once, outside the timings, in a child: this process stays small, so the
    # peak RSS each measured child reports (which counts the pages it had at fork) is its own.
    assemble = "from mlm_tui.models import resolve; print(resolve('starter').path)"
    tok_dir = run_process([PYTHON, "-c", assemble])[2].strip()
    size = corpus.stat().st_size / 1e6
    print(f"tokenize and chunk, {size:.1f} MB JSONL, starter tokenizer, chunk 128, whole processes")

    ours_cmd = [PYTHON, "-m", "mlm_tui.cli", "chunks", str(corpus), "--chunk-size", "128", "--json"]
    ours_runs, base_runs = [], []
    for i in range(args.repeat):  # interleaved, each cold: no token cache, a fresh `datasets` cache
        shutil.rmtree(home / "cache" / "tokens", ignore_errors=True)
        ours_runs.append(run_process(ours_cmd))
        base_runs.append(run_process([PYTHON, "-c", BASELINE, str(corpus), tok_dir, str(work / f"hf-a{i}")]))
    stats = json.loads(ours_runs[0][2])["splits"]["train"]
    if any(int(out) != stats["tokens"] for _, _, out in base_runs):
        sys.exit(f"token counts differ: ours {stats['tokens']}, baseline {base_runs[0][2].strip()}")
    ours, ours_rss = statistics.median(r[0] for r in ours_runs), max(r[1] for r in ours_runs)
    base, base_rss = statistics.median(r[0] for r in base_runs), max(r[1] for r in base_runs)
    print(f"medians of {args.repeat} cold runs each: ours " + ", ".join(f"{r[0]:.2f}" for r in ours_runs)
          + " s; baseline " + ", ".join(f"{r[0]:.2f}" for r in base_runs) + " s")
    again, _, _ = run_process(ours_cmd)
    floor_rss = run_process([PYTHON, "-c", FLOOR, tok_dir])[1]
    print(f"tokens {stats['tokens']:,}, chunks {stats['chunks']:,}; "
          f"token array {stats['tokens'] * 4 / 1e6:.0f} MB; "
          f"peak RSS ours {ours_rss / 1e6:.0f} MB, baseline {base_rss / 1e6:.0f} MB")
    print(f"peak RSS ours above its floor (Python, libraries, tokenizer: {floor_rss / 1e6:.0f} MB): "
          f"{(ours_rss - floor_rss) / 1e6:.0f} MB, {(ours_rss - floor_rss) / (stats['tokens'] * 4):.2f}x "
          "the token array")
    report("ours vs datasets + tokenizer (batches of 1000)", ours, base, "s", "target <= 0.8, goal <= 0.5")
    report("second run (cache) vs first run", again, ours, "s", "target <= 0.25")
    if not args.skip_seed:
        seed, seed_rss, seed_out = run_process([PYTHON, "-c", SEED, str(corpus), tok_dir, str(work / "hf-b")])
        if int(seed_out) != stats["tokens"]:
            sys.exit(f"token counts differ: ours {stats['tokens']}, seed {seed_out.strip()}")
        report("ours vs the seed notebook's pipeline", ours, seed, "s", "target <= 0.25, goal <= 0.167")
        print(f"peak RSS seed pipeline {seed_rss / 1e6:.0f} MB")
    os.environ.pop("MLM_TUI_HOME", None)


if __name__ == "__main__":
    main()
