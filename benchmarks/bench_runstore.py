"""The run store at scale: listing 1,000 runs, `mlm-tui runs --json`, and the idle workbench.

    python benchmarks/bench_runstore.py [--runs 1000] [--idle 10]

The store is built the way runs leave it: one real finished run (config, state, metrics, log, a final
model and two checkpoints, their weight files sparse at bert-base size) is written with the run store's
own functions, then copied under new ids. Each figure is printed against its baseline in the same run:

- a listing (`runstore.list_infos`) of the 1,000 runs when nothing changed, against the first (cold)
  listing of the same store, and against a listing of a store of one run (goal: at most 20 ms);
- `mlm-tui runs --json` at 1,000 runs against the same command at one run, each a new process
  (goal: at most 3x), with the listing an earlier process kept and without it (every run read again);
- the idle workbench (headless, Fill pane, once its runs table is full and 5 s more): CPU seconds per
  wall second of the whole process, at 1,000 runs against one run (goal: under 3% of a core);
- typing 20 characters into the Fill pane's sentence box at 1,000 runs against one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from _common import PYTHON, fresh_home, median_time, report, run_process

WEIGHTS = 440_000_000  # bytes of a bert-base float32 model.safetensors; the files are sparse

IDLE = r'''
import asyncio, os, sys, time
from mlm_tui.app.workbench import WorkbenchApp

async def main(seconds):
    app = WorkbenchApp(model=sys.argv[1])
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 300
        while not (app.query("#runs") and app.query_one("#runs").row_count == int(sys.argv[3])):
            assert time.monotonic() < deadline, "the runs table never filled"
            await asyncio.sleep(0.5)  # not pilot.pause: on a loaded machine it gives up waiting
        await asyncio.sleep(5)  # the rest of the start-up: the model load, the lazy panes
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        idle = (time.process_time() - cpu) / (time.perf_counter() - wall)
        box = app.query_one("#sentence")
        box.focus()
        wall = time.perf_counter()
        for ch in "the enzyme was [MASK]":
            await pilot.press(ch)
        typing = time.perf_counter() - wall
        print(idle, typing)

asyncio.run(main(float(sys.argv[2])))
'''


def tiny_model(where: Path) -> Path:
    """A small BERT with the real tokenizer, so the workbench's start-up is short and the same each time."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from mlm_tui.starter import base_encoder_dir

    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    BertForMaskedLM(config).save_pretrained(where)
    tokenizer.save_pretrained(where)
    return where


def sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


def finished_run(model: Path) -> Path:
    """One completed run written through the run store, as a training process leaves it."""
    from mlm_tui import atomic, runstore
    from mlm_tui.run_settings import TrainConfig

    config = TrainConfig(corpus="/data/support-tickets.jsonl", model=str(model), max_steps=200)
    run = runstore.create_run(asdict(config))
    plan = {"device": "cpu", "precision": "fp32", "batch_size": 16, "steps": 200, "train_chunks": 3100,
            "test_chunks": 310, "notes": []}
    run.update_config(model_source=str(model), corpus_fingerprint="0" * 16, plan=plan,
                      versions={"torch": "2.13.0", "transformers": "5.0"})
    for step in range(0, 201, 10):
        run.append_metrics({"step": step, "loss": 3.0 - step / 100})
    for step in (100, 200):
        folder = run.checkpoints_dir / f"step-{step:07d}"
        sparse(folder / "model.safetensors", WEIGHTS)
        sparse(folder / "optimizer.pt", 2 * WEIGHTS)
        atomic.write_json(folder / "trainer_state.json", {"step": step})
    atomic.write_json(run.checkpoints_dir / "best.json", {"step": 200})
    sparse(run.model_path / "model.safetensors", WEIGHTS)
    atomic.write_json(run.model_path / "config.json", {"model_type": "bert"})
    run.log("completed")
    run.update_state(status="completed", step=200, total_steps=200, perplexity_before=21.4,
                     perplexity_after=11.9, general_perplexity_before=9.1, general_perplexity_after=9.8,
                     loss=1.0, finished=time.time(), train_runtime=600.0, tokens_per_s=900.0)
    run.release()
    return run.dir


def copy_sparse(src: str, dst: str) -> None:
    size = os.path.getsize(src)
    if size >= WEIGHTS:
        sparse(Path(dst), size)  # a plain copy would write the holes out
    else:
        shutil.copy2(src, dst)


def copies(template: Path, n: int) -> None:
    """`n - 1` more runs like `template`, ids one second apart, each with its own run id recorded."""
    for i in range(1, n):
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(1_700_000_000 + i)) + f"-{i % 65536:04x}"
        target = template.with_name(run_id)
        shutil.copytree(template, target, copy_function=copy_sparse)
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "run_id": run_id}))


def store(n: int, model: Path) -> Path:
    home = fresh_home()
    copies(finished_run(model), n)
    return home


def listing(home: Path) -> tuple[float, float, int]:
    """The first listing of the store (cold) and the median one after it, nothing having changed."""
    from mlm_tui import runstore

    os.environ["MLM_TUI_HOME"] = str(home)
    start = time.perf_counter()
    infos, problems = runstore.list_infos()
    cold = time.perf_counter() - start
    assert not problems, problems
    return cold, median_time(runstore.list_infos, repeat=20), len(infos)


def runs_json(home: Path, repeat: int, kept: bool = True) -> float:
    """Median wall time of whole `mlm-tui runs --json` processes; `kept=False`: each without the listing
    an earlier one kept (`cache/runs.json`), as the first listing after every run changed."""
    times = []
    for _ in range(repeat):
        if not kept:
            (home / "cache" / "runs.json").unlink(missing_ok=True)
        elapsed, _, out = run_process([PYTHON, "-m", "mlm_tui.cli", "runs", "--json"],
                                      env={"MLM_TUI_HOME": str(home)})
        json.loads(out)
        times.append(elapsed)
    return sorted(times)[len(times) // 2]


def idle(home: Path, model: Path, n: int, seconds: float) -> tuple[float, float]:
    proc = subprocess.run([PYTHON, "-c", IDLE, str(model), str(seconds), str(n)], capture_output=True,
                          text=True, env={**os.environ, "MLM_TUI_HOME": str(home)}, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    cpu, typing = proc.stdout.split()
    return float(cpu), float(typing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle workbench to measure")
    parser.add_argument("--repeat", type=int, default=5, help="processes per `runs --json` figure")
    parser.add_argument("--only-idle", action="store_true", help="only the idle workbench and typing")
    args = parser.parse_args()
    model = tiny_model(fresh_home() / "tiny-model")
    one, many = store(1, model), store(args.runs, model)
    print(f"{args.runs} runs: {sum(1 for _ in (many / 'runs').iterdir())} folders", flush=True)

    if not args.only_idle:
        _, one_warm, _ = listing(one)
        cold, warm, count = listing(many)
        assert count == args.runs, count
        report(f"list_infos, {args.runs} runs, unchanged vs first", warm, cold, "s", "goal: at most 0.020 s")
        report(f"list_infos, {args.runs} runs vs 1 run (unchanged)", warm, one_warm, "s")
        base = runs_json(one, args.repeat)
        report(f"`runs --json` process, {args.runs} runs vs 1", runs_json(many, args.repeat), base, "s",
               "goal: ratio at most 3")
        report(f"same, no kept listing, {args.runs} runs vs 1", runs_json(many, args.repeat, kept=False),
               runs_json(one, args.repeat, kept=False), "s")

    one_cpu, one_typing = idle(one, model, 1, args.idle)
    many_cpu, many_typing = idle(many, model, args.runs, args.idle)
    report(f"idle workbench CPU, {args.runs} runs vs 1", many_cpu, one_cpu, "core",
           "goal: under 0.03 core")
    report(f"typing 21 keys in Fill, {args.runs} runs vs 1", many_typing, one_typing, "s")
    for home in (one, many, model.parent):
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
