"""Shared helpers for the benchmark scripts: timing, a fresh state root, and result lines."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def fresh_home() -> Path:
    """A throwaway MLM_TUI_HOME, so no earlier cache flatters a cold measurement."""
    home = Path(tempfile.mkdtemp(prefix="mlm-bench-"))
    os.environ["MLM_TUI_HOME"] = str(home)
    return home


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_process(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and stdout of one whole child process; if it fails, the benchmark
    stops with the end of what the child said (stderr to a file, so neither pipe can fill and block)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, **(env or {})})
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            said = (out + err.read()).strip().splitlines()[-5:]
            raise SystemExit(f"{' '.join(args)} failed with status {status}:\n" + "\n".join(said))
    return elapsed, usage.ru_maxrss * 1024, out


def report(name: str, ours: float, baseline: float, unit: str = "s", target: str = "") -> None:
    ratio = ours / baseline if baseline else float("nan")
    line = f"{name:<48} ours {ours:10.4f} {unit}   baseline {baseline:10.4f} {unit}   ratio {ratio:6.3f}"
    print(line + (f"   ({target})" if target else ""), flush=True)


PYTHON = sys.executable


def write_corpus(path: Path, texts: Iterable[str]) -> Path:
    """A JSONL corpus the runs read: one `{"text": ...}` document a line."""
    with open(path, "w", encoding="utf-8") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}) + "\n")
    return path


def grid_config(corpus: Path, model: str, rate: str) -> Any:
    """A run of the learning-rate measurement's settings (README, "Measured: does the default adapt?"):
    150 steps at batch 16, chunks of 128, 100 test chunks, seed 42; `rate` is "auto" or a number."""
    from mlm_tui.run_settings import TrainConfig

    given = {} if rate == "auto" else {"learning_rate": float(rate)}
    return TrainConfig(corpus=str(corpus), model=model, max_steps=150, batch_size=16, chunk_size=128,
                       test_size=100, bpc_chars=0, **given)
