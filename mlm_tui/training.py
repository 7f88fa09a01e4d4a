"""Fine-tuning: the course's masked-LM recipe as one engine function with progress and a cancel signal.

Built on Accelerate, so one GPU, several (`accelerate launch`) or the CPU run the same loop, with mixed
precision where the device has it. What makes it faster than the Trainer recipe: chunks are a
pre-tokenized int32 tensor (no per-step Python collation), masks are drawn vectorised per batch, and the
vocabulary head runs on masked rows only (see `heads.MaskedOnlyMLM`); the loss is the same.

Every run lives in the run store (`runstore`), which is how the CLI, the workbench and other processes
follow it, and how an interrupted run resumes from its last checkpoint with the same data order and masks.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlm_tui.errors import MlmError, RunCancelled, UsageError
from mlm_tui.runstore import Run

if TYPE_CHECKING:
    import numpy as np

Event = dict[str, Any]


@dataclass
class TrainConfig:
    corpus: str
    model: str = "starter"
    chunk_size: int = 128
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    batch_size: int | None = None  # None: suits the device (printed)
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    epochs: float = 3.0
    max_steps: int | None = None
    train_size: int | None = None  # chunks
    test_size: int | None = None  # chunks; None: suits the device
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    gradient_accumulation: int = 1
    eval_steps: int | None = None
    save_steps: int | None = None
    logging_steps: int | None = None
    text_field: str = "text"
    freeze_embeddings: bool = False
    allow_pickle: bool = False

    def validate(self) -> None:
        positive = {"batch_size": self.batch_size, "max_steps": self.max_steps, "train_size": self.train_size,
                    "test_size": self.test_size, "eval_steps": self.eval_steps, "save_steps": self.save_steps,
                    "logging_steps": self.logging_steps, "gradient_accumulation": self.gradient_accumulation}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive whole number (got {value})")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise UsageError(f"--learning-rate must be positive (got {self.learning_rate})")
        if not (self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be zero or more (got {self.weight_decay})")
        if not (0 < self.mlm_probability < 1):
            raise UsageError(f"--mlm-probability must be between 0 and 1 (got {self.mlm_probability})")
        if not (self.epochs > 0):
            raise UsageError(f"--epochs must be positive (got {self.epochs})")
        if self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must be zero or more (got {self.warmup_steps})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device must be auto, cpu or cuda (got {self.device})")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UsageError(f"--precision must be auto, fp32, bf16 or fp16 (got {self.precision})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Plan:
    """What the defaults resolved to on this machine; printed before training so nothing is hidden."""

    device: str
    precision: str
    batch_size: int
    steps: int
    steps_per_epoch: int
    train_chunks: int
    test_chunks: int
    logging_steps: int
    save_steps: int
    eval_steps: int | None
    processes: int = 1
    notes: list[str] = field(default_factory=list)


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
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
        raise UsageError("--precision fp16 needs CUDA; on the CPU use bf16 or fp32")
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


class Trainer:
    """One training run, from data to final model. `run()` returns the JSON-ready result (an empty dict
    on the secondary processes of a multi-process launch, which leave reporting to the main one)."""

    def __init__(self, config: TrainConfig, *, on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, resume: Run | None = None) -> None:
        config.validate()
        self.config = config
        self.on_event = on_event or (lambda event: None)
        self._should_stop = should_stop or (lambda: False)
        self.resume_run = resume
        self.resume_checkpoint: Path | None = None
        self.run_record: Run | None = resume
        self.is_main = True

    # -- events ---------------------------------------------------------------------------------------
    def emit(self, kind: str, **data: Any) -> None:
        """Report progress; only the main process does, so `accelerate launch` prints each line once."""
        if not self.is_main:
            return
        self.on_event({"event": kind, **data})
        if self.run_record is not None and kind in ("status", "warning"):
            self.run_record.log(data.get("message", ""))

    def stop_requested(self) -> bool:
        if self._should_stop():
            return True
        return self.run_record is not None and (self.run_record.dir / "cancel").exists()

    # -- setup ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        cfg = self.config
        device = pick_device(cfg.device)
        precision = pick_precision(cfg.precision, device)
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
        self.accelerator = Accelerator(mixed_precision=mixed, cpu=device == "cpu",
                                       gradient_accumulation_steps=cfg.gradient_accumulation)
        self.is_main = self.accelerator.is_main_process
        if self.resume_run is not None and self.is_main:
            status = self.resume_run.status()
            if status in ("running", "completed"):
                raise UsageError(f"run {self.resume_run.run_id} is {status}: only interrupted, cancelled or "
                                 "failed runs resume")
            (self.resume_run.dir / "cancel").unlink(missing_ok=True)  # the request that stopped it is done
        # Read before anyone writes, so that every process takes the same branches (skipping the "before"
        # evaluation on resume, say): a branch taken by one process only would hang DDP.
        prior = self.resume_run.state() if self.resume_run is not None else {}
        self.accelerator.wait_for_everyone()
        set_seed(cfg.seed)
        from mlm_tui.models import check_model_dir, load_tokenizer, resolve

        start_dir = self._start_dir()
        resolved = resolve(str(start_dir) if start_dir else cfg.model)
        if resolved.path is not None:
            check_model_dir(resolved.path, allow_pickle=cfg.allow_pickle)
        tokenizer = load_tokenizer(resolved.source)
        from mlm_tui.chunking import check_chunk_size

        check_chunk_size(cfg.chunk_size, tokenizer)
        train_chunks, test_chunks = self._data(tokenizer, device)
        from mlm_tui.evaluate import EvalSet
        from mlm_tui.masking import TokenTables

        # Masked once, before the run exists: a test set with no masked token is refused up front.
        self.tables = TokenTables.from_tokenizer(tokenizer)
        self.evalset = EvalSet.build(test_chunks, self.tables, cfg.mlm_probability,
                                     whole_word=cfg.whole_word_mask)
        plan = self._plan(device, precision, len(train_chunks), len(test_chunks))
        self.plan = plan
        self.emit("plan", **asdict(plan))
        if not self.is_main:
            self._train(_NoStore(), prior, resolved.source, tokenizer, train_chunks, test_chunks, plan)
            return {}
        if self.run_record is None:
            from mlm_tui import runstore

            self.run_record = runstore.create_run(self._config_record(resolved.source))
        run = self.run_record
        with run.hold_lock():
            run.update_state(status="running", pid=os.getpid(), host=os.uname().nodename,
                             total_steps=plan.steps, plan=asdict(plan), message=None)
            try:
                result = self._train(run, prior, resolved.source, tokenizer, train_chunks, test_chunks, plan)
            except RunCancelled as exc:
                msg = f"{exc}; resume with: mlm-tui train --resume {run.run_id}"
                run.update_state(status="cancelled", message=msg, finished=time.time())
                run.log(f"cancelled: {msg}")
                raise RunCancelled(msg) from None
            except torch.OutOfMemoryError:
                msg = (f"CUDA ran out of memory at batch size {plan.batch_size} x chunk {cfg.chunk_size}: "
                       f"lower --batch-size (try {max(1, plan.batch_size // 2)}) and raise "
                       "--gradient-accumulation to keep the effective batch, or lower --chunk-size")
                run.update_state(status="failed", message=msg, finished=time.time())
                run.log(msg)
                raise MlmError(msg) from None
            except BaseException as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
                run.update_state(status=status, message=msg, finished=time.time())
                run.log(f"{status}: {msg}")
                raise
        return result

    def _start_dir(self) -> Path | None:
        """Resuming starts from the run's latest checkpoint; a run stopped before its first checkpoint
        (while tokenizing or measuring the starting perplexity) starts over from its model at step 0."""
        if self.resume_run is None:
            return None
        from mlm_tui.checkpoints import latest_checkpoint

        self.resume_checkpoint = latest_checkpoint(self.resume_run)
        return self.resume_checkpoint

    def _config_record(self, model_source: str) -> dict[str, Any]:
        from importlib import metadata

        from mlm_tui import __version__
        from mlm_tui.corpus import fingerprint

        # Read from the installed metadata, not by importing: `datasets` costs a second to import and a
        # run on a local file never needs it (it may not even be installed on a GPU box).
        versions = {"mlm_tui": __version__}
        for name in ("torch", "transformers", "datasets", "accelerate"):
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        return {
            **asdict(self.config),
            "model_source": model_source,
            "corpus_fingerprint": fingerprint(self.config.corpus),
            "plan": asdict(self.plan),
            "versions": versions,
        }

    def _data(self, tokenizer: Any, device: str) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        from mlm_tui.chunking import tokenize_corpus

        cfg = self.config
        self.emit("status", message=f"tokenizing {cfg.corpus}")
        try:
            splits = tokenize_corpus(
                cfg.corpus, tokenizer, cfg.text_field, cancelled=self.stop_requested,
                progress=lambda done, total: self.emit("tokenize", done=done, total=total))
        except UsageError:
            if self.stop_requested():  # the tokenizer's own "cancelled" is a usage error: it is a cancel here
                raise RunCancelled("cancelled while tokenizing") from None
            raise
        self.emit("status", message=f"tokenized {sum(s.documents for s in splits.values())} documents")
        train = splits.get("train") or next(iter(splits.values()))
        test = splits.get("test") or splits.get("validation")
        if test is None or test is train:
            train, test = train.split_documents(0.1, cfg.seed)
            self.emit("status", message=f"held out {test.documents} of {train.documents + test.documents} "
                      "documents as the test split")
        train_chunks, test_chunks = train.chunks(cfg.chunk_size), test.chunks(cfg.chunk_size)
        if len(train_chunks) == 0:
            raise UsageError(f"the train split has {train.tokens} tokens: fewer than one chunk of "
                             f"{cfg.chunk_size}; lower --chunk-size or add text")
        if len(test_chunks) == 0:
            raise UsageError(f"the test split has {test.tokens} tokens: fewer than one chunk of "
                             f"{cfg.chunk_size}")
        rng = np.random.default_rng(cfg.seed)
        if cfg.train_size is not None and cfg.train_size < len(train_chunks):
            train_chunks = train_chunks[np.sort(rng.choice(len(train_chunks), cfg.train_size, replace=False))]
        test_size = cfg.test_size or (1000 if device == "cuda" else 200)
        if test_size < len(test_chunks):
            test_chunks = test_chunks[np.sort(rng.choice(len(test_chunks), test_size, replace=False))]
        return np.ascontiguousarray(train_chunks), np.ascontiguousarray(test_chunks)

    def _plan(self, device: str, precision: str, n_train: int, n_test: int) -> Plan:
        cfg = self.config
        procs = self.accelerator.num_processes
        batch = cfg.batch_size or (64 if device == "cuda" else 16)
        per_step = batch * cfg.gradient_accumulation * procs
        notes = []
        if per_step > n_train:
            notes.append(f"only {n_train} training chunks: fewer than one full batch of {per_step}")
        steps_per_epoch = max(1, n_train // per_step)
        steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
        logging = cfg.logging_steps or max(1, steps // 1000)
        save = cfg.save_steps or max(1, min(500, steps))
        return Plan(device, precision, batch, steps, steps_per_epoch, n_train, n_test, logging, save,
                    cfg.eval_steps, procs, notes)

    # -- the loop -------------------------------------------------------------------------------------
    def _stop_everywhere(self) -> bool:
        """A stop request seen by any process stops them all at the same step (a Ctrl+C or a cancel file
        reaches the main process only, and a process that left the loop alone would hang the others)."""
        stop = self.stop_requested()
        if self.accelerator.num_processes > 1:
            import torch

            flag = torch.tensor([float(stop)], device=self.accelerator.device)
            stop = bool(self.accelerator.reduce(flag, "sum").item() > 0)
        return stop

    def _train(self, run: Run | _NoStore, state: dict[str, Any], source: str, tokenizer: Any,
               train_chunks: np.ndarray, test_chunks: np.ndarray, plan: Plan) -> dict[str, Any]:
        import numpy as np
        import torch
        from transformers import get_scheduler

        from mlm_tui import checkpoints
        from mlm_tui.evaluate import perplexity
        from mlm_tui.heads import MaskedOnlyMLM
        from mlm_tui.masking import generator_for, mask_batch
        from mlm_tui.models import load_weights

        cfg, acc = self.config, self.accelerator
        # Cancelling inside an evaluation is for one process only; several stop together between steps.
        eval_cancel = self.stop_requested if acc.num_processes == 1 else None
        self.emit("status", message=f"loading model {cfg.model}")
        model = load_weights(source, allow_pickle=cfg.allow_pickle)
        if cfg.freeze_embeddings:
            for p in model.base_model.embeddings.parameters():
                p.requires_grad_(False)
        wrapper = MaskedOnlyMLM(model)
        tables, evalset = self.tables, self.evalset
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        fused = {"fused": True} if plan.device == "cuda" else {"foreach": True}
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, **fused)
        scheduler = get_scheduler("linear", optimizer, num_warmup_steps=cfg.warmup_steps,
                                  num_training_steps=plan.steps)
        wrapper, optimizer, scheduler = acc.prepare(wrapper, optimizer, scheduler)
        device = acc.device
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)

        start_step = 0
        if self.resume_checkpoint is not None:
            start_step = checkpoints.restore(self.resume_checkpoint, optimizer, scheduler)
            self.emit("status", message=f"resumed at step {start_step} of {plan.steps}")
        if self.resume_run is not None:
            # Steps logged after the checkpoint (a run killed between two saves) are trained again.
            run.truncate_metrics(after_step=start_step)
            run.update_state(step=start_step)
        ppl_before = state.get("perplexity_before")
        if ppl_before is None:
            self.emit("status", message=f"measuring perplexity before training on {len(evalset)} test chunks")
            ppl_before = perplexity(wrapper, evalset, plan.batch_size * 2, device, autocast,
                                    eval_cancel).perplexity
            run.update_state(perplexity_before=ppl_before)
            self.emit("eval", step=0, perplexity=ppl_before)
            run.append_metrics({"step": 0, "eval_perplexity": ppl_before})
        best = state.get("best_perplexity")

        # A copy in memory: the chunks may be a read-only memory map of the token cache, which torch cannot
        # wrap, and every step reads rows from all over it.
        data = torch.from_numpy(np.array(train_chunks))
        if plan.device == "cuda":
            data = data.pin_memory()
        per_micro = plan.batch_size * plan.processes
        micro_per_epoch = plan.steps_per_epoch * cfg.gradient_accumulation
        tokens_per_step = per_micro * cfg.gradient_accumulation * cfg.chunk_size
        runtime = float(state.get("train_runtime", 0.0))
        loss_sum = torch.zeros((), device=device)
        loss_n = 0
        last_log = time.perf_counter()
        tokens_since = 0
        orders: dict[int, torch.Tensor] = {}
        wrapper.train()
        self.emit("status", message=f"training {plan.steps} steps of {tokens_per_step} tokens on "
                  f"{plan.device} ({plan.precision})")
        step = start_step
        t0 = time.perf_counter()
        while step < plan.steps:
            if self._stop_everywhere():
                runtime += time.perf_counter() - t0
                self._save(run, model, tokenizer, optimizer, scheduler, step, runtime)
                raise RunCancelled(f"cancelled at step {step}")
            for micro in range(cfg.gradient_accumulation):
                index = step * cfg.gradient_accumulation + micro
                epoch, pos = divmod(index, micro_per_epoch)
                if epoch not in orders:
                    orders = {epoch: torch.randperm(len(data), generator=generator_for(cfg.seed, -1 - epoch))}
                rows = orders[epoch][pos * per_micro : (pos + 1) * per_micro]
                rows = rows[acc.process_index :: plan.processes]
                inputs, labels = mask_batch(data[rows], tables, cfg.mlm_probability, cfg.whole_word_mask,
                                            generator_for(cfg.seed, index))
                inputs = inputs.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                with acc.accumulate(wrapper):
                    loss, _ = wrapper(inputs, torch.ones_like(inputs), labels)
                    acc.backward(loss)
                    optimizer.step()
                    scheduler.step() if micro == cfg.gradient_accumulation - 1 else None
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                loss_n += 1
            step += 1
            tokens_since += tokens_per_step
            if step % plan.logging_steps == 0 or step == plan.steps:
                now = time.perf_counter()
                mean_loss = float(loss_sum) / max(loss_n, 1)
                if not math.isfinite(mean_loss):
                    raise MlmError(f"the loss became {mean_loss} at step {step}: lower --learning-rate")
                elapsed = runtime + now - t0
                tps = tokens_since / max(now - last_log, 1e-9)
                eta = (plan.steps - step) * (now - last_log) / max(plan.logging_steps, 1)
                row = {"step": step, "loss": round(mean_loss, 5), "learning_rate": scheduler.get_last_lr()[0],
                       "tokens_per_s": round(tps, 1), "epoch": round(step / plan.steps_per_epoch, 4),
                       "elapsed": round(elapsed, 2)}
                run.append_metrics(row)
                self.emit("step", total=plan.steps, eta=eta, **row)
                run.update_state(step=step, loss=mean_loss, tokens_per_s=tps, eta=eta, train_runtime=elapsed)
                loss_sum.zero_()
                loss_n, tokens_since, last_log = 0, 0, now
            evaluate_now = plan.eval_steps and step % plan.eval_steps == 0 and step < plan.steps
            save_now = step % plan.save_steps == 0 and step < plan.steps
            if evaluate_now or save_now:
                runtime += time.perf_counter() - t0
                if evaluate_now:
                    ppl = perplexity(wrapper, evalset, plan.batch_size * 2, device, autocast,
                                     eval_cancel).perplexity
                    wrapper.train()
                    run.append_metrics({"step": step, "eval_perplexity": ppl})
                    self.emit("eval", step=step, perplexity=ppl)
                    is_best = best is None or ppl < best
                    best = min(ppl, best) if best is not None else ppl
                    run.update_state(best_perplexity=best)
                    self._save(run, model, tokenizer, optimizer, scheduler, step, runtime, best=is_best)
                else:
                    self._save(run, model, tokenizer, optimizer, scheduler, step, runtime)
                t0 = time.perf_counter()
        runtime += time.perf_counter() - t0

        self.emit("status", message="measuring perplexity after training")
        ppl_after = perplexity(wrapper, evalset, plan.batch_size * 2, device, autocast).perplexity
        run.append_metrics({"step": step, "eval_perplexity": ppl_after})
        self.emit("eval", step=step, perplexity=ppl_after)
        if not isinstance(run, Run):
            return {}
        self.emit("status", message="saving the final model")
        try:
            checkpoints.save_final(run, acc.unwrap_model(wrapper).model, tokenizer)
        except OSError as exc:
            raise MlmError(f"could not write the final model ({exc.strerror or exc}); the last checkpoint "
                           f"is intact: resume with mlm-tui train --resume {run.run_id}") from None
        result = {
            "run_id": run.run_id, "status": "completed", "model": cfg.model,
            "perplexity_before": ppl_before, "perplexity_after": ppl_after,
            "train_runtime": round(runtime, 3), "train_tokens": step * tokens_per_step, "steps": step,
            "model_path": str(run.model_path),
        }
        run.update_state(status="completed", finished=time.time(), perplexity_after=ppl_after,
                         train_runtime=runtime, train_tokens=step * tokens_per_step, step=step, eta=0)
        run.log(f"completed: perplexity {ppl_before:.2f} -> {ppl_after:.2f}")
        return result

    def _save(self, run: Run | _NoStore, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
              step: int, runtime: float, best: bool = False) -> None:
        """Checkpoint on the main process; the others wait for it so none runs ahead into a stop or exit."""
        from mlm_tui import checkpoints

        if isinstance(run, Run):
            try:
                checkpoints.save(run, model, tokenizer, optimizer, scheduler, step, best=best)
            except OSError as exc:
                raise MlmError(f"could not write the checkpoint at step {step} ({exc.strerror or exc}); "
                               "earlier checkpoints are intact") from None
            run.update_state(train_runtime=runtime, checkpoint_step=step)
            self.emit("checkpoint", step=step)
        self.accelerator.wait_for_everyone()


def train(config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    return Trainer(config, **kwargs).run()

