"""The run store: one folder per fine-tune run, readable by any process while the run goes on.

    runs/<run_id>/config.json     settings, library versions, corpus fingerprint, plan, resumes
                  state.json      status, progress and results (rewritten atomically)
                  metrics.jsonl   one line per logged step or evaluation (appended)
                  log.txt         the run's human-readable log
                  lock            flock'ed by the training process for its whole life
                  workers.lock    shared-flock'ed by every worker of a multi-process launch
                  output.txt      stdout and stderr of a run the workbench launched
                  launch.log      stderr of a multi-process launch (its workers and its agent)
                  checkpoints/    step-N folders: the latest and the best by eval perplexity
                  model/          the final model and tokenizer (`save_pretrained`)

A run exists from its launch: it is `preparing` while its corpus is read and tokenized (the progress is
in its state), then `running`. A run whose state says `preparing` or `running` but whose lock nobody
holds lost its process (kill -9, power loss): it is reported as `interrupted`. The lock is the truth, not a
pid or a clock, so pid reuse cannot fool it. A new run takes its lock before it writes any file, and a
launcher hands its lock down to the process it starts, so no reader ever sees a run `interrupted` at birth.
A multi-process launch holds `lock` in its launcher and `workers.lock` in each of its workers: the run is
live while any of them is, and the main worker takes `lock` over (and stops every worker) when the
launcher dies. Run files are written only into a run folder that exists, so a deleted run stays deleted.

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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from mlm_tui import atomic
from mlm_tui.brake import Brake
from mlm_tui.errors import FieldError, MlmError, UsageError
from mlm_tui.home import run_listing_path, runs_dir
from mlm_tui.pullback import Pullback, explained
from mlm_tui.run_settings import Plan, TrainConfig

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
STATUSES = ("preparing", "running", "completed", "cancelled", "failed", "interrupted")
LIVE = ("preparing", "running")
LOCK_FD_ENV = "MLM_TUI_RUN_LOCK_FD"  # the lock a launcher hands down to the process it starts
DELEGATED_ENV = "MLM_TUI_RUN_DELEGATED"  # a run whose lock the process that started this launch holds
CHECKPOINT_DIR = re.compile(r"^step-(\d+)$")  # checkpoints/step-0000040, written by `checkpoints.save`
BEST_CHECKPOINT = "best.json"  # in checkpoints/: {"step": N}, the checkpoint with the best eval perplexity
WATCH_SECONDS = 1.0  # how often the main worker of a launch checks that its launcher is still there


class CorruptRun(MlmError):
    """A run folder whose files cannot be read: `runs` lists it as a problem, resuming it says why."""


@dataclass
class Run:
    run_id: str
    dir: Path
    _lock_file: IO[str] | None = field(default=None, repr=False, compare=False)
    _delegated: bool = field(default=False, repr=False, compare=False)  # see `acquire`
    _last_watch: float = field(default=0.0, repr=False, compare=False)
    launcher_lost: bool = field(default=False, repr=False, compare=False)  # see `launcher_died`

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

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:07d}"

    def _checkpoint_dirs(self) -> list[tuple[int, Path]]:
        """The complete checkpoints (a half-written one has no trainer_state.json yet), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for p in self.checkpoints_dir.iterdir():
            m = CHECKPOINT_DIR.match(p.name)
            if m and (p / "trainer_state.json").is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def checkpoint_steps(self) -> list[int]:
        """The steps the run has checkpoints of, oldest first."""
        return [step for step, _ in self._checkpoint_dirs()]

    def latest_checkpoint(self) -> Path | None:
        dirs = self._checkpoint_dirs()
        return dirs[-1][1] if dirs else None

    def best_checkpoint_step(self) -> int | None:
        try:
            return int(atomic.read_json(self.checkpoints_dir / BEST_CHECKPOINT)["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def learned_path(self) -> Path:
        """The summary of the last word test of the run (`learned.run_learned`)."""
        return self.dir / "learned.json"

    def config(self) -> dict[str, Any]:
        return _read(self.dir / "config.json")

    def state(self) -> dict[str, Any]:
        return _read(self.dir / "state.json")

    def is_live(self) -> bool:
        """True while some process of the run holds its lock or, in a multi-process launch, while any of
        its workers is still there (a launcher killed with kill -9 does not take its workers with it)."""
        return _held(self.dir / "lock") or self.workers_alive()

    def workers_alive(self) -> bool:
        """True while a worker of a multi-process launch of this run is still running (see `join_launch`)."""
        return _held(self.dir / "workers.lock")

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
            raise CorruptRun(f"{self.run_id}: config.json: {exc.named(lambda key: key)}") from None

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
        fh = _try_lock(self.dir / "lock")
        if fh is None or self.workers_alive():  # workers that outlived their launcher still own the run
            if fh is not None:
                fh.close()
            raise UsageError(f"run {self.run_id} is already being trained by another process")
        self._lock_file = fh

    def launcher_died(self) -> bool:
        """For the main worker of a multi-process launch: True once the process that launched it (and holds
        the run's lock for it) has gone, killed or crashed; this process then holds the lock itself, so the
        run stays live while it stops every worker and records why. Checked at most every WATCH_SECONDS."""
        if self.launcher_lost:
            return True
        now = time.monotonic()
        if not self._delegated or now - self._last_watch < WATCH_SECONDS:
            return False
        self._last_watch = now
        fh = _try_lock(self.dir / "lock")
        if fh is None:
            return False  # the launcher still holds it
        self._lock_file, self._delegated, self.launcher_lost = fh, False, True
        return True

    def wait_for_workers(self, timeout: float) -> bool:
        """Wait until no worker of a launch holds the run (True), or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while self.workers_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

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

    def fail(self, status: str, message: str, problem: FieldError | None = None) -> None:
        """Record why the run stopped (`failed`, `cancelled`, `interrupted`). A bad setting (`problem`) is
        kept apart too, so that each face names it its own way (`RunInfo.message_for`)."""
        named = None if problem is None else {"field": problem.field, "template": problem.template,
                                              "also": list(problem.also)}
        self.update_state(status=status, message=message, problem=named, finished=time.time())
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


def _try_lock(path: Path) -> IO[str] | None:
    """The file opened and flock'ed exclusively, or None while another process holds it. The folder must
    exist: a lock never re-creates a deleted run."""
    fh = open(path, "a")  # noqa: SIM115 - kept open for as long as the lock is held
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def _held(path: Path) -> bool:
    """True while some process holds a lock on `path` (exclusive or shared); nothing is created."""
    try:
        fh = open(path)  # noqa: SIM115 - closed below; "r" never creates the file
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def join_launch() -> IO[str] | None:
    """Mark this process as a worker of the multi-process launch of the run named in DELEGATED_ENV (set by
    `launcher.run_launch` for every process it starts); None outside such a launch. Keep the returned file
    open while training: the run counts as live while any worker holds it, even if its launcher is gone."""
    run_id = os.environ.get(DELEGATED_ENV, "")
    if not RUN_ID.fullmatch(run_id):
        return None
    path = runs_dir() / run_id
    if not path.is_dir():
        raise UsageError(f"run {run_id} is gone (deleted while its launch was starting)")
    fh = open(path / "workers.lock", "a")  # noqa: SIM115 - held for the process's life by the caller
    fcntl.flock(fh, fcntl.LOCK_SH)
    return fh


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

    A launcher creates the run `preparing` and hands its lock down (see `lifecycle.launch`); a run id that
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


def find_run(ref: str, stubs: bool = False) -> Run | None:
    """The run with this id, if any. Only well-formed ids are joined to the store path, so a reference
    such as `../x` can never name a folder outside it. With `stubs`, also a run folder whose config.json
    is missing (what a dead process left), so that `runs delete` can remove it."""
    if not RUN_ID.fullmatch(ref):
        return None
    path = runs_dir() / ref
    if (path / "config.json").is_file() or (stubs and path.is_dir()):
        return Run(ref, path)
    return None


def _run_names(base: Path) -> list[str]:
    """The run folders of the store, newest first."""
    with os.scandir(base) as entries:
        return sorted((e.name for e in entries if RUN_ID.fullmatch(e.name) and e.is_dir()), reverse=True)


def _being_created(run: Run) -> bool:
    """A folder its process is creating this very moment (its lock taken, or about to be, before
    config.json is written): neither a run to list nor a problem yet."""
    if (run.dir / "config.json").exists():
        return False
    if run.is_live():
        return True
    try:  # made a moment ago, still empty: its creator has not taken its lock yet (a stub holds files)
        return not any(run.dir.iterdir()) and time.time() - run.dir.stat().st_mtime < CREATING_S
    except FileNotFoundError:
        return True


def list_runs() -> tuple[list[Run], list[str]]:
    """All readable runs, newest first, and one line per folder that could not be read."""
    runs, problems = [], []
    base = runs_dir()
    for name in _run_names(base):
        run = Run(name, base / name)
        if _being_created(run):
            continue
        try:
            run.config()
            run.status()
        except CorruptRun as exc:
            problems.append(f"skipped run {exc} (remove it with: mlm-tui runs delete {name})")
            continue
        runs.append(run)
    return runs, problems


CREATING_S = 60.0  # an empty run folder is a run being created for this long (creating takes ms)


def list_infos() -> tuple[list[RunInfo], list[str]]:
    """`RunInfo` of every readable run, newest first, and one line per run that could not be read.

    A run can change between listing and reading it (it is being written by its own process), so a read
    failure here is another problem line, not a crash.

    The workbench lists the store every second, so what a listing read of a finished run is kept and
    given again while the run's files are as they were (`_stamp`): a listing of a store where nothing
    changed costs three `stat` calls a run. It is kept on disk too (`run_listing_path`), so a new
    process (`mlm-tui runs`) does not read a finished run's files, nor walk its folder for disk use,
    again. A run whose state says it is live is read every time: its lock, not its files, says whether
    it still is, and its duration grows.
    """
    base = runs_dir()
    before = _listed.pop(base, None)
    if before is None:
        before = _load_listing()
    now: dict[str, tuple[tuple[int, ...], RunInfo | str]] = {}
    infos, problems = [], []
    for name in _run_names(base):
        stamp = _stamp(base, name)
        known = before.get(name)
        entry = known[1] if known is not None and known[0] == stamp else _read_info(Run(name, base / name))
        if entry is None:
            continue
        if isinstance(entry, str):
            problems.append(entry)
        else:
            infos.append(entry)
        if stamp is not None and (isinstance(entry, str) or entry.status in SETTLED):
            now[name] = (stamp, entry)
    _listed[base] = now
    while len(_listed) > LISTINGS_KEPT:
        del _listed[next(iter(_listed))]
    if _kept(now) != _kept(before):
        _save_listing(now)
    return infos, problems


SETTLED = ("completed", "cancelled", "failed")  # statuses only a new write to state.json can change
LISTINGS_KEPT = 4  # stores whose last listing is kept (a test session makes many)
# The last listing of each store: per run folder, the stamp of its files and what was read then.
_listed: dict[Path, dict[str, tuple[tuple[int, ...], RunInfo | str]]] = {}


def _stamp(base: Path, name: str) -> tuple[int, ...] | None:
    """What changes whenever a run's record does. The run store writes state.json and config.json
    atomically (a new file, a new inode, renamed into the run's folder, which moves the folder's mtime);
    deleting the checkpoints moves it too; a hand edit in place moves the file's own mtime. The inodes
    and sizes tell apart two writes within one tick of the clock."""
    folder = os.path.join(base, name)
    try:
        here = os.stat(folder)
        state = os.stat(os.path.join(folder, "state.json"))
        config = os.stat(os.path.join(folder, "config.json"))
    except OSError:
        return None
    return (here.st_mtime_ns, state.st_mtime_ns, state.st_ino, state.st_size, config.st_mtime_ns,
            config.st_ino, config.st_size)


def _kept(listing: dict[str, tuple[tuple[int, ...], RunInfo | str]]) -> dict[str, tuple[int, ...]]:
    return {name: stamp for name, (stamp, entry) in listing.items() if not isinstance(entry, str)}


def _listing_format() -> list[str]:
    """The fields a kept listing was written with: one of another version of mlm-tui is not read."""
    return [f"{cls.__name__}.{f.name}" for cls in (RunInfo, TrainConfig, Plan) for f in fields(cls)]


def _load_listing() -> dict[str, tuple[tuple[int, ...], RunInfo | str]]:
    """The finished runs the last listing of this store kept on disk; nothing if it cannot be read."""
    try:
        data = atomic.read_json(run_listing_path())
        if data.get("format") != _listing_format():
            return {}
        return {name: (tuple(stamp), RunInfo.from_dict(info)) for name, (stamp, info) in data["runs"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _save_listing(listing: dict[str, tuple[tuple[int, ...], RunInfo | str]]) -> None:
    """Keep the finished runs of a listing for the next process; a store that cannot be written to costs
    nothing but that."""
    runs = {name: (stamp, entry.to_dict()) for name, (stamp, entry) in listing.items()
            if not isinstance(entry, str)}
    data = atomic.dumps({"format": _listing_format(), "runs": runs}).encode()
    with contextlib.suppress(OSError):
        atomic.write_bytes(run_listing_path(), data)


def _read_info(run: Run) -> RunInfo | str | None:
    """A run's `RunInfo`, the problem line of one that cannot be read, or None while it is created."""
    if _being_created(run):
        return None
    try:
        return run.info()
    except CorruptRun as exc:
        return f"skipped run {exc} (remove it with: mlm-tui runs delete {run.run_id})"


def disk_bytes(path: Path) -> int:
    """Bytes of the files under a folder; files that vanish meanwhile (a checkpoint rotated) count 0."""
    total, folders = 0, [os.fspath(path)]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
    return total


# -- the typed view -------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _problem(value: Any) -> dict[str, Any] | None:
    """A recorded bad setting, if it is one (a hand-edited file may hold anything)."""
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("field", "template")):
        return None
    also = value.get("also")
    if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
        return None
    return {"field": value["field"], "template": value["template"], "also": also}


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
    corpus: str | None  # as the user gave it (the config holds its absolute path)
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
    process_group: int | None = None  # of a multi-process launch: its agent's process group
    problem: dict[str, Any] | None = None  # the bad setting the run stopped on: {"field", "template", "also"}
    learning_rate: float | None = None  # the peak rate the run trains at: as given, or as `auto` chose it
    learning_rate_reason: str | None = None  # "given", or how `auto` chose it (see `lr_find`), with its brake
    learning_rate_brake: str | None = None  # how `auto` braked it mid-run (see `brake`), or None
    pullback: str | None = None  # how far back to its start `auto` took its final weights (`pullback`)
    learned: dict[str, Any] | None = None  # the last `runs learned` summary: {"summary", "model", "measured"}
    # Bits per character on the test split's first `bpc_chars` characters (`bpc`): the base model with its
    # own tokenizer, then the run's model with the run's; they compare across vocabularies.
    bpc_before: float | None = None
    bpc_after: float | None = None
    bpc_characters: int | None = None  # the characters measured (fewer than asked in a small test split)
    vocab_words: list[str] = field(default_factory=list)  # the words `--extend-vocab` added (`vocab_extend`)
    vocab_how: str | None = None  # how they were added: the tokenizer family's native way, or added tokens

    @classmethod
    def read(cls, run: Run) -> RunInfo:
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
        given = raw.get("given") if isinstance(raw.get("given"), dict) else {}  # paths as typed
        found = raw.get("lr_find") if isinstance(raw.get("lr_find"), dict) else {}  # `auto`'s range test
        message = _text(state.get("message"))
        if status == "interrupted" and message is None:
            message = _last_line(run.dir / "output.txt")  # a launched process that died before it said why
        return cls(
            run_id=run.run_id, status=status, step=_count(state.get("step")) or 0,
            total_steps=_count(state.get("total_steps")), created=_text(raw.get("created")),
            model=_text(raw.get("model")), model_source=_text(raw.get("model_source")),
            corpus=_text(given.get("corpus")) or _text(raw.get("corpus")),
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
            checkpoints=run.checkpoint_steps(), best_checkpoint=run.best_checkpoint_step(),
            bytes=disk_bytes(run.dir),
            model_path=run.model_path if (run.model_path / "config.json").is_file() else None,
            resumes=[r for r in resumes if isinstance(r, dict)] if isinstance(resumes, list) else [],
            corpus_fingerprint=_text(raw.get("corpus_fingerprint")), pid=_count(state.get("pid")),
            host=_text(state.get("host")),
            versions={str(k): _text(v) for k, v in raw["versions"].items()}
            if isinstance(raw.get("versions"), dict) else {},
            process_group=_count(state.get("process_group")), problem=_problem(state.get("problem")),
            **_rate(config, found),
            learned=_learned(run), bpc_before=_number(state.get("bpc_before")),
            bpc_after=_number(state.get("bpc_after")), bpc_characters=_count(state.get("bpc_characters")),
            **_extension(raw.get("vocab_extension")),
        )

    def message_for(self, name: Callable[[str], str]) -> str | None:
        """Why the run stopped, a bad setting called what `name` calls it: its flag in the CLI, its form
        label in the workbench (`run_settings.flag`, `run_settings.label`)."""
        p = self.problem
        if p is None:
            return self.message
        return FieldError(p["field"], p["template"], also=tuple(p["also"])).named(name)

    def summary(self) -> dict[str, Any]:
        """The `runs --json` row."""
        return {"run_id": self.run_id, "status": self.status, "created": self.created, "model": self.model,
                "corpus": self.corpus, "steps": self.step, "total_steps": self.total_steps,
                "perplexity_before": self.perplexity_before, "perplexity_after": self.perplexity_after,
                "general_perplexity_before": self.general_perplexity_before,
                "general_perplexity_after": self.general_perplexity_after, "bpc_before": self.bpc_before,
                "bpc_after": self.bpc_after, "duration": self.duration, "bytes": self.bytes}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (`runs show --json`)."""
        data = asdict(self)
        data["model_path"] = str(self.model_path) if self.model_path else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        """The `RunInfo` that `to_dict` wrote (raises TypeError or KeyError for anything else)."""
        config, plan, model_path = data["config"], data["plan"], data["model_path"]
        return cls(**{**data, "config": TrainConfig(**config) if config is not None else None,
                      "plan": Plan(**plan) if plan is not None else None,
                      "model_path": Path(model_path) if model_path is not None else None})


def _extension(recorded: Any) -> dict[str, Any]:
    """The words a vocabulary extension added and how, from its record in the config (`vocab_extend`)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("words"), list):
        return {}
    words = [str(w.get("word")) for w in recorded["words"] if isinstance(w, dict) and w.get("word")]
    return {"vocab_words": words, "vocab_how": _text(recorded.get("how"))}


def _rate(config: TrainConfig | None, found: dict[str, Any]) -> dict[str, Any]:
    """The rate a run trains at and why: a number given is used as given; `auto` (the default) is chosen
    when the run starts (`lr_find`), so until then it reads as None."""
    if config is not None and config.learning_rate != "auto":
        return {"learning_rate": float(config.learning_rate), "learning_rate_reason": "given"}
    rate, reason = _number(found.get("suggested")), _text(found.get("reason"))
    if rate is None:
        return {"learning_rate": None, "learning_rate_reason": None}
    brake, pullback = Brake.from_record(found.get("brake")), Pullback.from_record(found.get("pullback"))
    return {"learning_rate": rate,
            "learning_rate_reason": explained({**found, "reason": reason}),
            "learning_rate_brake": brake.describe() if brake is not None else None,
            "pullback": pullback.describe() if pullback is not None else None}


def _learned(run: Run) -> dict[str, Any] | None:
    """The run's last word-test summary, or None when there is none that reads as one."""
    try:
        data = atomic.read_json(run.learned_path)
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("summary"), dict)
    return data if ok and isinstance(data["summary"].get("text"), str) else None


@dataclass
class ModelRefs:
    """A run's two models, for comparing them: what `runs learned` and `runs probe` load."""

    run: Run
    info: RunInfo
    config: TrainConfig
    base: str  # what to load as the base model: the folder the run started from if it is still there
    model: Path  # the final model, or the last checkpoint of a run that did not finish
    which: str  # "final model", or "last checkpoint, step N; run cancelled"


def model_refs(run_id: str) -> ModelRefs:
    """Find run `run_id`, its base model and its final model (or, for a run that ended without one, its last
    checkpoint); one line for each reason there is nothing to compare."""
    run = find_run(run_id)
    if run is None:
        raise UsageError(f"no run called {run_id!r} (see: mlm-tui runs)")
    info = run.info()
    if info.config is None:
        raise UsageError(f"run {run_id}: {info.config_problem}")
    model, which = info.model_path, "final model"
    if model is None and info.status in LIVE:
        raise UsageError(f"run {run_id} is still {info.status}: compare it once it ends (a cancelled run's "
                         "last checkpoint will do)")
    if model is None:
        model = run.latest_checkpoint()
        which = f"last checkpoint, step {info.checkpoints[-1]}; run {info.status}" if model else which
    if model is None:
        raise UsageError(f"run {run_id} has no final model ({info.status}) and no checkpoint: only a run "
                         "with a model can be compared with its base model")
    return ModelRefs(run, info, info.config, base_ref(info), model, which)


def base_ref(info: RunInfo) -> str:
    """What to load as a run's base model: the folder it started from if that is still there, else its
    model setting (a run id, `starter`, a hub id)."""
    assert info.config is not None
    return info.model_source if info.model_source and Path(info.model_source).is_dir() else info.config.model


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
        if not run.dir.exists():  # renamed away by a delete that held the lock until now
            run.release()
            raise FileNotFoundError
    except UsageError:
        raise UsageError(_why_busy(run)) from None
    except FileNotFoundError:
        raise UsageError(f"run {run.run_id} was deleted meanwhile, by another process") from None
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


def _why_busy(run: Run) -> str:
    """Why another process holds the run's lock: it trains the run, or deletes or resumes it right now."""
    if not run.dir.exists():
        return f"run {run.run_id} was deleted meanwhile, by another process"
    try:
        status = run.status()
    except CorruptRun:
        status = None
    if status in LIVE:
        return f"run {run.run_id} is {status}: cancel it before deleting it"
    return f"run {run.run_id} is in use by another process (a delete or a resume); try again"
