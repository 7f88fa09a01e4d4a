"""Start fine-tuning runs as their own processes and find them in the run store.

The workbench never trains in its own process: a run launched from it is `mlm-tui train ...` in a new
session (`start_new_session=True`), so it survives quitting the app, a closed terminal or a dropped ssh
connection, and it is followed, like runs started from the CLI, only through the run store. The training
process records its pid in state.json, which is how the launcher finds the run it just started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from mlm_tui import runstore
from mlm_tui.home import root
from mlm_tui.training import TrainConfig


def train_argv(config: TrainConfig) -> list[str]:
    """The `mlm-tui train` arguments for a config: the settings that differ from the defaults."""
    defaults = TrainConfig(corpus=config.corpus)
    args = ["train", config.corpus]
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "corpus" or value == getattr(defaults, f.name) or value is None:
            continue
        if f.name == "epochs" and config.max_steps is not None:
            continue  # the CLI takes one of --epochs and --max-steps
        flag = "--" + f.name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def thread_split(cpus: int | None = None) -> tuple[int, int]:
    """(threads for the app's fills, threads for a training process) so neither starves the other.

    The app needs few threads for one-sentence forward passes; training gets the rest.
    """
    cpus = cpus or os.cpu_count() or 1
    app = max(1, min(4, cpus // 4)) if cpus > 2 else 1
    return app, max(1, cpus - app)


def launch_log_dir() -> Path:
    path = root() / "launches"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Launch:
    """A training process we started; its output goes to `output` until the run store takes over."""

    process: subprocess.Popen[bytes]
    output: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def failure(self) -> str | None:
        """If the process already exited without a run, the last line it wrote (its error)."""
        if self.process.poll() is None:
            return None
        try:
            lines = [ln for ln in self.output.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else f"mlm-tui train exited with status {self.process.returncode}"


def launch(config: TrainConfig) -> Launch:
    """Start `mlm-tui train` detached from this terminal, with its share of the CPU threads."""
    env = dict(os.environ)
    env.setdefault("MLM_TUI_THREADS", str(thread_split()[1]))
    output = launch_log_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlm_tui.cli", *train_argv(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True,
        )
    return Launch(process, output)


def find_run_by_pid(pid: int) -> runstore.Run | None:
    """The run whose state.json names this process; only the newest runs are looked at."""
    runs, _ = runstore.list_runs()
    for run in runs[:20]:
        try:
            if run.state().get("pid") == pid:
                return run
        except runstore.CorruptRun:
            continue
    return None


def wait_for_run(launched: Launch, timeout: float = 600.0, poll: float = 0.25,
                 cancelled: Callable[[], bool] | None = None) -> runstore.Run | str:
    """The run the launched process created, or the process's error when it exited first.

    Tokenizing a big corpus comes before the run exists, so the wait can be long; `cancelled` ends it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = find_run_by_pid(launched.pid)
        if run is not None:
            return run
        failure = launched.failure()
        if failure is not None:
            return failure
        if cancelled is not None and cancelled():
            return "stopped waiting for the run"
        time.sleep(poll)
    return f"no run appeared within {timeout:.0f} s; see {launched.output}"


def cancel(run: runstore.Run) -> None:
    """Ask a training process to stop after its current step, and save a checkpoint to resume from.

    The `cancel` file is the store's protocol; the SIGTERM (which `mlm-tui train` treats as the same
    request) covers the moment before the trainer starts watching for the file. The signal goes only to
    a live run on this host, so a recycled pid is never signalled.
    """
    (run.dir / "cancel").touch()
    state = run.state()
    pid = state.get("pid")
    if isinstance(pid, int) and state.get("host") in (None, os.uname().nodename) and run.is_live():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
