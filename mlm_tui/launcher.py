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
from mlm_tui.errors import FieldError, MlmError
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
            if info.process_group is not None:  # a multi-process launch: its agent stops every worker
                os.killpg(info.process_group, signal.SIGTERM)
            else:
                os.kill(info.pid, signal.SIGTERM)


# -- several processes ------------------------------------------------------------------------------------
def launch_command(config: TrainConfig, argv: list[str], device: str) -> list[str]:
    """The command that starts `mlm-tui train` (`argv`) on every process of this node.

    On CUDA it is `accelerate launch --multi_gpu` with the options Accelerate users know; on the CPU,
    `torchrun` (the same elastic launcher Accelerate runs for several GPUs, without GPU checks). With
    several nodes, every node runs the same command with its own node rank.
    """
    host, port = None, None
    if config.nodes > 1:
        if not config.main_address or ":" not in config.main_address:
            raise FieldError("main_address", f"with {config.nodes} nodes give {{field}} host:port of node 0 "
                             "(the same on every node)")
        host, _, port = config.main_address.rpartition(":")
    if device == "cuda":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(config.processes * config.nodes), "--num_machines", str(config.nodes),
               "--machine_rank", str(config.node_rank)]
        if host is not None:
            cmd += ["--main_process_ip", host, "--main_process_port", str(port)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(config.processes),
               "--nnodes", str(config.nodes), "--node_rank", str(config.node_rank)]
        if host is not None:
            cmd += ["--master_addr", host, "--master_port", str(port)]
    return [*cmd, "-m", "mlm_tui.cli", *argv]


def run_launch(command: list[str], run: runstore.Run | None) -> int:
    """Run a multi-process launch to its end; its exit status.

    This process holds `run`'s lock (None on a node other than node 0) for the launch's whole life, and
    the launch's main process writes the run under it (see `Run.acquire`); a launch that ends without
    saying how (killed, or failed before it took the run) is recorded as failed here. The launch gets a
    session of its own, whose process group a cancel signals (`cancel`); a Ctrl+C or SIGTERM here is
    passed on to it, and the launcher there stops every worker at its next step.
    """
    env = dict(os.environ)
    if run is not None:
        env[runstore.DELEGATED_ENV] = run.run_id
    process = subprocess.Popen(command, env=env, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if run is not None:
            run.update_state(process_group=process.pid)
        process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if run is not None:
            if run.state().get("status") in runstore.LIVE:
                run.fail("failed", f"the launch ended (exit status {process.returncode}) before the run "
                         "recorded why")
            run.release()
    return process.returncode
