"""Start fine-tuning runs as their own processes.

The workbench never trains in its own process: a run launched from it is `mlm-tui train ...` in a new
session (`start_new_session=True`), so it survives quitting the app, a closed terminal or a dropped ssh
connection, and it is followed, like runs started from the CLI, only through the run store. The run exists
before the process starts: `lifecycle` creates it `preparing`, holding its lock, and `start` hands the lock
down to the process (an inherited descriptor), so the run is never without a live owner and the workbench
can show it at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlm_tui import runstore
from mlm_tui.errors import FieldError, MlmError
from mlm_tui.progress import say
from mlm_tui.run_settings import TrainConfig

LAUNCH_LOG = "launch.log"  # a multi-process launch's stderr, in its run's folder
LAUNCHED_ENV = "MLM_TUI_LAUNCHED"  # set for every worker of a launch: the launcher reports how it ended


def thread_split(cpus: int | None = None) -> tuple[int, int]:
    """(threads for the app's fills, threads for a training process) so neither starves the other.

    The app needs few threads for one-sentence forward passes; training gets the rest.
    """
    cpus = cpus or os.cpu_count() or 1
    app = max(1, min(4, cpus // 4)) if cpus > 2 else 1
    return app, max(1, cpus - app)


def start(run: runstore.Run, argv: list[str]) -> int:
    """Start `mlm-tui train` (`argv`) for `run` detached from this terminal, with its share of the CPU
    threads, handing down the run's lock that this process holds (see `lifecycle.launch`); its pid. Its
    output goes to the run's output.txt."""
    lock_fd = run.lock_descriptor()
    env = {**os.environ, runstore.LOCK_FD_ENV: str(lock_fd)}
    env.setdefault("MLM_TUI_THREADS", str(thread_split()[1]))
    with open(run.dir / "output.txt", "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlm_tui.cli", argv[0], f"--run-id={run.run_id}", *argv[1:]],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, close_fds=True, pass_fds=(lock_fd,),
        )
    return process.pid


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
    request) covers the moment before a single-process trainer starts watching for the file. The signal
    goes only to a live run on this host, so a recycled pid is never signalled.
    """
    (run.dir / "cancel").touch()
    info = run.info()
    if info.process_group is not None:
        return  # a multi-process launch: its main worker sees the file and stops every worker at one step
    if info.pid is not None and info.host in (None, os.uname().nodename) and run.is_live():
        with contextlib.suppress(ProcessLookupError, PermissionError):
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


@dataclass
class LaunchEnd:
    """How a multi-process launch ended, for `lifecycle` to record and report."""

    returncode: int
    died: tuple[int, str] | None  # (rank, signal name) of a worker the launch saw killed by a signal
    stop_signal: int | None  # the first Ctrl+C or SIGTERM this process passed on as a stop request


def run_launch(command: list[str], run: runstore.Run | None) -> LaunchEnd:
    """Run a multi-process launch to its end.

    Its processes write `run` (None on a node other than node 0) under the lock this process holds (see
    `lifecycle`, which records how the launch ended); its workers hold the run too (`runstore.join_launch`),
    and the main one stops them all if this process dies. A Ctrl+C or SIGTERM here asks the workers for a
    clean stop through the run's cancel file (a second one kills them at once). The launcher's own
    tracebacks and failure banners are kept off the terminal (MLM_TUI_DEBUG=1 shows them) and read for
    the worker that died.
    """
    env = dict(os.environ)
    if run is not None:
        env[runstore.DELEGATED_ENV] = env[LAUNCHED_ENV] = run.run_id
    # The launch writes its stderr to a file, not a pipe: workers outlive a killed launcher (they stop at
    # their next step) and must not die of a broken pipe on the way.
    log = run.dir / LAUNCH_LOG if run is not None else None
    with open(log or os.devnull, "ab") as sink:
        start = sink.tell()  # a resumed run's log goes on from its earlier launches
        process = subprocess.Popen(command, env=env, start_new_session=True,
                                   stderr=sink if log is not None else None)
    relay = _Relay(log, start, process)
    relay.start()
    stop: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if run is None or stop:  # a second request, or no run to ask through: stop them now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL if stop else signal.SIGTERM)
        else:
            (run.dir / "cancel").touch()
            say("stopping after this step (Ctrl+C again to abort at once)")
        stop.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if run is not None:
            run.update_state(process_group=process.pid)
        process.wait()
        relay.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return LaunchEnd(process.returncode, relay.died(), stop[0] if stop else None)


class _Relay(threading.Thread):
    """Copies the launch's stderr (its workers' progress), as it is written to `log`, to ours, holding
    back the launcher's own log lines and its final traceback and failure banner, which are read for the
    worker that died first. Without a log (another node's launch) the launch writes to ours directly."""

    AGENT_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S*torch/distributed/")
    TRACEBACK = re.compile(r"^(\[rank\d+\]:\s*)?Traceback \(most recent call last\)")
    FAILURE = re.compile(r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-?\d+)", re.S)

    def __init__(self, log: Path | None, start: int, process: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.log, self.start_at, self.process = log, start, process
        self.held: list[str] = []
        self.holding = False
        self.debug = bool(os.environ.get("MLM_TUI_DEBUG"))

    def run(self) -> None:
        if self.log is None:
            return
        with open(self.log, "rb") as fh:
            fh.seek(self.start_at)
            partial = b""
            while True:
                chunk = fh.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith(b"\n"):
                        self.show(partial.decode("utf-8", "replace"))
                        partial = b""
                elif self.process.poll() is not None:
                    rest = partial + fh.read()
                    for line in rest.decode("utf-8", "replace").splitlines(keepends=True):
                        self.show(line)
                    return
                else:
                    time.sleep(0.05)

    def show(self, line: str) -> None:
        self.holding = self.holding or bool(self.TRACEBACK.match(line))
        if self.holding or self.AGENT_LINE.match(line):
            self.held.append(line)
            if not self.debug:
                return
        sys.stderr.write(line)
        sys.stderr.flush()

    def died(self) -> tuple[int, str] | None:
        """(rank, signal name) of a worker the launcher saw killed by a signal, if any."""
        text = "".join(self.held)
        root = text.find("Root Cause")  # the banner lists the other failures first
        for rank, code in self.FAILURE.findall(text[root:] + text[:root] if root >= 0 else text):
            if int(code) < 0:
                with contextlib.suppress(ValueError):
                    return int(rank), signal.Signals(-int(code)).name
                return int(rank), f"signal {-int(code)}"
        return None
