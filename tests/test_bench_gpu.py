"""`benchmarks/bench_gpu.py`, the GPU measurement in one command, run here on the CPU at a tiny shape so
that the day a GPU is at hand it is one call that works."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_gpu.py"


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # TMPDIR: the script's model, corpus and state root go under the test's folder, not /tmp
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=900)


@pytest.mark.slow  # four child processes (train, the Trainer recipe, fill, eval): about a minute here
def test_one_command_trains_both_ways_and_checks_the_device_against_the_cpu(tmp_path: Path) -> None:
    done = bench(tmp_path, "--device", "cpu", "--layers", "2", "--hidden", "64", "--steps", "2",
                 "--batch-size", "8", "--eval-chunks", "16", "--peak-flops", "1e12")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    figures = json.loads(lines[-1])
    ours, trainer = figures["ours_processes_1"], figures["trainer"]
    assert ours["tokens_per_s"] > 0 and trainer["tokens_per_s"] > 0
    assert any(line.startswith("mlm-tui train --processes 1") and "tokens/s" in line for line in lines)
    assert any(line.startswith("Trainer recipe") and "tokens/s" in line for line in lines)
    for side in (ours, trainer):  # MFU by its definition, against the peak given
        assert side["mfu"] == pytest.approx(6 * figures["parameters"] * side["tokens_per_s"] / 1e12)
    assert "agreement: passed" in lines
    check = figures["agreement"]
    assert check["passed"] and check["perplexity_drift"] <= check["tolerance"]
    assert check["top_fills"][0] == check["top_fills"][1]  # CPU and "device" (also the CPU) alike


def test_cuda_asked_where_there_is_none_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = bench(tmp_path, "--device", "cuda")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "--device cuda: no CUDA device is available here"


@pytest.fixture
def bench_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    return importlib.import_module("bench_gpu")


def fills(*tokens_and_scores: tuple[str, float]) -> dict:
    return {"masks": [{"fills": [{"token": t, "score": s} for t, s in tokens_and_scores]}]}


def test_top_fills_may_differ_only_as_a_tie_within_the_tolerance(bench_gpu) -> None:
    tol = bench_gpu.TOLERANCE
    same = fills(("list", 0.5), ("dict", 0.2))
    assert bench_gpu.fill_problems(same, same, "cuda") == []
    tie_cpu = fills(("list", 0.300), ("dict", 0.300 * (1 - tol / 2)))
    tie_dev = fills(("dict", 0.300), ("list", 0.300 * (1 - tol / 2)))
    assert bench_gpu.fill_problems(tie_cpu, tie_dev, "cuda") == []
    apart = fills(("dict", 0.300), ("list", 0.300 * (1 - 2 * tol)))
    problems = bench_gpu.fill_problems(tie_cpu, apart, "cuda")
    assert problems == ["mask 1: top fill 'list' on the CPU, 'dict' on cuda"]
