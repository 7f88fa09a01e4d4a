"""Fine-tuning: the course's masked-LM recipe as one engine function with progress and a cancel signal.

Built on Accelerate, so one GPU, several (`accelerate launch`) or the CPU run the same loop, with mixed
precision where the device has it. What makes it faster than the Trainer recipe: chunks are a
pre-tokenized int32 array (no per-step Python collation), masks are drawn vectorised per batch, and the
vocabulary head runs on masked rows only (see `heads.MaskedOnlyMLM`); the loss is the same.

Every run lives in the run store (`runstore`), which is how the CLI, the workbench and other processes
follow it, and how an interrupted run resumes from its last checkpoint with the same data order, masks and
dropout draws. Its settings are declared in `run_settings`; its life (created or claimed, locked, resumed,
its end recorded, released) is `lifecycle`'s: `FineTune` only trains and reports to the run it is given.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlm_tui.errors import FieldError, MlmError, RunCancelled, UsageError
from mlm_tui.run_settings import Plan, TrainConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mlm_tui.lr_find import RangeTest
    from mlm_tui.runstore import Run, RunInfo

Event = dict[str, Any]
TOKENIZE_STATE_S = 0.5  # how often tokenizing progress is written to the run's state


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise FieldError("device", "{field} cuda: no CUDA device is available here")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def cpu_has_native_bf16() -> bool:
    """bf16 autocast pays on a CPU only with bf16 instructions (AVX512-BF16 or AMX): there it trains about
    1.7x faster than fp32 with the same loss; elsewhere it is emulated and slower than fp32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the fallback
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_precision(requested: str, device: str) -> str:
    import torch

    if requested == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "fp16" and device == "cpu":
        raise FieldError("precision", "{field} fp16 needs CUDA; on the CPU use bf16 or fp32")
    return requested


class _NoStore:
    """The run store as a secondary process of `accelerate launch` sees it: writes go nowhere.

    Every process trains (DDP needs them all for each step), but only the main process owns the run's
    files, so two writers never race on state.json or a checkpoint folder.
    """

    run_id = ""

    def update_state(self, **changes: Any) -> dict[str, Any]:
        return changes

    def append_metrics(self, row: dict[str, Any]) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def truncate_metrics(self, after_step: int) -> None:
        pass


@dataclass
class _Parts:
    """What the loop works with, built once per run."""

    model: Any  # the plain masked LM (saved in checkpoints)
    wrapper: Any  # the masked-only wrapper, prepared by Accelerate
    optimizer: Any
    scheduler: Any
    tokenizer: Any
    tables: Any
    evalset: Any
    data: np.ndarray  # the training chunks, read a batch of rows at a time (`batch_rows`)
    autocast: Any
    eval_cancel: Callable[[], bool] | None


class FineTune:
    """The training of one run, from corpus to final model, in the phases `lifecycle.TrainingRun` calls:
    `start`, `open_model`, `train`. It reports as it goes: events to `on_event`, and progress, metrics and
    checkpoints to `record`, the run this process writes (set by `lifecycle`; None on the secondary
    processes of a multi-process launch, which leave the run to the main one, and for `find_rate`). It never
    creates, locks or ends a run.

    `resume`: the run being continued, which every process reads (its latest checkpoint, the rate its range
    test chose).
    """

    def __init__(self, config: TrainConfig, *, on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, resume: Run | None = None) -> None:
        config.validate()
        self.given: dict[str, str] = {}  # the corpus and general text as typed, where made absolute
        if resume is None:
            from mlm_tui.rundata import absolute_paths

            config, self.given = absolute_paths(config)
        self.config = config
        self.on_event = on_event or (lambda event: None)
        self.stop_requested = should_stop or (lambda: False)
        self.resume_run = resume
        self.resume_checkpoint: Path | None = None
        self.prior: RunInfo | None = None  # what a resumed run recorded before this process took it over
        self.record: Run | None = None
        self.is_main = True
        self._tokenize_written = 0.0
        self._tracker_env: str | None = None  # a variable set for the tracker's files, unset at the end
        self.general_set: Any = None  # the general text's eval set, made before a new run exists
        self.extension: Any = None  # the vocabulary extension to apply to the base model (`vocab_extend`)
        self.rate_reason = "given"  # why the run trains at its rate: "given", or how `auto` chose it
        self.source = ""  # where `train` loads the model from: the base, or the checkpoint resumed from

    # -- events ---------------------------------------------------------------------------------------
    def emit(self, kind: str, **data: Any) -> None:
        """Report progress; only the main process does, so `accelerate launch` prints each line once."""
        if not self.is_main:
            return
        self.on_event({"event": kind, **data})
        if self.record is not None and kind in ("status", "warning"):
            self.record.log(data.get("message", ""))

    @property
    def store(self) -> Run | _NoStore:
        return self.record if self.record is not None else _NoStore()

    # -- the phases -----------------------------------------------------------------------------------
    def train(self, source: str, tokenizer: Any, prior: RunInfo | None = None) -> dict[str, Any]:
        """Train from the model at `source` (see `open_model`) and save the final model; the JSON-ready
        result, or an empty dict on a secondary process. `prior`: what a resumed run recorded."""
        import torch

        self.prior = prior
        self.source = source
        try:
            return self._train(source, tokenizer)
        except torch.OutOfMemoryError:
            batch = self.plan.batch_size
            raise MlmError(f"CUDA ran out of memory at batch size {batch} x chunk {self.config.chunk_size}: "
                           f"lower the batch size (try {max(1, batch // 2)}) and raise gradient accumulation "
                           "to keep the effective batch, or lower the chunk size") from None
        finally:
            if self.accelerator.trackers:
                self.accelerator.end_training()  # flushes the tracker's files, whatever the outcome
            if self._tracker_env is not None:
                os.environ.pop(self._tracker_env, None)

    def _train(self, source: str, tokenizer: Any) -> dict[str, Any]:
        tokenizer = self._extend_vocab(tokenizer)  # issue 24: before the corpus is tokenized for training
        train_chunks, test_chunks = self._data(tokenizer)
        plan = self._plan(len(train_chunks), len(test_chunks))
        self.emit("plan", **asdict(plan))
        self._record_start(plan)
        parts = self._build(source, tokenizer, test_chunks, train_chunks, plan)
        return _Steps(self).run(parts, plan)

    def wait_for_everyone(self) -> None:
        """Every process of a launch reaches this point before any goes on."""
        self.accelerator.wait_for_everyone()

    def start(self) -> None:
        """The device, the precision and Accelerate; from here `is_main` says whether this process is the
        launch's main one."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        self.device = pick_device(cfg.device)
        self.precision = pick_precision(cfg.precision, self.device)
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision]
        trackers = _trackers(cfg.report_to)
        # A tracker's folder is known once the run is (see `_start_trackers`); this one satisfies the check
        # Accelerate makes when it is created.
        from mlm_tui.home import runs_dir

        self.accelerator = Accelerator(mixed_precision=mixed, cpu=self.device == "cpu",
                                       gradient_accumulation_steps=cfg.gradient_accumulation,
                                       log_with=trackers, project_dir=str(runs_dir()) if trackers else None)
        self.is_main = self.accelerator.is_main_process
        set_seed(cfg.seed)

    def open_model(self) -> tuple[str, Any]:
        """Where the model comes from (the latest checkpoint when resuming) and its tokenizer, checked
        against the settings before any run is created."""
        from mlm_tui.chunking import check_chunk_size
        from mlm_tui.models import check_model_dir, load_tokenizer, resolve

        cfg = self.config
        if self.resume_run is not None:
            self.resume_checkpoint = self.resume_run.latest_checkpoint()
            if self.resume_checkpoint is None:
                self.emit("status", message=f"run {self.resume_run.run_id} has no checkpoint left: it starts "
                          "again from step 0")
        resolved = resolve(str(self.resume_checkpoint) if self.resume_checkpoint else cfg.model)
        if resolved.path is not None:
            check_model_dir(resolved.path, allow_pickle=cfg.allow_pickle)
        tokenizer = load_tokenizer(resolved.source)
        check_chunk_size(cfg.chunk_size, tokenizer)
        if self.resume_run is None:
            from mlm_tui.corpus import corpus_files

            corpus_files(cfg.corpus)  # a missing file or an unknown format is refused before a run exists
            if cfg.general is not None and not cfg.no_general:
                try:
                    corpus_files(cfg.general)
                except UsageError as exc:
                    raise FieldError("general", f"{{field}}: {exc}") from None
        return resolved.source, tokenizer

    def open_general(self, tokenizer: Any) -> None:
        """The general text, tokenized and masked now, so that a bad one (too short, all unknown tokens) is
        refused before a new run exists; a resumed run reads it when it measures."""
        from mlm_tui.rundata import general_evalset, general_name

        if self.resume_run is None and general_name(self.config) is not None:
            from mlm_tui.masking import TokenTables

            self.general_set = general_evalset(self.config, tokenizer, TokenTables.from_tokenizer(tokenizer))

    def _data(self, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
        from mlm_tui.rundata import select_chunks

        splits = self._tokenize(tokenizer)
        chosen = select_chunks(splits, self.config, self._resolved("test_size", "test_chunks"))
        if chosen.held_out:
            total = chosen.train.documents + chosen.test.documents
            self.emit("status", message=f"held out {chosen.test.documents} of {total} documents as the test "
                      "split")
        return chosen.train_chunks, chosen.test_chunks

    def _tokenize(self, tokenizer: Any) -> dict[str, Any]:
        from mlm_tui.rundata import run_splits

        cfg = self.config
        self.emit("status", message=f"tokenizing {cfg.corpus}")
        try:
            splits = run_splits(cfg, tokenizer, self._resolved("test_size", "test_chunks"),
                                cancelled=self.stop_requested, progress=self._tokenize_progress)
        except UsageError:
            if self.stop_requested():  # the tokenizer's own "cancelled" is a usage error: it is a cancel here
                raise RunCancelled("cancelled while tokenizing") from None
            raise
        self.emit("status", message=f"tokenized {sum(s.documents for s in splits.values())} documents")
        return splits

    # -- vocabulary extension (issue 24; the engine is `vocab_extend`) ---------------------------------
    def _extend_vocab(self, tokenizer: Any) -> Any:
        """The base tokenizer with `--extend-vocab` words added, chosen on the training split as the base
        tokenizer cuts it; recorded in the run's config. A checkpoint already holds the extended tokenizer
        and model, so a resume from one adds nothing."""
        cfg = self.config
        if not cfg.extend_vocab or self.resume_checkpoint is not None:
            return tokenizer
        from mlm_tui.rundata import training_split
        from mlm_tui.vocab_extend import extend

        train = training_split(self._tokenize(tokenizer), cfg.seed)
        self.emit("status", message=f"choosing {cfg.extend_vocab} words to add to the vocabulary")
        tokenizer, self.extension = extend(tokenizer, train, cfg.extend_vocab, cfg.min_count)
        if (short := self.extension.shortfall(cfg.min_count)) is not None:
            self.emit("warning", message=short)
        if self.extension.fallback:
            self.emit("warning", message="this tokenizer's family has no native way to add words: they are "
                      "added tokens")
        self.emit("status", message=self.extension.summary())
        if self.record is not None:
            self.record.update_config(vocab_extension=self.extension.to_dict())
        return tokenizer

    def _tokenize_progress(self, done: int, total: int) -> None:
        self.emit("tokenize", done=done, total=total)
        now = time.monotonic()
        if now - self._tokenize_written >= TOKENIZE_STATE_S or (total and done >= total):
            self._tokenize_written = now
            self.store.update_state(tokenize={"done": done, "total": total})

    def _resolved(self, name: str, plan_key: str) -> int:
        """A device-dependent setting left blank: a resumed run keeps what it resolved to when it started
        (its batch and test set must not change with the device it resumes on)."""
        recorded = self.prior.plan if self.prior is not None else None
        if getattr(self.config, name) is None and recorded is not None:
            return int(getattr(recorded, plan_key))
        return int(self.config.on_device(name, self.device))

    def _plan(self, n_train: int, n_test: int) -> Plan:
        cfg = self.config
        procs = self.accelerator.num_processes
        batch = self._resolved("batch_size", "batch_size")
        per_step = batch * cfg.gradient_accumulation * procs
        notes = []
        if per_step > n_train:
            notes.append(f"only {n_train} training chunks: fewer than one full batch of {per_step}")
        steps, steps_per_epoch = cfg.steps(n_train, batch, procs)
        if cfg.warmup_steps > steps:
            notes.append(f"warmup of {cfg.warmup_steps} steps is longer than the run's {steps}: the learning "
                         f"rate never reaches its peak (at most {steps / cfg.warmup_steps:.0%} of it)")
        logging = cfg.logging_steps or max(1, steps // 1000)
        save = cfg.save_steps or max(1, min(500, steps))
        plan = Plan(self.device, self.precision, batch, steps, steps_per_epoch, n_train, n_test, logging,
                    save, cfg.eval_steps, procs, notes, early_logs=cfg.logging_steps is None)
        self.plan = plan
        return plan

    def _start_trackers(self) -> None:
        """The tracker's run: named after the run, its files (TensorBoard's events) in the run's folder
        (`<run>/mlm-tui/`), the settings as its configuration. Only the main process tracks."""
        acc, run = self.accelerator, self.record
        if not acc.log_with or run is None:
            return
        acc.project_configuration.logging_dir = str(run.dir)
        settings = {k: v for k, v in asdict(self.config).items() if v is not None}
        names = {"wandb": {"name": run.run_id}, "trackio": {"name": run.run_id},
                 "mlflow": {"run_name": run.run_id, "logging_dir": str(run.dir)}}
        if self.config.report_to == "mlflow" and "MLFLOW_TRACKING_URI" not in os.environ:
            # MLflow's default store is ./mlflow.db in the current folder: the run's folder keeps it
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{run.dir / 'mlflow.db'}"
            self._tracker_env = "MLFLOW_TRACKING_URI"
        try:
            acc.init_trackers("mlm-tui", config=settings, init_kwargs=names)
        except Exception as exc:  # a tracker that fails to start would also fail to finish: drop it
            acc.trackers.clear()
            raise _broken_tracker(self.config.report_to, exc) from None

    def _record_start(self, plan: Plan) -> None:
        self._start_trackers()
        store = self.store
        if self.record is not None:
            store.update_config(plan=asdict(plan))
        store.update_state(status="running", total_steps=plan.steps, plan=asdict(plan), tokenize=None)

    def _build(self, source: str, tokenizer: Any, test_chunks: np.ndarray, train_chunks: np.ndarray,
               plan: Plan) -> _Parts:
        """The model, optimizer and scheduler, prepared by Accelerate."""
        import torch
        from transformers import get_scheduler

        from mlm_tui.heads import MaskedOnlyMLM, adamw
        from mlm_tui.lean import for_cpu_training
        from mlm_tui.masking import TokenTables
        from mlm_tui.rundata import fixed_evalset

        cfg, acc = self.config, self.accelerator
        rng = torch.get_rng_state()  # as the load finds it: a load again after a range test draws the same
        model = self._load_model(source)
        tables = TokenTables.from_tokenizer(tokenizer)
        evalset = fixed_evalset(test_chunks, tables, cfg)
        rate, tested = self._peak_rate(model, tables, train_chunks, plan)
        if tested:  # the range test trained the model: the run starts from the weights as loaded
            del model
            with torch.random.fork_rng(devices=[]):  # weights a load initialises come out as they did
                torch.set_rng_state(rng)
                model = self._load_model(source)
        for_cpu_training(model, plan.device, acc.num_processes)  # keeping less for the backward pass
        optimizer = adamw(model, cfg.weight_decay, rate, plan.device)
        scheduler = get_scheduler("linear", optimizer, num_warmup_steps=cfg.warmup_steps,
                                  num_training_steps=plan.steps)
        wrapper, optimizer, scheduler = acc.prepare(MaskedOnlyMLM(model), optimizer, scheduler)
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)
        # Cancelling inside an evaluation is for one process only; several stop together between steps.
        eval_cancel = self.stop_requested if acc.num_processes == 1 else None
        return _Parts(model, wrapper, optimizer, scheduler, tokenizer, tables, evalset, train_chunks,
                      autocast, eval_cancel)

    def _load_model(self, source: str) -> Any:
        from mlm_tui.models import load_weights

        self.emit("status", message=f"loading model {self.config.model}")
        model = load_weights(source, allow_pickle=self.config.allow_pickle)
        if self.extension is not None:  # issue 24: the new tokens' rows, from their pieces'
            from mlm_tui.vocab_extend import extend_model

            extend_model(model, self.extension)
        if self.config.freeze_embeddings:
            for p in model.base_model.embeddings.parameters():
                p.requires_grad_(False)
        return model

    # -- the learning rate (`auto`: see lr_find) -------------------------------------------------------
    def _peak_rate(self, model: Any, tables: Any, train_chunks: np.ndarray, plan: Plan) -> tuple[float, bool]:
        """The rate given; for `auto` (the default), the one chosen when the run started (a resumed run
        keeps it), else chosen now: by the range test on the main process's batches, sent to every
        process, or for a run too short for a test, by the model's size (see lr_find). With it, whether the
        range test trained `model` (this process's, on the main one)."""
        rate = self.config.learning_rate
        if rate != "auto":
            self.rate_reason = "given"
            return float(rate), False
        recorded = self.resume_run.config().get("lr_find") if self.resume_run is not None else None
        if isinstance(recorded, dict) and isinstance(recorded.get("suggested"), int | float):
            from mlm_tui.pullback import explained

            self.rate_reason = explained(recorded)
            self.emit("status", message=f"learning rate {recorded['suggested']:.2e}, chosen when the run "
                      f"started: {recorded.get('reason')}")
            return float(recorded["suggested"]), False
        from mlm_tui.lr_find import rule_rate, too_short, write_curve

        tested = too_short(plan.steps) is None and self.is_main
        if too_short(plan.steps) is not None:
            test = rule_rate(model, plan.steps)
            self.emit("status", message=f"learning rate {test.suggested:.2e} (auto): {test.reason}")
        else:
            test = self._range_test(model, tables, train_chunks, plan) if self.is_main else None
            if self.accelerator.num_processes > 1:
                from accelerate.utils import broadcast_object_list

                test = broadcast_object_list([test])[0]
        assert test is not None
        self.rate_reason = f"auto: {test.reason}"
        if self.record is not None:
            if test.lrs:
                write_curve(self.record.dir, test)
            self.record.update_config(lr_find=test.to_dict())
        return test.suggested, tested

    def _range_test(self, model: Any, tables: Any, train_chunks: np.ndarray, plan: Plan) -> RangeTest:
        """The range test on the run's first batches as process 0 sees them (epoch 0's order, wrapping
        around a small corpus), the first `rows_for` rows of each micro-batch a step."""
        import torch

        from mlm_tui.lr_find import LR_MAX, LR_MIN, range_test, rows_for, steps_for
        from mlm_tui.masking import generator_for

        cfg = self.config
        steps = steps_for(plan.steps)
        order = torch.randperm(len(train_chunks), generator=generator_for(cfg.seed, -1))  # as `_step` draws
        per_micro, rows = plan.batch_size * plan.processes, rows_for(plan.batch_size)

        def batches(k: int) -> torch.Tensor:
            mine = order[torch.arange(k * per_micro, (k + 1) * per_micro) % len(order)][:: plan.processes]
            return batch_rows(train_chunks, mine[:rows])

        def on_point(k: int, lr: float, loss: float) -> None:
            self.emit("lr_find", step=k + 1, steps=steps, lr=lr, loss=loss)

        self.emit("status", message=f"learning-rate range test: {steps} steps from {LR_MIN:g} to {LR_MAX:g} "
                  f"on {rows} of the {plan.batch_size} rows of each of the run's first batches (the run then "
                  "starts from the model as loaded)")
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)
        test = range_test(model, batches, tables, steps=steps, seed=cfg.seed,
                          mlm_probability=cfg.mlm_probability, whole_word=cfg.whole_word_mask,
                          weight_decay=cfg.weight_decay, device=self.accelerator.device, autocast=autocast,
                          on_point=on_point, should_stop=self.stop_requested if plan.processes == 1 else None)
        if not math.isfinite(test.losses[0]):  # the first loss comes before any update: no rate is to blame
            raise MlmError(nan_before_training(cfg.model, plan.precision))
        self.emit("status", message=f"learning rate {test.suggested:.2e} (auto): {test.reason}")
        return test

    def find_rate(self) -> RangeTest:
        """The range test alone, as `mlm-tui lr-find` runs it: no run is created and nothing is kept."""
        from mlm_tui.lr_find import MIN_STEPS, SHARE, too_short
        from mlm_tui.masking import TokenTables

        self.start()
        source, tokenizer = self.open_model()
        tokenizer = self._extend_vocab(tokenizer)
        train_chunks, test_chunks = self._data(tokenizer)
        plan = self._plan(len(train_chunks), len(test_chunks))
        self.emit("plan", **{**asdict(plan), "save_steps": None, "eval_steps": None})  # nothing is saved
        if too_short(plan.steps) is not None:  # said before the model loads
            shortest = f"{MIN_STEPS / SHARE:.0f}"
            if self.config.max_steps is not None:
                raise FieldError("max_steps", f"{{field}} {plan.steps}: a range test takes a tenth of a run "
                                 f"of at least {shortest} steps; give {shortest} or more")
            per_step = plan.batch_size * plan.processes * self.config.gradient_accumulation
            raise FieldError("max_steps", f"the corpus is too small for a range test at these settings: "
                             f"{plan.train_chunks} training chunks in steps of {per_step} make {plan.steps} "
                             f"steps, and the test takes a tenth of a run of at least {shortest}; give "
                             f"{{field}} {shortest}, more epochs, or a smaller batch size")
        model = self._load_model(source)
        return self._range_test(model, TokenTables.from_tokenizer(tokenizer), train_chunks, plan)


class _Steps:
    """The optimizer steps of one run, from its checkpoint (or step 0) to its final model, and the
    perplexities measured around them: before, every `eval_steps`, after, and on general text. Made by
    `FineTune.train` once the model, the data and the plan are ready; it reports as the trainer does."""

    def __init__(self, trainer: FineTune) -> None:
        self.config, self.accelerator, self.prior = trainer.config, trainer.accelerator, trainer.prior
        self.emit, self.store, self.record = trainer.emit, trainer.store, trainer.record
        self.stop_requested, self.rate_reason = trainer.stop_requested, trainer.rate_reason
        self.resume_run, self.resume_checkpoint = trainer.resume_run, trainer.resume_checkpoint
        self.general: dict[str, float | None] = {"before": None, "after": None}  # perplexity on general text
        self._general_set: Any = trainer.general_set  # made before the run existed (a new run), or None
        self.is_main, self.extension, self.source = trainer.is_main, trainer.extension, trainer.source
        self.bpc: dict[str, float | None] = {"before": None, "after": None}  # bits per character (`bpc`)
        self._bpc_texts: list[str] | None = None  # the test split's characters they measure, read once
        self._pulling = False  # whether an `auto` run may end with its weights pulled back (`pullback`)

    def run(self, parts: _Parts, plan: Plan) -> dict[str, Any]:
        from mlm_tui.rundata import general_name

        # an added token has no starting weights to go back to
        self._pulling = (self.config.learning_rate == "auto" and general_name(self.config) is not None
                         and self.extension is None)
        start_step = self._restore(parts, plan)
        ppl_before = self._measure_before(parts, plan)
        step, runtime = self._loop(parts, plan, start_step)
        return self._finish(parts, plan, step, runtime, ppl_before)

    def _restore(self, parts: _Parts, plan: Plan) -> int:
        """The step to start from: the checkpoint's, with its optimizer, scheduler and RNG states."""
        from mlm_tui import checkpoints

        if self.resume_run is not None:
            start_step = 0
            if self.resume_checkpoint is not None:
                start_step, rng = checkpoints.restore(self.resume_checkpoint, parts.optimizer,
                                                      parts.scheduler, self.accelerator.process_index)
                if start_step > plan.steps:  # epochs that end before it (max steps were refused earlier)
                    raise FieldError("epochs", f"{{field}} {self.config.epochs} end at step {plan.steps}, "
                                     f"before step {start_step}, where the run resumes")
                if rng is not None:
                    checkpoints.set_rng_state(rng)
                else:
                    self.emit("status", message="the checkpoint holds no random state for this process: "
                              "dropout draws differ from an uninterrupted run")
                self.emit("status", message=f"resumed at step {start_step} of {plan.steps}")
            # Steps logged after the checkpoint (a run killed between two saves) are trained again.
            self.store.truncate_metrics(after_step=start_step)
            self.store.update_state(step=start_step)
            return start_step
        return 0

    def _measure_before(self, parts: _Parts, plan: Plan) -> float:
        ppl_before = self.prior.perplexity_before if self.prior is not None else None
        if self.prior is not None:
            self.general["before"] = self.prior.general_perplexity_before
        if ppl_before is None:
            self.emit("status", message=f"measuring perplexity before training on {len(parts.evalset)} test "
                      "chunks")
            ppl_before = self._perplexity(parts, plan, parts.eval_cancel)
            if not math.isfinite(ppl_before):
                raise MlmError(nan_before_training(self.config.model, plan.precision))
            self.store.update_state(perplexity_before=ppl_before)
            self.emit("eval", step=0, perplexity=ppl_before)
            self._append_metrics({"step": 0, "eval_perplexity": ppl_before})
            self._measure_general(parts, plan, "before")
        self._measure_bpc(parts, "before", parts.eval_cancel)
        self.accelerator.wait_for_everyone()  # the other processes wait while the main one measures
        return ppl_before

    def _measure_general(self, parts: _Parts, plan: Plan, when: str) -> None:
        """What the run cost: perplexity on general text (see `rundata.general_evalset`), timed in the log."""
        from mlm_tui.rundata import general_name

        name = general_name(self.config)
        if name is None:
            return
        t0 = time.perf_counter()
        ppl = self._general_perplexity(parts, plan, parts.eval_cancel if when == "before" else None)
        self.general[when] = ppl
        self.store.update_state(**{f"general_perplexity_{when}": ppl})
        self.emit("status", message=f"general perplexity {ppl:.2f} {when} training, on "
                  f"{len(self._general_set)} chunks of {name} ({time.perf_counter() - t0:.1f} s)")

    def _general_perplexity(self, parts: _Parts, plan: Plan, cancel: Callable[[], bool] | None) -> float:
        from mlm_tui.rundata import general_evalset

        if self._general_set is None:
            self._general_set = general_evalset(self.config, parts.tokenizer, parts.tables)
        return self._perplexity(parts, plan, cancel, self._general_set)

    # -- bits per character (`bpc`): what compares a run that extended its vocabulary with one that did not
    def _measure_bpc(self, parts: _Parts, when: str, cancel: Callable[[], bool] | None) -> None:
        """Bits per character of the test split's first `bpc_chars` characters, on the main process only
        (the others never record), timed in the log: before training the base model with its own
        tokenizer (a resumed run keeps the figure it recorded), after it the run's model with the run's.
        A cancel before training cancels the run; after it, only the measurement (the model is saved)."""
        from mlm_tui.bpc import WINDOW, pll_bits
        from mlm_tui.chunking import model_max_length

        if not self.is_main:
            return
        if when == "before" and self.prior is not None and self.prior.bpc_before is not None:
            self.bpc["before"] = self.prior.bpc_before
            return
        texts = self._measured_texts()
        if not texts:
            return
        t0 = time.perf_counter()
        model, tokenizer, whose = (parts.model, parts.tokenizer, "") if when == "after" else self._base(parts)
        try:
            window = min(WINDOW, model_max_length(tokenizer) or WINDOW)
            result = pll_bits(model, tokenizer, texts, window=window, device=self.accelerator.device,
                              cancelled=cancel)
        except RunCancelled:
            if when == "before":
                raise RunCancelled("cancelled while measuring bits per character") from None
            self.emit("status", message="bits per character after training: cancelled, not recorded")
            return
        self.bpc[when] = result.bpc
        self.store.update_state(**{f"bpc_{when}": result.bpc}, bpc_characters=result.characters)
        self.emit("status", message=f"bits per character {result.bpc:.4f} {when} training{whose}, on "
                  f"{result.characters:,} characters of the test split ({time.perf_counter() - t0:.1f} s)")

    def _measured_texts(self) -> list[str]:
        """The characters bits per character measure, read once for both measurements: none with
        `bpc_chars` 0, nor for a hub dataset (said in the log)."""
        if self._bpc_texts is None:
            from mlm_tui.bpc import HUB_REFUSED, local_corpus, measured_texts
            from mlm_tui.corpus import HubOptions

            cfg = self.config
            self._bpc_texts = []
            if cfg.bpc_chars and not local_corpus(cfg.corpus, HubOptions.of(cfg)):
                self.emit("status", message=f"bits per character not measured: {HUB_REFUSED}")
            elif cfg.bpc_chars:
                self._bpc_texts = measured_texts(cfg.corpus, cfg.text_field, cfg.seed, cfg.bpc_chars)
        return self._bpc_texts

    def _base(self, parts: _Parts) -> tuple[Any, Any, str]:
        """The base model with its own tokenizer, and how the log names it: the run's model before its first
        step, unless the vocabulary was extended or the run resumed from a checkpoint; then loaded again
        (a resumed run's from where it started, as `runs learned` loads it), for this measurement only."""
        if self.extension is None and self.resume_checkpoint is None:
            return parts.model, parts.tokenizer, ""
        import torch

        from mlm_tui.models import load_tokenizer, load_weights, resolve

        self.emit("status", message=f"loading the base model {self.config.model} to measure it with its own "
                  "tokenizer")
        ref = self._start_ref()
        with torch.random.fork_rng(devices=[]):  # a load may draw weights: the run's draws stay its own
            model = load_weights(resolve(ref).source, allow_pickle=self.config.allow_pickle)
        tokenizer = load_tokenizer(ref, allow_pickle=self.config.allow_pickle)
        return model.to(self.accelerator.device), tokenizer, " (the base model, its own tokenizer)"

    def _start_ref(self) -> str:
        """Where the run's starting weights load from: its model, or for a resumed run the one it started
        from (not the checkpoint it resumed from)."""
        from mlm_tui.runstore import base_ref

        return base_ref(self.prior) if self.resume_checkpoint is not None and self.prior else self.source

    def _pull_back(self, parts: _Parts, plan: Plan) -> None:
        """An `auto` run that forgot more than the budget (its general perplexity after training, measured)
        keeps weights part of the way back to its start (see `pullback`): the share found on the main
        process, applied on all; its general perplexity after training is then what the search read at
        that share, on the same chunks."""
        import torch

        from mlm_tui.models import load_weights, resolve
        from mlm_tui.pullback import BUDGET, Pullback, explained, interpolate, search

        before, after = self.general["before"], self.general["after"]
        if not self._pulling:
            return
        model = self.accelerator.unwrap_model(parts.wrapper).model
        start: dict[str, Any] | None = None
        trained: dict[str, Any] | None = None

        def load() -> tuple[dict[str, Any], dict[str, Any]]:
            with torch.random.fork_rng(devices=[]):  # a load may draw weights: the run's draws stay its own
                first = load_weights(resolve(self._start_ref()).source, allow_pickle=self.config.allow_pickle)
            return first.state_dict(), {name: tensor.detach().to("cpu", torch.float32, copy=True)
                                        for name, tensor in model.state_dict().items()}

        pullback = None
        if self.is_main and before is not None and after is not None:
            trained_rise = after / before - 1
            if trained_rise > BUDGET:
                self.emit("status", message=f"general English rose {trained_rise:.1%} (over {BUDGET:.0%}): "
                          "finding how far back to its start the run's weights must go")
                start, trained = load()

                def rise_at(alpha: float) -> float:
                    interpolate(model, start, trained, alpha)
                    return self._general_perplexity(parts, plan, None) / before - 1

                alpha, rise = search(rise_at, trained_rise, BUDGET)
                pullback = Pullback(alpha, rise, trained_rise)
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            pullback = broadcast_object_list([pullback])[0]
        found = self.record.config().get("lr_find") if self.record is not None else None
        found = dict(found) if isinstance(found, dict) else {}
        if pullback is None:
            if self.record is not None and found.pop("pullback", None) is not None:  # an earlier try's
                self.record.update_config(lr_find=found)
                self.rate_reason = explained(found)
            return
        if start is None or trained is None:
            start, trained = load()
        interpolate(model, start, trained, pullback.alpha)
        if self.record is not None:
            found["pullback"] = pullback.to_dict()
            self.record.update_config(lr_find=found)
            self.rate_reason = explained(found)
        # what the search read at that share, on the same chunks: the run's general perplexity after it
        if before is not None:
            self.general["after"] = before * (1 + pullback.rise)
            self.store.update_state(general_perplexity_after=self.general["after"])
        self.emit("status", message=pullback.describe())

    def _perplexity(self, parts: _Parts, plan: Plan, cancel: Callable[[], bool] | None,
                    evalset: Any = None) -> float:
        """Perplexity on the run's test set, or on another `evalset` (the general text)."""
        from mlm_tui import heap
        from mlm_tui.evaluate import perplexity

        evalset = parts.evalset if evalset is None else evalset
        # On the CPU, batches of the training's size: a larger one is no faster there, and one of the same
        # size reuses the memory the steps freed (twice the batch raised the peak of a run by 100-200 MB,
        # README "Speed"). A GPU takes twice the batch, which the steps' memory leaves room for.
        batch = plan.batch_size * (2 if plan.device == "cuda" else 1)
        heap.trim()  # what the steps freed, given back: the evaluation takes blocks of other sizes
        try:
            return perplexity(parts.wrapper, evalset, batch, self.accelerator.device, parts.autocast,
                              cancel).perplexity
        finally:
            heap.trim()  # and what the evaluation freed, before the steps take their own sizes again

    def _append_metrics(self, row: dict[str, Any]) -> None:
        """A metrics.jsonl row, and the same numbers to the tracker (`--report-to`), if any."""
        self.store.append_metrics(row)
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if k not in ("step", "epoch", "elapsed")},
                                 step=row["step"])

    def _tokens_per_step(self, plan: Plan) -> int:
        return plan.batch_size * plan.processes * self.config.gradient_accumulation * self.config.chunk_size

    def _stop_everywhere(self) -> bool:
        """A stop request seen by any process stops them all at the same step (a Ctrl+C or a cancel file
        reaches the main process only, and a process that left the loop alone would hang the others)."""
        stop = self.stop_requested()
        if self.accelerator.num_processes > 1:
            import torch

            flag = torch.tensor([float(stop)], device=self.accelerator.device)
            stop = bool(self.accelerator.reduce(flag, "sum").item() > 0)
        return stop

    def _loop(self, parts: _Parts, plan: Plan, step: int) -> tuple[int, float]:
        """Train from `step` to the end of the plan; return the last step and the training time."""
        import torch

        tokens_per_step = self._tokens_per_step(plan)
        runtime = (self.prior.train_runtime or 0.0) if self.prior is not None else 0.0
        self.best = self.prior.best_perplexity if self.prior is not None else None
        self._loss_sum = torch.zeros((), device=self.accelerator.device)
        self._loss_n, self._tokens_since, self._last_log = 0, 0, time.perf_counter()
        self._orders: dict[int, torch.Tensor] = {}
        parts.wrapper.train()
        self.emit("status", message=f"training {plan.steps} steps of {tokens_per_step} tokens on "
                  f"{plan.device} ({plan.precision})")
        t0 = time.perf_counter()
        while step < plan.steps:
            if self._stop_everywhere():
                runtime += time.perf_counter() - t0
                self._save(parts, step, runtime)
                raise RunCancelled(f"cancelled at step {step}")
            self._step(parts, plan, step)
            step += 1
            self._tokens_since += tokens_per_step
            if plan.logs_at(step):
                self._log(parts, plan, step, runtime + time.perf_counter() - t0)
            evaluate_now = bool(plan.eval_steps) and step % plan.eval_steps == 0 and step < plan.steps
            save_now = step % plan.save_steps == 0 and step < plan.steps
            if evaluate_now or save_now:
                runtime += time.perf_counter() - t0
                is_best = self._evaluate(parts, plan, step) if evaluate_now else False
                self._save(parts, step, runtime, best=is_best)
                t0 = time.perf_counter()
        return step, runtime + time.perf_counter() - t0

    def _step(self, parts: _Parts, plan: Plan, step: int) -> None:
        """One optimizer step over `gradient_accumulation` micro-batches. The rows and the masks of each
        micro-batch depend only on the seed and its index, so a resumed run sees the same data."""
        import torch

        from mlm_tui.masking import generator_for, mask_batch
        from mlm_tui.recompute import kept_cheaply

        cfg, acc = self.config, self.accelerator
        per_micro = plan.batch_size * plan.processes
        micro_per_epoch = plan.steps_per_epoch * cfg.gradient_accumulation
        for micro in range(cfg.gradient_accumulation):
            index = step * cfg.gradient_accumulation + micro
            epoch, pos = divmod(index, micro_per_epoch)
            if epoch not in self._orders:
                self._orders = {epoch: torch.randperm(len(parts.data), generator=generator_for(cfg.seed,
                                                                                             -1 - epoch))}
            rows = self._orders[epoch][pos * per_micro : (pos + 1) * per_micro]
            rows = rows[acc.process_index :: plan.processes]
            inputs, labels = mask_batch(batch_rows(parts.data, rows), parts.tables, cfg.mlm_probability,
                                        cfg.whole_word_mask, generator_for(cfg.seed, index))
            inputs = inputs.to(acc.device, non_blocking=True)
            labels = labels.to(acc.device, non_blocking=True)
            with acc.accumulate(parts.wrapper):
                with kept_cheaply():
                    loss, _ = parts.wrapper(inputs, torch.ones_like(inputs), labels)
                acc.backward(loss)
                parts.optimizer.step()
                if micro == cfg.gradient_accumulation - 1:
                    parts.scheduler.step()
                parts.optimizer.zero_grad(set_to_none=True)
            self._loss_sum += loss.detach()
            self._loss_n += 1

    def _log(self, parts: _Parts, plan: Plan, step: int, elapsed: float) -> None:
        now = time.perf_counter()
        mean_loss = float(self._loss_sum) / max(self._loss_n, 1)
        if not math.isfinite(mean_loss):
            raise MlmError(f"the loss became {mean_loss} at step {step}: lower the learning rate")
        tps = self._tokens_since / max(now - self._last_log, 1e-9)
        since = max(self._loss_n // self.config.gradient_accumulation, 1)  # steps since the last log
        eta = (plan.steps - step) * (now - self._last_log) / since
        row = {"step": step, "loss": round(mean_loss, 5), "learning_rate": parts.scheduler.get_last_lr()[0],
               "tokens_per_s": round(tps, 1), "epoch": round(step / plan.steps_per_epoch, 4),
               "elapsed": round(elapsed, 2)}
        self._append_metrics(row)
        self.emit("step", total=plan.steps, eta=eta, **row)
        self.store.update_state(step=step, loss=mean_loss, tokens_per_s=tps, eta=eta, train_runtime=elapsed)
        self._loss_sum.zero_()
        self._loss_n, self._tokens_since, self._last_log = 0, 0, now

    def _evaluate(self, parts: _Parts, plan: Plan, step: int) -> bool:
        """Measure perplexity mid-run; True when it is the best so far (its checkpoint is kept)."""

        ppl = self._perplexity(parts, plan, parts.eval_cancel)
        parts.wrapper.train()
        self._append_metrics({"step": step, "eval_perplexity": ppl})
        self.emit("eval", step=step, perplexity=ppl)
        is_best = self.best is None or ppl < self.best
        self.best = min(ppl, self.best) if self.best is not None else ppl
        self.store.update_state(best_perplexity=self.best)
        return is_best

    def _save(self, parts: _Parts, step: int, runtime: float, best: bool = False) -> None:
        """Checkpoint on the main process, with every process's RNG state; the others wait for it so none
        runs ahead into a stop or exit."""
        from mlm_tui import checkpoints

        rng = [checkpoints.rng_state()]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        run = self.record
        if run is not None:
            try:
                checkpoints.save(run, parts.model, parts.tokenizer, parts.optimizer, parts.scheduler, step,
                                 rng, best=best, keep=self.config.keep_checkpoints)
            except OSError as exc:
                raise MlmError(f"could not write the checkpoint at step {step} ({exc.strerror or exc}); "
                               "earlier checkpoints are intact") from None
            run.update_state(step=step, train_runtime=runtime, checkpoint_step=step)
            self.emit("checkpoint", step=step)
        self.accelerator.wait_for_everyone()

    def _finish(self, parts: _Parts, plan: Plan, step: int, runtime: float,
                ppl_before: float) -> dict[str, Any]:
        """Measure perplexity after training and write the final model; the results, also in the run's
        state (which `lifecycle` then marks completed)."""
        from mlm_tui import checkpoints

        self._measure_general(parts, plan, "after")
        self._pull_back(parts, plan)
        self.emit("status", message="measuring perplexity after training")
        ppl_after = self._perplexity(parts, plan, None)
        self._append_metrics({"step": step, "eval_perplexity": ppl_after})
        self.emit("eval", step=step, perplexity=ppl_after)
        self._measure_bpc(parts, "after", self.stop_requested)
        run = self.record
        if run is None:
            return {}
        self.emit("status", message="saving the final model")
        try:
            checkpoints.save_final(run, self.accelerator.unwrap_model(parts.wrapper).model, parts.tokenizer)
        except OSError as exc:
            raise MlmError(f"could not write the final model ({exc.strerror or exc}); the last checkpoint "
                           f"is intact: resume with mlm-tui train --resume {run.run_id}") from None
        tokens = step * self._tokens_per_step(plan)
        run.update_state(perplexity_after=ppl_after, train_runtime=runtime, train_tokens=tokens, step=step,
                         eta=0)
        return {
            "run_id": run.run_id, "model": self.config.model,
            "perplexity_before": ppl_before, "perplexity_after": ppl_after,
            "general_perplexity_before": self.general["before"],
            "general_perplexity_after": self.general["after"],
            "bpc_before": self.bpc["before"], "bpc_after": self.bpc["after"],
            "train_runtime": round(runtime, 3), "train_tokens": tokens, "steps": step,
            "learning_rate": parts.optimizer.param_groups[0]["initial_lr"],
            "learning_rate_reason": self.rate_reason, "model_path": str(run.model_path),
        }


def batch_rows(chunks: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
    """The chunks at `rows`, copied out: the chunks stay as they came, never copied whole (they may be a
    read-only memory map of the token cache, which torch cannot wrap, as large as the corpus)."""
    import torch

    return torch.from_numpy(chunks[rows.numpy()])


def nan_before_training(model: str, precision: str) -> str:
    """What a model whose loss is NaN before any update (finite weights: `models.load_weights` refuses the
    others) is told; no learning rate helps it."""
    fix = "; try --precision fp32" if precision != "fp32" else ""
    return (f"the model {model} gives a NaN loss before any training, at {precision}: its weights overflow "
            f"the loss{fix}")


TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",),
                   "wandb": ("wandb",), "mlflow": ("mlflow",)}


def _trackers(name: str) -> list[str] | None:
    """Accelerate's `log_with` for `--report-to`; a tracker that is not installed is refused in one line
    naming the extra that installs it (Accelerate itself would only warn, and log nowhere)."""
    if name == "none":
        return None
    from importlib import import_module
    from importlib.util import find_spec

    found = [module for module in TRACKER_MODULES[name] if find_spec(module)]
    if not found:
        raise FieldError("report_to", f"{{field}} {name}: {name} is not installed "
                         f'(pip install "mlm-tui[{name}]")')
    failure: Exception | None = None
    for module in found:  # any one that imports will do (TensorBoard's writer or tensorboardX)
        try:
            import_module(module)
            return [name]
        except Exception as exc:  # a broken install raises anything: ImportError, AttributeError...
            failure = failure or exc
    assert failure is not None
    raise _broken_tracker(name, failure)


def _broken_tracker(name: str, exc: BaseException) -> FieldError:
    from mlm_tui.errors import first_line

    return FieldError("report_to", f"{{field}} {name}: the tracker does not start ({type(exc).__name__}: "
                      f"{first_line(exc)[:120]}); reinstall it: pip install --force-reinstall "
                      f'"mlm-tui[{name}]"')
