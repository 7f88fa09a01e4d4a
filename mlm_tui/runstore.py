"""The run store: one folder per fine-tune run, readable by any process while the run goes on.

    runs/<run_id>/config.json     settings, library versions, corpus fingerprint, plan, resumes
                  state.json      status, progress and results (rewritten atomically)
                  metrics.jsonl   one line per logged step or evaluation (appended)
                  log.txt         the run's human-readable log
                  lock            flock'ed by the training process for its whole life
                  output.txt      stdout and stderr of a run the workbench launched
                  checkpoints/    step-N folders: the latest and the best by eval perplexity
                  model/          the final model and tokenizer (`save_pretrained`)

A run exists from its launch: it is `preparing` while its corpus is read and tokenized (the progress is
in its state), then `running`. A run whose state says `preparing` or `running` but whose lock nobody
holds lost its process (kill -9, power loss): it is reported as `interrupted`. The lock is the truth, not a
pid or a clock, so pid reuse cannot fool it. A new run takes its lock before it writes any file, and a
launcher hands its lock down to the process it starts, so no reader ever sees a run `interrupted` at birth.

`RunInfo` is the one typed view of a run's files: the CLI's `runs` and the workbench read it, and nothing
else parses state.json or config.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mlm_tui import atomic
from mlm_tui.errors import FieldError, MlmError, UsageError
from mlm_tui.home import runs_dir
from mlm_tui.run_settings import Plan, TrainConfig

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
STATUSES = ("preparing", "running", "completed", "cancelled", "failed", "interrupted")
LIVE = ("preparing", "running")
LOCK_FD_ENV = "MLM_TUI_RUN_LOCK_FD"  # the lock a launcher hands down to the process it starts
DELEGATED_ENV = "MLM_TUI_RUN_DELEGATED"  # a run whose lock the process that started this launch holds


class CorruptRun(MlmError):
    """A run folder whose files cannot be read: `runs` lists it as a problem, resuming it says why."""


@dataclass
class Run:
    run_id: str
    dir: Path
    _lock_file: IO[str] | None = field(default=None, repr=False, compare=False)
    _delegated: bool = field(default=False, repr=False, compare=False)  # see `acquire`

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
        if status in LIVE and not self.is_live():
            return "interrupted"
        return status

    def train_config(self) -> TrainConfig:
        """The settings the run records; a value of the wrong type (a hand-edited file) is refused by name."""
        try:
            return TrainConfig.from_record(self.config())
        except FieldError as exc:
            raise CorruptRun(f"{self.run_id}: config.json: {exc.named(exc.field)}") from None

    def update_config(self, **changes: Any) -> dict[str, Any]:
        """Merge changes into config.json atomically (the process that holds the lock only)."""
        config = {**self.config(), **changes}
        atomic.write_json(self.dir / "config.json", config)
        return config

    def info(self) -> RunInfo:
        return RunInfo.read(self)

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

    def acquire(self) -> None:
        """Become the run's writer until `release()`; refused while another process holds the lock.

        The main process of a multi-process launch writes the run under the lock of the process that
        started the launch and waits for it (see `launcher.run_launch`): a descriptor cannot travel through
        `accelerate launch`, and handing the lock over would leave the run without an owner for a moment.
        """
        if os.environ.get(DELEGATED_ENV) == self.run_id:
            os.environ.pop(DELEGATED_ENV)
            self._delegated = True
            return
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
            self.acquire()
        try:
            yield
        finally:
            self.release()

    def lock_descriptor(self) -> int:
        """The open descriptor of the lock this process holds, to hand down to a child process."""
        if self._lock_file is None:
            raise MlmError(f"run {self.run_id}: this process does not hold its lock")
        return self._lock_file.fileno()

    def owns_lock(self) -> bool:
        """True when this process holds the run's lock (it is the run's writer)."""
        return self._lock_file is not None or self._delegated

    def fail(self, status: str, message: str) -> None:
        """Record why the run stopped (`failed` or `cancelled`)."""
        self.update_state(status=status, message=message, finished=time.time())
        self.log(f"{status}: {message}")

    def release(self) -> None:
        self._delegated = False
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the flock
            self._lock_file = None

    def _adopt(self, fd: int) -> bool:
        """Take over the lock a launcher handed down as an open descriptor, if it is this run's lock."""
        try:
            same = os.fstat(fd).st_ino == (self.dir / "lock").stat().st_ino
        except OSError:
            return False
        if not same:
            return False
        self._lock_file = os.fdopen(fd, "a")
        return True


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


def create_run(config: dict[str, Any], run_id: str | None = None) -> Run:
    """A new `preparing` run, its lock held by this process (release it with `release()` or by leaving
    `hold_lock()`). Without `run_id`, a fresh id.

    The lock comes first, then state.json, then config.json: a reader never sees the run `preparing`
    without a live owner, and skips it quietly until config.json exists (see `list_runs`).
    """
    base = runs_dir()
    while True:
        chosen = run_id or new_run_id()
        if not RUN_ID.fullmatch(chosen):
            raise UsageError(f"{chosen!r} is not a run id (YYYYMMDD-HHMMSS-xxxx)")
        try:
            (base / chosen).mkdir()
            break
        except FileExistsError:
            if run_id is not None:
                raise UsageError(f"run {run_id} already exists") from None
    run = Run(chosen, base / chosen)
    run.acquire()
    config = {**config, "run_id": chosen, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic.write_json(run.dir / "state.json", {"status": "preparing", "step": 0, "pid": os.getpid(),
                                               "host": os.uname().nodename, "started": time.time()})
    atomic.write_json(run.dir / "config.json", config)
    return run


def claim_run(run_id: str, config: dict[str, Any]) -> Run:
    """The run this process was started for (`mlm-tui train --run-id`), its lock held by this process.

    A launcher creates the run `preparing` and hands its lock down (see `launcher.launch`); a run id that
    names no run yet (a `torchrun` command line that picks its own) is created here.
    """
    if not RUN_ID.fullmatch(run_id):
        raise UsageError(f"{run_id!r} is not a run id (YYYYMMDD-HHMMSS-xxxx)")
    path = runs_dir() / run_id
    if not path.exists():
        return create_run(config, run_id)
    run = Run(run_id, path)
    fd = os.environ.pop(LOCK_FD_ENV, "")
    if not (fd.isdigit() and run._adopt(int(fd))):
        run.acquire()
    try:
        if run.state().get("status") != "preparing":
            raise UsageError(f"run {run_id} has already started (resume it with mlm-tui train --resume)")
    except BaseException:
        run.release()
        raise
    run.update_state(pid=os.getpid(), host=os.uname().nodename)
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


def list_infos() -> tuple[list[RunInfo], list[str]]:
    """`RunInfo` of every readable run, newest first, and one line per run that could not be read.

    A run can change between listing and reading it (it is being written by its own process), so a read
    failure here is another problem line, not a crash.
    """
    runs, problems = list_runs()
    infos = []
    for run in runs:
        try:
            infos.append(run.info())
        except CorruptRun as exc:
            problems.append(f"skipped run {exc}")
    return infos, problems


def disk_bytes(path: Path) -> int:
    """Bytes of the files under a folder; files that vanish meanwhile (a checkpoint rotated) count 0."""
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# -- the typed view -------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _last_line(path: Path) -> str | None:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


@dataclass
class RunInfo:
    """A run as its files describe it now. Values of the wrong type (a hand-edited file) come out as None;
    a config that no longer reads as settings leaves `config` None and says why in `config_problem`."""

    run_id: str
    status: str
    step: int
    total_steps: int | None
    created: str | None
    model: str | None
    model_source: str | None  # where `model` pointed when the run started (a folder's absolute path)
    corpus: str | None
    text_field: str | None
    config: TrainConfig | None
    config_problem: str | None
    plan: Plan | None
    perplexity_before: float | None
    perplexity_after: float | None
    general_perplexity_before: float | None  # on general text: what the run cost (`rundata`)
    general_perplexity_after: float | None
    best_perplexity: float | None
    loss: float | None
    message: str | None
    tokenize_done: int | None  # characters read while preparing
    tokenize_total: int | None  # corpus bytes (0 when not known)
    tokens_per_s: float | None
    eta: float | None
    train_runtime: float | None
    started: float | None
    finished: float | None
    duration: float | None  # seconds from launch to end (to now while live)
    checkpoints: list[int]
    best_checkpoint: int | None
    bytes: int
    model_path: Path | None  # the final model, once written
    resumes: list[dict[str, Any]]  # each resume: when, at which step, what changed
    corpus_fingerprint: str | None  # of the corpus the run last read (see `corpus.fingerprint`)
    pid: int | None  # of the training process, the last one that ran it
    host: str | None
    versions: dict[str, str | None] = field(default_factory=dict)  # library versions the run recorded
    process_group: int | None = None  # of a multi-process launch: what a cancel signals

    @classmethod
    def read(cls, run: Run) -> RunInfo:
        from mlm_tui import checkpoints

        raw, state = run.config(), run.state()
        status = run.status()
        try:
            config, problem = run.train_config(), None
        except CorruptRun as exc:
            config, problem = None, str(exc)
        tokenize = state.get("tokenize") if isinstance(state.get("tokenize"), dict) else {}
        started, finished = _number(state.get("started")), _number(state.get("finished"))
        end = finished if finished is not None else time.time() if status in LIVE else _number(
            state.get("updated"))
        resumes = raw.get("resumes")
        message = _text(state.get("message"))
        if status == "interrupted" and message is None:
            message = _last_line(run.dir / "output.txt")  # a launched process that died before it said why
        return cls(
            run_id=run.run_id, status=status, step=_count(state.get("step")) or 0,
            total_steps=_count(state.get("total_steps")), created=_text(raw.get("created")),
            model=_text(raw.get("model")), model_source=_text(raw.get("model_source")),
            corpus=_text(raw.get("corpus")),
            text_field=_text(raw.get("text_field")), config=config, config_problem=problem,
            plan=Plan.from_record(raw.get("plan") or state.get("plan")),
            perplexity_before=_number(state.get("perplexity_before")),
            perplexity_after=_number(state.get("perplexity_after")),
            general_perplexity_before=_number(state.get("general_perplexity_before")),
            general_perplexity_after=_number(state.get("general_perplexity_after")),
            best_perplexity=_number(state.get("best_perplexity")), loss=_number(state.get("loss")),
            message=message,
            tokenize_done=_count(tokenize.get("done")), tokenize_total=_count(tokenize.get("total")),
            tokens_per_s=_number(state.get("tokens_per_s")), eta=_number(state.get("eta")),
            train_runtime=_number(state.get("train_runtime")), started=started, finished=finished,
            duration=end - started if started is not None and end is not None else None,
            checkpoints=checkpoints.steps(run), best_checkpoint=checkpoints.best_step(run),
            bytes=disk_bytes(run.dir),
            model_path=run.model_path if (run.model_path / "config.json").is_file() else None,
            resumes=[r for r in resumes if isinstance(r, dict)] if isinstance(resumes, list) else [],
            corpus_fingerprint=_text(raw.get("corpus_fingerprint")), pid=_count(state.get("pid")),
            host=_text(state.get("host")),
            versions={str(k): _text(v) for k, v in raw["versions"].items()}
            if isinstance(raw.get("versions"), dict) else {},
            process_group=_count(state.get("process_group")),
        )

    def summary(self) -> dict[str, Any]:
        """The `runs --json` row."""
        return {"run_id": self.run_id, "status": self.status, "created": self.created, "model": self.model,
                "corpus": self.corpus, "steps": self.step, "total_steps": self.total_steps,
                "perplexity_before": self.perplexity_before, "perplexity_after": self.perplexity_after,
                "general_perplexity_before": self.general_perplexity_before,
                "general_perplexity_after": self.general_perplexity_after, "duration": self.duration,
                "bytes": self.bytes}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (`runs show --json`)."""
        data = asdict(self)
        data["model_path"] = str(self.model_path) if self.model_path else None
        return data


# -- removing runs --------------------------------------------------------------------------------------
@dataclass
class Deleted:
    run_id: str
    freed_bytes: int
    checkpoints_only: bool
    named_by: list[str]  # runs that started from this one's model


def runs_based_on(run_id: str) -> list[str]:
    """The runs whose model is this run (by id, or a folder inside it)."""
    inside = str(runs_dir() / run_id)
    named = []
    for run in list_runs()[0]:
        with contextlib.suppress(CorruptRun):
            config = run.config()
            refs = [_text(config.get("model")) or "", _text(config.get("model_source")) or ""]
            if run.run_id != run_id and any(r == run_id or r.startswith(inside) for r in refs):
                named.append(run.run_id)
    return named


def delete_run(run: Run, checkpoints_only: bool = False) -> Deleted:
    """Remove a run, or only its checkpoints (its final model and its record stay).

    A live run is refused; the run's lock is held meanwhile so it cannot be resumed mid-delete. The whole
    run is renamed out of the store first, so no reader ever lists a half-deleted one.
    """
    try:
        run.acquire()
    except UsageError:
        raise UsageError(f"run {run.run_id} is {run.status()}: cancel it before deleting it") from None
    try:
        named_by = runs_based_on(run.run_id)
        if checkpoints_only:
            freed = disk_bytes(run.checkpoints_dir)
            shutil.rmtree(run.checkpoints_dir, ignore_errors=True)
            return Deleted(run.run_id, freed, True, named_by)
        freed = disk_bytes(run.dir)
        doomed = run.dir.with_name(f".deleting-{run.run_id}")
        run.dir.rename(doomed)
    finally:
        run.release()
    shutil.rmtree(doomed, ignore_errors=True)
    return Deleted(run.run_id, freed, False, named_by)
