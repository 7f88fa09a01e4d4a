"""Peak memory of a dataset in Hub layout read with `--streaming`, beside the same text as a local file.

    python benchmarks/bench_hub.py [--mb 32]

The corpus of `bench_chunks.py` (the Python installation's source as ~2 KB JSON-lines documents) is laid
out as a Hub dataset (a README whose `configs` name a subset's data files per split), which
`datasets.load_dataset` reads by path. Measured as whole processes, cold (no token cache):
`mlm-tui chunks DIR --subset code --streaming`, the same without `--streaming` (`datasets` prepares Arrow
files, then the token cache is written from them), and `mlm-tui chunks FILE.jsonl` on the file itself.
Target (issue 16): streaming's peak stays near the token array, as for local files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from _common import PYTHON, fresh_home, run_process
from bench_chunks import FLOOR, build_corpus

README = """---
configs:
- config_name: code
  data_files:
  - split: train
    path: code/train.jsonl
---
"""


# What streaming costs before it reads a document: the local-file floor, plus `datasets` and torch (which
# `IterableDataset` imports when torch is installed), and the first rows of the stream.
STREAM_FLOOR = FLOOR + r'''
import datasets
next(iter(datasets.load_dataset(sys.argv[2], "code", streaming=True)["train"]))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlm-bench-hub-"))
    (work / "ds" / "code").mkdir(parents=True)
    (work / "ds" / "README.md").write_text(README)
    corpus = work / "ds" / "code" / "train.jsonl"
    build_corpus(corpus, args.mb)
    home = fresh_home()
    assemble = "from mlm_tui.models import resolve; print(resolve('starter').path)"
    tok_dir = run_process([PYTHON, "-c", assemble])[2].strip()
    size = corpus.stat().st_size / 1e6
    print(f"{size:.1f} MB JSONL in Hub layout, starter tokenizer, whole processes, cold")
    chunks = [PYTHON, "-m", "mlm_tui.cli", "chunks", "--json"]
    cases = {"--streaming": [*chunks, str(work / "ds"), "--subset", "code", "--streaming"],
             "load_dataset (Arrow)": [*chunks, str(work / "ds"), "--subset", "code"],
             "local file": [*chunks, str(corpus)]}
    tokens = set()
    peaks = {}
    for name, cmd in cases.items():
        shutil.rmtree(home / "cache", ignore_errors=True)
        seconds, rss, out = run_process(cmd)
        peaks[name] = rss
        train = json.loads(out)["splits"]["train"]
        tokens.add(train["tokens"])
        arrow = sum(p.stat().st_size for p in (home / "cache").rglob("*.arrow"))
        print(f"{name:<22} {seconds:6.2f} s   peak RSS {rss / 1e6:5.0f} MB   Arrow files written "
              f"{arrow / 1e6:5.1f} MB   tokens {train['tokens']:,}")
    if len(tokens) != 1:
        sys.exit(f"token counts differ: {sorted(tokens)}")
    floor = run_process([PYTHON, "-c", FLOOR, tok_dir])[1]
    stream_floor = run_process([PYTHON, "-c", STREAM_FLOOR, tok_dir, str(work / "ds")])[1]
    print(f"token array {tokens.pop() * 4 / 1e6:.0f} MB; floors before the first document: local file "
          f"{floor / 1e6:.0f} MB (Python, libraries, tokenizer), streaming {stream_floor / 1e6:.0f} MB "
          "(the same, datasets, and torch, which IterableDataset imports)")
    print(f"above its floor: streaming {(peaks['--streaming'] - stream_floor) / 1e6:.0f} MB, local file "
          f"{(peaks['local file'] - floor) / 1e6:.0f} MB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
