"""Memory of a training run: the peak RSS of `mlm-tui train`, phase by phase, and what the memory is.

    python benchmarks/bench_train_memory.py [--mb 2] [--steps 10] [--repeat 3]   (about 8 minutes, 2 cores)

Each run is the real CLI in a child process with a state root of its own, on a corpus of the Python
installation's own source (`bench_chunks.build_corpus`, 2 MB: 3,745 training chunks of 128), the `starter`
model, batch 16, no general text:

1. `train CORPUS --max-steps 10 --batch-size 16 --learning-rate 1e-4 --no-general` (the figure of issue 26),
   `--repeat` times: the same run's peak varies by 100-200 MB from run to run (how much freed memory the
   allocator holds depends on the order two threads free it in), so the figure is the median;
2. the same with the default rate (`auto`: a 10-step run is too short for a range test, so it takes the
   rate for the model's size);
3. `--max-steps 80` with the default rate, which runs the 8-step range test first; stopped after 10
   training steps, as the rest is the same loop;
4. run 1 again with glibc's `MALLOC_MMAP_THRESHOLD_=131072` (every block over 128 KB its own mapping, given
   back when freed): what the allocator's reuse of freed memory costs in peak RSS, and what giving it up
   costs in speed (a training process fixes it at 16 MB itself, `heap.map_large_blocks`, unless it is set);
5. in this process, the loss over the head's logits (320 masked rows, bf16, as in run 1) against a 30k and a
   250k vocabulary (BERT's, XLM-R's): the memory it takes above its input through forward and backward,
   the loss a run uses (`heads._RowwiseCrossEntropy`) against the whole-matrix cross-entropy as baseline.

Peak RSS is the child's `ru_maxrss`. Inside the child a thread samples every 5 ms (it starts before
the CLI's imports): RSS, its file-backed part (library code; the model's weights, which are a private
mapping of its safetensors file until training writes them) and, from glibc's `mallinfo2`, the heap in use,
the heap held free by the allocator (freed blocks it keeps for reuse: fragmentation) and the large blocks
it maps one by one. The rest of the anonymous memory is Python's own object arenas, thread stacks and the
weights' pages once written. Phases are read off the progress lines on stderr.
Goal (issue 26): run 1 under 1.2 GB, if nothing it buys is lost.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import PYTHON, fresh_home, run_process
from bench_chunks import build_corpus

GOAL_MB = 1200
BATCH, CHUNK = 16, 128
MB = 2**20
STOPPED = 99  # the exit status of a child the benchmark stopped (SIGUSR1) once it had seen enough

# The child: a sampling thread, then the CLI's own main() on the arguments after the output path.
CHILD = r'''
import atexit, ctypes, json, os, signal, sys, threading, time
out, sys.argv = sys.argv[1], ["mlm-tui", *sys.argv[2:]]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
try:
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
except (OSError, AttributeError):  # not glibc 2.33+: RSS only
    mallinfo2 = None
samples = []
def sample():
    status = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            status[key] = int(value.split()[0]) * 1024
    row = [time.monotonic(), status["VmRSS"], status["RssAnon"], status["RssFile"]]
    if mallinfo2 is not None:
        m = mallinfo2()
        row += [m.uordblks, m.fordblks, m.hblkhd]
    samples.append(row)
def loop():
    while True:
        sample()
        time.sleep(0.005)
threading.Thread(target=loop, daemon=True).start()
def save():
    sample()
    with open(out, "w") as f:
        json.dump(samples, f)
atexit.register(save)
def stop(signum, frame):  # the benchmark has seen enough: keep the samples, end at once
    save()
    os._exit(STOPPED)
signal.signal(signal.SIGUSR1, stop)
from mlm_tui.cli import main
sys.exit(main())
'''.replace("STOPPED", str(STOPPED))

# Progress lines that start a phase (the first words of the line), in the order a run goes through them.
PHASES = (("tokenizing", "tokenizing the corpus"), ("loading model", "loading the model"),
          ("measuring perplexity before", "perplexity before training"),
          ("learning-rate range test", "range test (8 steps)"), ("training ", "first training step"),
          ("step 1/", "training steps 2.."), ("measuring perplexity after", "perplexity after training"),
          ("saving the final model", "saving the final model"))


def measure(corpus: Path, work: Path, args: list[str], env: dict[str, str] | None = None,
            stop_after_step: int | None = None) -> dict[str, Any]:
    """One `mlm-tui train` child: peak RSS, the samples by phase, and the result (None when stopped)."""
    samples_path = work / f"samples-{time.monotonic_ns()}.json"
    command = [PYTHON, "-c", CHILD, str(samples_path), "train", str(corpus), *args, "--json"]
    marks: list[tuple[float, str]] = [(0.0, "start-up (imports)")]
    said: list[str] = []
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        assert proc.stderr is not None
        for line in proc.stderr:
            said.append(line.rstrip())
            phase = next((name for start, name in PHASES if line.startswith(start)), None)
            if phase is not None:
                marks.append((time.monotonic(), phase))
            if stop_after_step is not None and line.startswith(f"step {stop_after_step}/"):
                proc.send_signal(signal.SIGUSR1)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        result = out.read()
    stopped = stop_after_step is not None and os.waitstatus_to_exitcode(status) == STOPPED
    if os.waitstatus_to_exitcode(status) != 0 and not stopped:
        sys.exit(f"mlm-tui train {' '.join(args)} failed:\n" + "\n".join([*said, result][-6:]))
    samples = json.loads(samples_path.read_text()) if samples_path.exists() else []
    return {"peak": usage.ru_maxrss * 1024, "samples": samples, "marks": marks,
            "result": None if stopped else json.loads(result)}


def by_phase(run: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """Each phase with its sample of highest RSS, in the order the run went through them."""
    marks, rows = run["marks"], []
    for i, (start, name) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else float("inf")
        inside = [s for s in run["samples"] if start <= s[0] < end]
        if inside:
            rows.append((name, max(inside, key=lambda s: s[1])))
    return rows


def split(sample: list[float]) -> str:
    """RSS at a sample, in parts (see the module's docstring)."""
    _, rss, anon, file = sample[:4]
    if len(sample) < 7:
        return f"{rss / MB:6.0f} MB (file-backed {file / MB:.0f}, anonymous {anon / MB:.0f})"
    inuse, free, mapped = sample[4:7]
    other = anon - inuse - free - mapped
    return (f"{rss / MB:6.0f} MB = heap in use {inuse / MB:4.0f} + held free {free / MB:4.0f} + "
            f"large blocks {mapped / MB:4.0f} + other anonymous {other / MB:4.0f} + file-backed "
            f"{file / MB:3.0f}")


def tokens_per_s(run: dict[str, Any], steps: int) -> float:
    return steps * BATCH * CHUNK / run["result"]["train_runtime"]


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2`, as CHILD reads it."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def loss_peak(vocab: int, rowwise: bool) -> tuple[float, float]:
    """(MB the loss's forward and backward take above the hidden rows, seconds), sampled from glibc."""
    import threading

    import torch

    from mlm_tui.heads import _RowwiseCrossEntropy

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(320, 384, generator=generator, dtype=torch.bfloat16, requires_grad=True)
    decoder = torch.randn(vocab, 384, generator=generator, dtype=torch.bfloat16) * 0.05
    targets = torch.randint(0, vocab, (320,), generator=generator)

    def in_use() -> int:
        info = mallinfo2()  # one call: each walks every arena
        return info.uordblks + info.hblkhd

    base, peak, done = in_use(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], in_use())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    logits = hidden @ decoder.T
    loss = (_RowwiseCrossEntropy.apply(logits, targets) if rowwise else
            torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
    del logits
    loss.backward()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return (peak[0] - base) / MB, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=2, help="corpus size in MB of JSON lines")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of run 1 (the median is the figure)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlm-bench-memory-"))
    corpus = work / "corpus.jsonl"
    build_corpus(corpus, args.mb)
    fresh_home()
    # The starter is assembled once, in a child (see bench_chunks), and the token cache filled by the
    # first run; every run reads the same cache.
    run_process([PYTHON, "-c", "from mlm_tui.models import resolve; resolve('starter')"])
    common = ["--max-steps", str(args.steps), "--batch-size", str(BATCH), "--chunk-size", str(CHUNK),
              "--no-general"]
    given = [*common, "--learning-rate", "1e-4"]
    repeats = sorted((measure(corpus, work, given) for _ in range(args.repeat)), key=lambda r: r["peak"])
    main_run = repeats[len(repeats) // 2]
    auto = measure(corpus, work, common)
    tested = measure(corpus, work, ["--max-steps", "80", *common[2:]], stop_after_step=args.steps)
    mapped = measure(corpus, work, given, env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    load = os.getloadavg()
    print(f"mlm-tui train, starter, {corpus.stat().st_size / 1e6:.1f} MB corpus, {args.steps} steps of "
          f"batch {BATCH} x {CHUNK}, {main_run['result']['learning_rate']:.0e}; load average "
          f"{load[0]:.1f} on {os.cpu_count()} cores")
    print("peak RSS by phase (run 1, the median run), and what it is at that phase's peak:")
    for name, sample in by_phase(main_run):
        print(f"  {name:<28} {split(sample)}")
    every = ", ".join(f"{r['peak'] / MB:.0f}" for r in repeats)
    print(f"peak RSS, run 1, --learning-rate 1e-4, median of {args.repeat}: {main_run['peak'] / MB:6.0f} MB "
          f"({tokens_per_s(main_run, args.steps):.0f} tok/s; every run: {every} MB)")
    print(f"peak RSS, run 2, default rate (10 steps: no test): {auto['peak'] / MB:6.0f} MB")
    print(f"peak RSS, run 3, default rate, 80 steps (range test, then {args.steps} steps): "
          f"{tested['peak'] / MB:6.0f} MB")
    for name, sample in by_phase(tested):
        if name.startswith(("range test", "first training step")):
            print(f"  {name:<28} {split(sample)}")
    print(f"peak RSS, run 4, run 1 with MALLOC_MMAP_THRESHOLD_=131072: {mapped['peak'] / MB:6.0f} MB "
          f"({tokens_per_s(mapped, args.steps):.0f} tok/s)")
    met = "met" if main_run["peak"] / MB < GOAL_MB else "not met"
    print(f"goal: run 1 under {GOAL_MB} MB: {met}")
    heads = {}
    for vocab in (30522, 250002):
        loss_peak(vocab, True)  # the first call of each pays for kernels and buffers: not counted
        whole, rowwise = loss_peak(vocab, False), loss_peak(vocab, True)
        heads[vocab] = (whole, rowwise)
        print(f"the head's loss, vocabulary {vocab:,}: {rowwise[0]:.0f} MB above its input in "
              f"{rowwise[1]:.2f} s (whole-matrix cross-entropy: {whole[0]:.0f} MB in {whole[1]:.2f} s; "
              f"{rowwise[0] / whole[0]:.2f}x the memory)")
    print(json.dumps({"peak_mb": round(main_run["peak"] / MB),
                      "peaks_mb": [round(r["peak"] / MB) for r in repeats],
                      "auto_peak_mb": round(auto["peak"] / MB),
                      "range_test_peak_mb": round(tested["peak"] / MB),
                      "mmap_threshold_peak_mb": round(mapped["peak"] / MB),
                      "tokens_per_s": round(tokens_per_s(main_run, args.steps)),
                      "mmap_threshold_tokens_per_s": round(tokens_per_s(mapped, args.steps)),
                      "loss_mb": {vocab: [round(w[0]), round(r[0])] for vocab, (w, r) in heads.items()},
                      "load_average": round(load[0], 1)}))
    os.environ.pop("MLM_TUI_HOME", None)


if __name__ == "__main__":
    main()
