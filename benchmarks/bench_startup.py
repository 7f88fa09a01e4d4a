"""Start-up: the workbench's first paint, and a cold `mlm-tui fill --json` against its floor.

    python benchmarks/bench_startup.py [--repeat 5] [--paint-only]     (needs tmux)

First paint: `mlm-tui` starts in a real 120x40 tmux terminal; the time is from launch until the screen
shows the Fill pane and its footer (polled with `tmux capture-pane` every 10 ms). Against a bare Textual
app started the same way in the same run (a Static with a sentence and a Footer with a "Help" key):
the time any Textual app takes to start and paint on this machine, so the ratio is what the workbench adds.
Goal (issue 26): 0.3 s, with nothing heavy (torch, transformers, datasets) imported before the first frame.
Both start as a user's second start does, with Python's compiled bytecode of every module in `__pycache__`
(pip writes it for the libraries when it installs them; Python writes mlm_tui's the first time it imports a
module of an editable install): the script compiles mlm_tui first and starts both without
PYTHONDONTWRITEBYTECODE. Where that variable is set and mlm_tui has no `__pycache__` (as on the machine
these figures come from, until this script compiled it), Python compiles its modules from source at
every start: about 20 ms more (README).
Cold fill: the whole `mlm-tui fill ... --json` process against a script that only imports torch and
transformers, loads the same model and runs one forward pass (the floor issue 6 sets).
Medians of several runs, each a new process.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

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

BARE = r'''
from textual.app import App
from textual.binding import Binding
from textual.widgets import Footer, Static

class Bare(App):
    BINDINGS = [Binding("f10", "noop", "Help")]

    def compose(self):
        yield Static("The patient was given a [MASK] dose of the drug.", markup=False)
        yield Footer()

Bare().run()
'''

# The workbench with an audit hook that writes when each heavy library is first imported, for the check
# that none is imported before the first frame.
HEAVY = ("torch", "transformers", "datasets", "accelerate", "numpy", "tokenizers", "safetensors", "pyarrow")
WATCHED = r'''
import runpy, sys, time
log, sys.argv = open(sys.argv[1], "a", buffering=1), ["mlm-tui", *sys.argv[2:]]
seen = set()
def hook(event, args):
    if event == "import" and (top := args[0].partition(".")[0]) in HEAVY and top not in seen:
        seen.add(top)
        log.write(f"{time.monotonic()} {top}\n")
sys.addaudithook(hook)
runpy.run_module("mlm_tui.cli", run_name="__main__", alter_sys=True)
'''.replace("HEAVY", repr(set(HEAVY)))


def first_paint(args: list[str], linger: float = 0.0) -> tuple[float, float]:
    """Seconds from launching `args` in a new tmux session until it shows the sentence and the footer, and
    that moment (`time.monotonic`); the session is closed `linger` seconds after it."""
    session = f"mlm-bench-{os.getpid()}-{time.monotonic_ns()}"
    command = shlex.join(args)
    start = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True)
    try:
        while time.perf_counter() - start < 30:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
            if "[MASK]" in screen and "Help" in screen.splitlines()[-1]:
                return time.perf_counter() - start, time.monotonic()
            time.sleep(0.01)
        raise SystemExit(f"{command} did not paint within 30 s")
    finally:
        time.sleep(linger)
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--paint-only", action="store_true", help="leave out the cold fill")
    args = parser.parse_args()
    fresh_home()
    import mlm_tui
    from mlm_tui.models import resolve

    model_dir = str(resolve("starter").path)
    compileall.compile_dir(Path(mlm_tui.__file__).parent, quiet=1)  # what a first start leaves behind
    python = ["env", "-u", "PYTHONDONTWRITEBYTECODE", PYTHON]
    ours_cmd = [*python, "-m", "mlm_tui.cli", "--model", model_dir]
    paints, bares = [], []
    # A session that outlives the measured ones: tmux's server would otherwise exit with each measured
    # session, and the next one could reach it while it exits ("server exited unexpectedly").
    keeper = f"mlm-bench-keeper-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", keeper, "sleep 3600"], check=True)
    try:
        for _ in range(args.repeat):  # interleaved, so a change in the machine's load touches both alike
            paints.append(first_paint(ours_cmd)[0])
            bares.append(first_paint([*python, "-c", BARE])[0])
        log = Path(tempfile.mkdtemp(prefix="mlm-bench-imports-")) / "imports.txt"
        # the model's worker imports torch after the first frame: the session stays up until it has begun
        painted = first_paint([*python, "-c", WATCHED, str(log), "--model", model_dir], linger=2)[1]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", keeper], check=False)
    imported = {name: float(at) for at, name in (line.split() for line in log.read_text().splitlines())}
    print(f"start-up, median of {args.repeat} fresh processes")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    report("workbench first paint vs a bare Textual app", statistics.median(paints), statistics.median(bares),
           "s", "goal: ours <= 0.3 s")
    early = sorted(name for name, at in imported.items() if at <= painted)
    order = sorted(imported.items(), key=lambda item: item[1])
    later = ", ".join(f"{name} {at - painted:+.2f} s" for name, at in order)
    print(f"heavy libraries imported before the first frame: {', '.join(early) or 'none'} "
          f"(first imports, from the frame: {later or 'none within 2 s'})")
    if args.paint_only:
        return
    fills = [run_process([PYTHON, "-m", "mlm_tui.cli", "fill", TEXT, "--model", model_dir, "--json"])[0]
             for _ in range(args.repeat)]
    floors = [run_process([PYTHON, "-c", FLOOR, model_dir, TEXT])[0] for _ in range(args.repeat)]
    report("cold `mlm-tui fill --json` vs import+load+forward", statistics.median(fills),
           statistics.median(floors), "s", "target ~1.0")


if __name__ == "__main__":
    main()
