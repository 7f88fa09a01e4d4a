"""Start-up: the workbench's first paint, and a cold `mlm-tui fill --json` against its floor.

    python benchmarks/bench_startup.py [--repeat 5]

First paint: a fresh interpreter runs the app headless (120x40) and reports when the first screen is up,
counted from before the interpreter started. Cold fill: the whole `mlm-tui fill ... --json` process
against a script that only imports torch and transformers, loads the same model and runs one forward
pass (the floor issue 6 sets). Medians of several runs, each a new process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from _common import PYTHON, fresh_home, report, run_process

PAINT = r'''
import sys, time
start = float(sys.argv[1])
from mlm_tui.app.main import WorkbenchApp
app = WorkbenchApp(model=sys.argv[2])
async def auto_pilot(pilot):
    await pilot.pause()
    print(time.time() - start, flush=True)
    app.exit()
app.run(headless=True, size=(120, 40), auto_pilot=auto_pilot)
'''

FLOOR = r'''
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()
with torch.inference_mode():
    model(**tok(sys.argv[2], return_tensors="pt"))
'''

TEXT = "The patient was given a [MASK] dose of the drug."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    fresh_home()
    from mlm_tui.models import resolve

    model_dir = str(resolve("starter").path)
    paints = []
    for _ in range(args.repeat):
        out = subprocess.run([PYTHON, "-c", PAINT, repr(time.time()), model_dir], capture_output=True,
                             text=True, check=True).stdout
        paints.append(float(out.strip().splitlines()[-1]))
    fills = [run_process([PYTHON, "-m", "mlm_tui.cli", "fill", TEXT, "--model", model_dir, "--json"])[0]
             for _ in range(args.repeat)]
    floors = [run_process([PYTHON, "-c", FLOOR, model_dir, TEXT])[0] for _ in range(args.repeat)]
    print(f"start-up, median of {args.repeat} fresh processes")
    report("workbench first paint vs the 1 s budget", statistics.median(paints), 1.0, "s", "target <= 1")
    report("cold `mlm-tui fill --json` vs import+load+forward", statistics.median(fills),
           statistics.median(floors), "s", "target ~1.0")


if __name__ == "__main__":
    main()
