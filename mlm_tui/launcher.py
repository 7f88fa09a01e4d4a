"""Start fine-tuning runs as their own processes.

The workbench never trains in its own process: a run launched from it is `mlm-tui train ...` in a new
session (`start_new_session=True`), so it survives quitting the app, a closed terminal or a dropped ssh
connection, and it is followed, like runs started from the CLI, only through the run store. The run exists
before the process starts: the launcher creates it `preparing`, holding its lock, and hands the lock down
to the process (an inherited descriptor), so the run is never without a live owner and the workbench can
show it at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import asdict

from mlm_tui import runstore
from mlm_tui.errors import MlmError
from mlm_tui.run_settings import TrainConfig, train_argv


def thread_split(cpus: int | None = None) -> tuple[int, int]:
    """(threads for the app's fills, threads for a training process) so neither starves the other.

    The app needs few threads for one-sentence forward passes; training gets the rest.
    """
    cpus = cpus or os.cpu_count() or 1
    app = max(1, min(4, cpus // 4)) if cpus > 2 else 1
    return app, max(1, cpus - app)


def launch(config: TrainConfig) -> str:
    """Start `mlm-tui train` detached from this terminal, with its share of the CPU threads; return the id
    of its run, which exists (`preparing`) from this moment. Its output goes to the run's output.txt."""
    config.validate()
    run = runstore.create_run(asdict(config))
    try:
        lock_fd = run.lock_descriptor()
        env = {**os.environ, runstore.LOCK_FD_ENV: str(lock_fd)}
        env.setdefault("MLM_TUI_THREADS", str(thread_split()[1]))
        argv = train_argv(config)
        with open(run.dir / "output.txt", "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlm_tui.cli", argv[0], f"--run-id={run.run_id}", *argv[1:]],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, close_fds=True, pass_fds=(lock_fd,),
            )
        run.update_state(pid=process.pid)
    except OSError as exc:
        run.fail("failed", f"could not start mlm-tui train: {exc}")
        raise MlmError(f"could not start mlm-tui train: {exc}") from None
    finally:
        run.release()  # the process holds the lock now (or the run failed)
    return run.run_id


def resume(run: runstore.Run) -> None:
    """Continue a cancelled, interrupted or failed run in a new detached process (`mlm-tui train
    --resume`), which takes the run's lock itself; its output is added to the run's output.txt."""
    env = {**os.environ}
    env.setdefault("MLM_TUI_THREADS", str(thread_split()[1]))
    try:
        with open(run.dir / "output.txt", "ab") as out:
            subprocess.Popen([sys.executable, "-m", "mlm_tui.cli", "train", f"--resume={run.run_id}"],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, close_fds=True)
    except OSError as exc:
        raise MlmError(f"could not start mlm-tui train --resume: {exc}") from None


def cancel(run: runstore.Run) -> None:
    """Ask a training process to stop after its current step, and save a checkpoint to resume from.

    The `cancel` file is the store's protocol; the SIGTERM (which `mlm-tui train` treats as the same
    request) covers the moment before the trainer starts watching for the file. The signal goes only to
    a live run on this host, so a recycled pid is never signalled.
    """
    (run.dir / "cancel").touch()
    info = run.info()
    if info.pid is not None and info.host in (None, os.uname().nodename) and run.is_live():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(info.pid, signal.SIGTERM)
