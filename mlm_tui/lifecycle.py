"""A run's life, in one place: created (or claimed from the launcher that created it, or taken back to
resume), held under its lock while it trains, and ended with one final record (completed, failed,
cancelled or interrupted, with the message) before its lock is released, whatever happened inside.

As MLflow's `start_run()` marks a run FINISHED, FAILED or KILLED on leaving its block, `TrainingRun.run`
holds the run around `training.FineTune`, which only trains and reports. The CLI (`train`), the workbench
(`launch`) and the processes of a multi-process launch (`train`, through `launcher`) all come here, so
there is one place that says when a run exists, who writes it and how its end is recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from mlm_tui import checkpoints, launcher, runstore
from mlm_tui.errors import FieldError, MlmError, RunCancelled, UsageError, first_line
from mlm_tui.run_settings import TrainConfig, config_from_given, train_argv
from mlm_tui.runstore import Run, RunInfo
from mlm_tui.training import Event, FineTune, pick_device


def launch(config: TrainConfig) -> str:
    """The workbench's start: `mlm-tui train` in a process of its own (`launcher.start`); return the id of
    its run, which exists (`preparing`) from this moment, its lock handed down to that process."""
    from mlm_tui.corpus import corpus_files

    config.validate()
    try:  # a path that is not there (a typo, a path typed onto the one the form held) leaves no failed run
        corpus_files(config.corpus)
    except UsageError as exc:
        raise FieldError("corpus", f"{{field}}: {exc}") from None
    run = runstore.create_run(asdict(config))
    try:
        run.update_state(pid=launcher.start(run, train_argv(config)))
    except OSError as exc:
        run.fail("failed", f"could not start mlm-tui train: {exc}")
        raise MlmError(f"could not start mlm-tui train: {exc}") from None
    finally:
        run.release()  # the process holds the lock now (or the run failed)
    return run.run_id


def train(given: Mapping[str, Any], *, resume: str | None = None, run_id: str | None = None,
          accept_changed_corpus: bool = False, argv: Sequence[str] = (), worker_flags: Sequence[str] = (),
          on_event: Callable[[Event], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """`mlm-tui train`: a new run of the `given` settings (a run a launcher created, with `run_id`), or
    run `resume` continued with them; here, or through a multi-process launch of several. The result, or
    an empty dict in a secondary process of a launch and in a launcher (the launch's main process says it).

    `argv`: this command line, which every process of a resumed multi-process launch gets; `worker_flags`:
    flags that every process of a new one gets besides the settings (the CLI's `--json`).
    """
    _set_threads()
    kwargs: dict[str, Any] = {"on_event": on_event, "should_stop": should_stop}
    if "LOCAL_RANK" not in os.environ and _launched(given, resume, run_id, argv, worker_flags):
        return {}
    # A worker of a launch holds the run as one of its processes for its whole life (see `join_launch`).
    with runstore.join_launch() or contextlib.nullcontext():
        if resume is not None:
            return TrainingRun.resuming(_find(resume), given, accept_changed_corpus=accept_changed_corpus,
                                        **kwargs).run()
        # A launched run exists before this process reads anything: it is claimed first, so that any
        # failure, even a bad setting, is recorded in it. A secondary process of a multi-process launch
        # leaves the run to the main one (rank 0).
        claimed = None
        if run_id is not None and os.environ.get("RANK", "0") == "0":
            claimed = runstore.claim_run(run_id, dict(given))
        return TrainingRun(given, run=claimed, **kwargs).run()


class TrainingRun:
    """One run in the run store, trained by `FineTune` from its start (or its resume) to its end. `run()`
    returns the JSON-ready result (an empty dict on the secondary processes of a multi-process launch);
    `run_record` is the run, once this process holds it.

    `settings`: the run's config, or the settings given on a command line, made a config inside the run's
    life so that a claimed run records a bad one. `run`: a run claimed from its launcher, lock held;
    without it, a new run is created once the model and the settings have been checked. `resume`: a run
    to continue from its latest checkpoint (see `resuming`).
    """

    def __init__(self, settings: TrainConfig | Mapping[str, Any], *, run: Run | None = None,
                 resume: Run | None = None, changes: Mapping[str, Any] | None = None,
                 accept_changed_corpus: bool = False, on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.run_record = run
        self.resume = resume
        self.changes = dict(changes or {})
        self.accept_changed_corpus = accept_changed_corpus
        self.corpus_fingerprint: str | None = None  # of the corpus a resume reads now (see `_take_back`)
        self.corpus_changed = False
        self.on_event = on_event
        self._should_stop = should_stop or (lambda: False)

    @classmethod
    def resuming(cls, run: Run, changes: Mapping[str, Any] | None = None, **kwargs: Any) -> TrainingRun:
        """Continue `run` with the settings it recorded, and `changes` to those a resume may change
        (`run_settings.resumable()`); any other change is refused by field."""
        config, applied = run.train_config().resumed_with(changes or {})
        return cls(config, resume=run, changes=applied, **kwargs)

    def stop_requested(self) -> bool:
        """A Ctrl+C, a cancel file, or (in the main worker of a launch) the launcher's death: a launch
        whose launcher was killed would otherwise train on, unseen and unstoppable."""
        if self._should_stop():
            return True
        run = self.run_record
        return run is not None and ((run.dir / "cancel").exists() or run.launcher_died())

    def run(self) -> dict[str, Any]:
        with self._held():
            config = self.settings if isinstance(self.settings, TrainConfig) else config_from_given(
                self.settings)
            trainer = FineTune(config, on_event=self.on_event, should_stop=self.stop_requested,
                               resume=self.resume)
            trainer.start()
            prior = self._take_back(trainer) if self.resume is not None else None
            trainer.record = self.run_record
            source, tokenizer = trainer.open_model()
            trainer.open_general(tokenizer)  # a bad general text is refused before a new run exists
            if trainer.is_main:
                self._open(trainer, source, prior)
                trainer.record = self.run_record
            result = trainer.train(source, tokenizer, prior)
            if self.run_record is None:
                return result
            return _complete(self.run_record, result, trainer)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """Whatever ends the block, a run this process holds records why and is released."""
        try:
            yield
        except BaseException as exc:
            run = self.run_record
            if run is not None and run.owns_lock():
                raise _record_end(run, exc) from None
            raise
        finally:
            if self.run_record is not None:
                self.run_record.release()

    def _take_back(self, trainer: FineTune) -> RunInfo:
        """Refuse a resume that would surprise (a live or finished run, a changed corpus) before the run is
        touched; return what it recorded. Every process reads it before anyone writes, so all take the same
        branches (skipping the "before" evaluation, say): a branch taken by one process only would hang
        DDP. Then the main process holds the run: a failure from here on is recorded in it."""
        from mlm_tui.corpus import fingerprint

        run, config = self.resume, trainer.config
        assert run is not None
        prior = run.info()
        if prior.status in ("preparing", "running", "completed"):
            raise UsageError(f"run {run.run_id} is {prior.status}: only interrupted, cancelled or failed "
                             "runs resume")
        self.corpus_fingerprint = fingerprint(config.corpus)
        recorded = prior.corpus_fingerprint
        self.corpus_changed = recorded is not None and recorded != self.corpus_fingerprint
        if self.corpus_changed and not self.accept_changed_corpus:
            raise FieldError("accept_changed_corpus", f"the corpus {config.corpus} changed since run "
                             f"{run.run_id} read it, so the data would not be the same; resume on it anyway "
                             "with {field}")
        done = prior.checkpoints
        if done and config.max_steps is not None and config.max_steps < done[-1]:
            raise FieldError("max_steps", f"{{field}} {config.max_steps} is before step {done[-1]}, "
                             f"where run {run.run_id} resumes")
        trainer.wait_for_everyone()
        if trainer.is_main:
            run.acquire()
            self.run_record = run
            (run.dir / "cancel").unlink(missing_ok=True)  # the request that stopped it is done
        return prior

    def _open(self, trainer: FineTune, source: str, prior: RunInfo | None) -> None:
        """The run exists from here (if it did not already), `preparing`: tokenizing failures are recorded
        in it. Its config records the settings, and where a resume changed them."""
        from mlm_tui.corpus import fingerprint

        config = trainer.config
        if self.run_record is None:
            self.run_record = runstore.create_run(asdict(config))
        run = self.run_record
        run.update_state(status="preparing", pid=os.getpid(), host=os.uname().nodename, message=None,
                         problem=None, finished=None)
        if prior is None:
            run.update_config(**asdict(config), model_source=source, given=trainer.given,
                              corpus_fingerprint=fingerprint(config.corpus), versions=_versions())
            return
        recorded = run.update_config(**asdict(config))
        resume: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": self.changes}
        if self.corpus_changed:
            resume["corpus_changed"] = {"from": recorded.get("corpus_fingerprint"),
                                        "to": self.corpus_fingerprint}
            trainer.emit("status", message="the corpus changed since the run read it: resuming on it as "
                         "asked")
        resumes = recorded.get("resumes") if isinstance(recorded.get("resumes"), list) else []
        run.update_config(resumes=[*resumes, resume], corpus_fingerprint=self.corpus_fingerprint)
        if self.changes:
            changed = ", ".join(f"{k} {v}" for k, v in self.changes.items())
            trainer.emit("status", message=f"resuming with {changed}")


def _complete(run: Run, result: dict[str, Any], trainer: FineTune) -> dict[str, Any]:
    """The final record of a run that trained to its end, and its model card; the result, completed."""
    run.update_state(status="completed", finished=time.time())
    checkpoints.prune(run, trainer.config.keep_checkpoints)  # it never resumes: only the kept ones stay
    run.log(f"completed: perplexity {result['perplexity_before']:.2f} -> {result['perplexity_after']:.2f}")
    from mlm_tui.modelcard import write_card

    try:  # from the completed record: the card states the results the store holds
        write_card(run)
    except (OSError, MlmError) as exc:  # the model is saved; export and push write the card again
        trainer.emit("warning", message=f"could not write the model card ({exc})")
    return {"run_id": run.run_id, "status": "completed", **result}


def _record_end(run: Run, exc: BaseException) -> BaseException:
    """Say in the run why it stopped; return the error to raise (one line, with what to do)."""
    if isinstance(exc, RunCancelled) and run.launcher_lost:
        msg = (f"the mlm-tui process that launched it died; {str(exc).replace('cancelled', 'stopped')}; "
               f"resume with: mlm-tui train --resume {run.run_id}")
        status, error = "interrupted", RunCancelled(msg)
    elif isinstance(exc, RunCancelled):
        msg = f"{exc}; resume with: mlm-tui train --resume {run.run_id}"
        status, error = "cancelled", RunCancelled(msg)
    else:
        msg = first_line(exc)  # a bad setting in words; each face names it its own way (`message_for`)
        status, error = ("cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"), exc
    run.fail(status, msg, exc if isinstance(exc, FieldError) else None)
    return error


def _versions() -> dict[str, str | None]:
    """Library versions, read from the installed metadata, not by importing: `datasets` costs a second to
    import and a run on a local file never needs it (it may not even be installed on a GPU box)."""
    from importlib import metadata

    from mlm_tui import __version__

    versions: dict[str, str | None] = {"mlm_tui": __version__}
    for name in ("torch", "transformers", "datasets", "accelerate"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _set_threads() -> None:
    """The CPU threads a launcher gave this training process (`launcher.thread_split`)."""
    from mlm_tui.home import threads_from_env

    threads = threads_from_env()
    if threads:
        import torch

        torch.set_num_threads(threads)


def _find(ref: str) -> Run:
    run = runstore.find_run(ref)
    if run is None:
        raise UsageError(f"no run called {ref!r} (see: mlm-tui runs)")
    return run


# -- several processes ------------------------------------------------------------------------------------
def _launched(given: Mapping[str, Any], resume: str | None, run_id: str | None, argv: Sequence[str],
              worker_flags: Sequence[str]) -> bool:
    """Run a run of several processes (`--processes`, `--nodes`) through `accelerate launch` or
    `torchrun` to its end; False when the run is one process, which trains here.

    The run is created (or claimed, or locked to resume) here first, on node 0, so its id is known before
    any worker starts and reaches them all; this process holds its lock for the launch's whole life, and
    the launch's main process writes the run under it (see `Run.acquire`).
    """
    run: Run | None = None
    if resume is not None:
        run = _find(resume)
        config, _ = run.train_config().resumed_with(given)
    else:
        config = config_from_given(given)
    if config.processes * config.nodes == 1:
        return False
    device = pick_device(config.device)
    launcher.launch_command(config, [], device)  # bad launch options are refused before a run exists
    if config.node_rank != 0:
        run = None  # node 0 keeps the run (several nodes resume from a run store they share)
    elif run is not None:
        run.acquire()
        if run.state().get("status") in runstore.LIVE:  # its processes died: say so for the workers
            run.update_state(status="interrupted")
    elif run_id is not None:
        run = runstore.claim_run(run_id, dict(given))
    else:
        run = runstore.create_run(asdict(config))
    if resume is not None:
        command = list(argv)
    else:
        command = ["train", *worker_flags, *([f"--run-id={run.run_id}"] if run else []),
                   *train_argv(config)[1:]]
    _launch_held(launcher.launch_command(config, command, device), run)
    return True


def _launch_held(command: list[str], run: Run | None) -> None:
    """`launcher.run_launch` with the run held by this process (None on a node other than node 0), then
    said as a single-process run says it: a run that did not complete raises its recorded message, with
    130 for a Ctrl+C or a cancel and 143 for a SIGTERM."""
    end: launcher.LaunchEnd | None = None
    try:
        end = launcher.run_launch(command, run)
    finally:
        if run is not None:
            _record_launch_end(run, end)
    if run is None:
        if end.returncode:
            raise SystemExit(end.returncode)  # another node's launch: its main process reports
        return
    info = run.info()
    if info.status == "completed":
        return
    error = (RunCancelled if info.status == "cancelled" else MlmError)(info.message or info.status)
    if end.stop_signal is not None:
        error.exit_code = 143 if end.stop_signal == signal.SIGTERM else 130
    raise error


def _record_launch_end(run: Run, end: launcher.LaunchEnd | None) -> None:
    """Make the run say how its launch ended, and release it. A worker killed by a signal is named (the
    main worker only saw its peer vanish); a launch that ended without a word is recorded failed; one whose
    agent is gone but whose workers are not gets the lock back in its main worker, which stops them all
    and records why (`Run.launcher_died`)."""
    try:
        if run.workers_alive():
            run.release()
            run.wait_for_workers(timeout=120)
            return
        state = run.state()
        resume = f"resume with: mlm-tui train --resume {run.run_id}"
        if end is not None and end.died is not None and state.get("status") in (*runstore.LIVE, "failed"):
            rank, how = end.died
            run.fail("failed", f"worker {rank} died ({how}) at step {state.get('step', 0)}; {resume}")
        elif state.get("status") in runstore.LIVE:
            code = end.returncode if end is not None else None
            run.fail("failed", f"the launch ended (exit status {code}) before the run recorded why; {resume}")
    finally:
        run.release()
