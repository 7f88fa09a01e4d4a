"""Vocabulary-view speed: `mlm-tui vocab CORPUS --json` as a whole process, cold (no token cache: it
tokenizes) and warm (token cache present), against a cold `mlm-tui chunks CORPUS` of the same corpus.

    python benchmarks/bench_vocab.py [--mb 32] [--repeat 3]

The corpus is bench_chunks.py's (the Python installation's own source as ~2 KB JSON-lines documents).
Targets (issue 13): cold vocab <= 2x a cold chunks; warm vocab under 1 s. Cold runs are interleaved and
each starts from an empty token cache; medians count. Peak RSS is reported beside the token array, and
each command's CPU seconds beside its wall time: on a shared, busy machine the wall times stretch with
the load while the CPU time of a mostly single-threaded warm run does not.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
from pathlib import Path

from _common import PYTHON, fresh_home, report, run_process
from bench_chunks import FLOOR, build_corpus


def timed(cmd: list[str]) -> tuple[float, int, str, float]:
    """run_process's (wall s, peak RSS, stdout) and the child's CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, rss, out = run_process(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, rss, out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlm-bench-vocab-"))
    corpus = work / "corpus.jsonl"
    build_corpus(corpus, args.mb)
    home = fresh_home()
    assemble = "from mlm_tui.models import resolve; print(resolve('starter').path)"
    tok_dir = run_process([PYTHON, "-c", assemble])[2].strip()  # the starter, assembled outside the timings
    print(f"vocabulary view, {corpus.stat().st_size / 1e6:.1f} MB JSONL, starter tokenizer, whole processes")

    chunks_cmd = [PYTHON, "-m", "mlm_tui.cli", "chunks", str(corpus), "--json"]
    vocab_cmd = [PYTHON, "-m", "mlm_tui.cli", "vocab", str(corpus), "--json"]
    chunks_runs, vocab_runs, warm_runs = [], [], []
    for _ in range(args.repeat):
        shutil.rmtree(home / "cache" / "tokens", ignore_errors=True)
        chunks_runs.append(timed(chunks_cmd))
        shutil.rmtree(home / "cache" / "tokens", ignore_errors=True)
        vocab_runs.append(timed(vocab_cmd))
        warm_runs.append(timed(vocab_cmd))
    tokens = json.loads(chunks_runs[0][2])["splits"]["train"]["tokens"]
    result = json.loads(warm_runs[0][2])
    if json.loads(vocab_runs[0][2]) != result:
        raise SystemExit("cold and warm vocab runs disagree")
    chunks = statistics.median(r[0] for r in chunks_runs)
    cold = statistics.median(r[0] for r in vocab_runs)
    warm = statistics.median(r[0] for r in warm_runs)
    floor_rss = run_process([PYTHON, "-c", FLOOR, tok_dir])[1]
    for name, runs in (("chunks cold", chunks_runs), ("vocab cold", vocab_runs), ("vocab warm", warm_runs)):
        print(f"{name}, {args.repeat} runs: wall " + ", ".join(f"{r[0]:.2f}" for r in runs) + " s; CPU "
              + ", ".join(f"{r[3]:.2f}" for r in runs) + " s")
    print(f"tokens {tokens:,} (token array {tokens * 4 / 1e6:.0f} MB); running words "
          f"{result['running_words']:,}, distinct {result['distinct_words']:,}, fertility "
          f"{result['fertility']:.2f} vs {result['reference']['fertility']:.2f} general")
    for name, runs in (("chunks cold", chunks_runs), ("vocab cold", vocab_runs), ("vocab warm", warm_runs)):
        rss = max(r[1] for r in runs)
        print(f"peak RSS {name}: {rss / 1e6:.0f} MB, {(rss - floor_rss) / 1e6:.0f} MB above the floor "
              f"({floor_rss / 1e6:.0f} MB: Python, libraries, tokenizer), "
              f"{(rss - floor_rss) / (tokens * 4):.2f}x the token array")
    report("vocab cold vs chunks cold", cold, chunks, "s", "target <= 2")
    report("vocab warm vs chunks cold", warm, chunks, "s", "target: warm under 1 s")
    report("vocab warm, CPU seconds vs chunks cold's", statistics.median(r[3] for r in warm_runs),
           statistics.median(r[3] for r in chunks_runs), "s")


if __name__ == "__main__":
    main()
