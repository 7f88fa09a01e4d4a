"""The run store: one folder per fine-tune run, readable by any process while the run goes on.

    runs/<run_id>/config.json     settings, library versions, corpus fingerprint (written once)
                  state.json      status, progress and results (rewritten atomically)
                  metrics.jsonl   one line per logged step or evaluation (appended)
                  log.txt         the run's human-readable log
                  lock            flock'ed by the training process for its whole life
                  checkpoints/    step-N folders: the latest and the best by eval perplexity
                  model/          the final model and tokenizer (`save_pretrained`)

A run whose state says `running` but whose lock nobody holds lost its process (kill -9, power loss): it
is reported as `interrupted`. The lock is the truth, not a pid or a clock, so pid reuse cannot fool it.
A new run takes its lock before it writes any file, so no reader ever sees it `interrupted` at birth.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlm_tui import atomic
from mlm_tui.errors import MlmError, UsageError
from mlm_tui.home import runs_dir

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
STATUSES = ("running", "completed", "cancelled", "failed", "interrupted")


class CorruptRun(MlmError):
    """A run folder whose files cannot be read: `runs` lists it as a problem, resuming it says why."""


@dataclass
class Run:
    run_id: str
    dir: Path
    _lock_file: IO[str] | None = field(default=None, repr=False, compare=False)

    @property
    def model_path(self) -> Path:
        return self.dir / "model"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def config(self) -> dict[str, Any]:
        return _read(self.dir / "config.json")

    def state(self) -> dict[str, Any]:
        return _read(self.dir / "state.json")

    def is_live(self) -> bool:
        """True while some process holds the run's lock (it is training right now)."""
        path = self.dir / "lock"
        if not path.exists():
            return False
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def status(self) -> str:
        status = self.state().get("status")
        if status not in STATUSES:
            raise CorruptRun(f"{self.run_id}: state.json has no valid status ({status!r})")
        if status == "running" and not self.is_live():
            return "interrupted"
        return status

    def update_state(self, **changes: Any) -> dict[str, Any]:
        """Merge changes into state.json atomically; only the training process calls this."""
        try:
            state = self.state()
        except CorruptRun:
            state = {}
        state.update(changes, updated=time.time())
        atomic.write_json(self.dir / "state.json", state)
        return state

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(atomic.dumps(row) + "\n")
            fh.flush()

    def metrics(self) -> list[dict[str, Any]]:
        """Logged rows; a torn last line (the writer is mid-append) is skipped."""
        rows = []
        try:
            with open(self.metrics_path, encoding="utf-8") as fh:
                for line in fh:
                    with contextlib.suppress(json.JSONDecodeError):
                        rows.append(json.loads(line))
        except FileNotFoundError:
            pass
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows of steps after `after_step`: a resumed run redoes them from its checkpoint, and its
        curves must not show the lost steps twice."""
        rows = [r for r in self.metrics() if not (isinstance(r.get("step"), int) and r["step"] > after_step)]
        atomic.write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def log(self, message: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def summary(self) -> dict[str, Any]:
        """The `runs --json` row. Values of the wrong type (a hand-edited file) come out as null."""
        config, state = self.config(), self.state()

        def text(value: Any) -> str | None:
            return value if isinstance(value, str) else None

        def number(value: Any) -> float | None:
            return value if isinstance(value, int | float) and not isinstance(value, bool) else None

        step = state.get("step", 0)
        return {
            "run_id": self.run_id,
            "status": self.status(),
            "created": text(config.get("created")),
            "model": text(config.get("model")),
            "corpus": text(config.get("corpus")),
            "perplexity_before": number(state.get("perplexity_before")),
            "perplexity_after": number(state.get("perplexity_after")),
            "steps": step if isinstance(step, int) and not isinstance(step, bool) else 0,
        }

    def _acquire(self) -> None:
        fh = open(self.dir / "lock", "a")  # noqa: SIM115 - kept open for as long as the lock is held
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise UsageError(f"run {self.run_id} is already being trained by another process") from None
        self._lock_file = fh

    @contextlib.contextmanager
    def hold_lock(self) -> Iterator[None]:
        """Mark this process as the run's owner for the duration; released by the kernel if it dies.

        A run fresh from `create_run` already holds its lock: this keeps it, and releases it at the end.
        """
        if self._lock_file is None:
            self._acquire()
        try:
            yield
        finally:
            if self._lock_file is not None:
                self._lock_file.close()  # closing the file releases the flock
                self._lock_file = None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = atomic.read_json(path)
    except FileNotFoundError:
        raise CorruptRun(f"{path.parent.name}: {path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise CorruptRun(f"{path.parent.name}: {path.name} is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise CorruptRun(f"{path.parent.name}: {path.name} is not a JSON object")
    return data


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def create_run(config: dict[str, Any]) -> Run:
    """A new `running` run, its lock held by this process (release it by leaving `hold_lock()`).

    The lock comes first, then state.json, then config.json: a reader never sees the run `running`
    without a live owner, and skips it quietly until config.json exists (see `list_runs`).
    """
    base = runs_dir()
    while True:
        run_id = new_run_id()
        try:
            (base / run_id).mkdir()
            break
        except FileExistsError:
            continue
    run = Run(run_id, base / run_id)
    run._acquire()
    config = {**config, "run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic.write_json(run.dir / "state.json", {"status": "running", "step": 0, "pid": os.getpid()})
    atomic.write_json(run.dir / "config.json", config)
    return run


def find_run(ref: str) -> Run | None:
    """The run with this id, if any. Only well-formed ids are joined to the store path, so a reference
    such as `../x` can never name a folder outside it."""
    if not RUN_ID.fullmatch(ref):
        return None
    path = runs_dir() / ref
    return Run(ref, path) if (path / "config.json").is_file() else None


def list_runs() -> tuple[list[Run], list[str]]:
    """All readable runs, newest first, and one line per folder that could not be read."""
    runs, problems = [], []
    for path in sorted(runs_dir().iterdir(), reverse=True):
        if not path.is_dir() or not RUN_ID.fullmatch(path.name):
            continue
        run = Run(path.name, path)
        if not (path / "config.json").exists() and run.is_live():
            continue  # being created by its process this very moment
        try:
            run.config()
            run.status()
        except CorruptRun as exc:
            problems.append(f"skipped run {exc}")
            continue
        runs.append(run)
    return runs, problems


def list_summaries() -> tuple[list[dict[str, Any]], list[str]]:
    """`summary()` of every readable run, newest first, and one line per run that could not be read.

    A run can change between listing and reading it (it is being written by its own process), so a read
    failure here is another problem line, not a crash.
    """
    runs, problems = list_runs()
    rows = []
    for run in runs:
        try:
            rows.append(run.summary())
        except CorruptRun as exc:
            problems.append(f"skipped run {exc}")
    return rows, problems
