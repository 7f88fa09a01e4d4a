"""Start-up: the workbench's first paint, and a cold `mlm-tui fill --json` against its floor.

    python benchmarks/bench_startup.py [--repeat 5]        (needs tmux for the first-paint figure)

First paint: `mlm-tui` starts in a real 120x40 tmux terminal; the time is from launch until the screen
shows the Fill pane and its footer (polled with `tmux capture-pane` every 10 ms).
Cold fill: the whole `mlm-tui fill ... --json` process against a script that only imports torch and
transformers, loads the same model and runs one forward pass (the floor issue 6 sets).
Medians of several runs, each a new process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import time

from _common import PYTHON, fresh_home, report, run_process

FLOOR = r'''
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()
with torch.inference_mode():
    model(**tok(sys.argv[2], return_tensors="pt"))
'''

TEXT = "The patient was given a [MASK] dose of the drug."


def first_paint(model_dir: str) -> float:
    session = f"mlm-bench-{os.getpid()}"
    command = f"{shlex.quote(PYTHON)} -m mlm_tui.cli --model {shlex.quote(model_dir)}"
    start = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        while time.perf_counter() - start < 30:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
            if "[MASK]" in screen and "Fill" in screen.splitlines()[-1]:
                return time.perf_counter() - start
            time.sleep(0.01)
        raise SystemExit("the workbench did not paint within 30 s")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    fresh_home()
    from mlm_tui.models import resolve

    model_dir = str(resolve("starter").path)
    paints = [first_paint(model_dir) for _ in range(args.repeat)]
    fills = [run_process([PYTHON, "-m", "mlm_tui.cli", "fill", TEXT, "--model", model_dir, "--json"])[0]
             for _ in range(args.repeat)]
    floors = [run_process([PYTHON, "-c", FLOOR, model_dir, TEXT])[0] for _ in range(args.repeat)]
    print(f"start-up, median of {args.repeat} fresh processes")
    report("workbench first paint vs the 1 s budget", statistics.median(paints), 1.0, "s", "target <= 1")
    report("cold `mlm-tui fill --json` vs import+load+forward", statistics.median(fills),
           statistics.median(floors), "s", "target ~1.0")


if __name__ == "__main__":
    main()
