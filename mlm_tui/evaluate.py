"""Masked-LM perplexity on chunks masked once with a fixed seed, so before/after numbers compare."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlm_tui.corpus import HubOptions
from mlm_tui.errors import FieldError, RunCancelled, UsageError
from mlm_tui.heads import MaskedOnlyMLM
from mlm_tui.masking import IGNORE, TokenTables, fixed_masks

EVAL_SEED = 1234


@dataclass
class EvalResult:
    perplexity: float
    loss: float
    chunks: int
    masked_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"perplexity": self.perplexity, "chunks": self.chunks, "masked_tokens": self.masked_tokens}


@dataclass
class EvalSet:
    """Chunks with their masks fixed once; reused for every evaluation of a run."""

    inputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def build(cls, chunks: np.ndarray, tables: TokenTables, probability: float = 0.15,
              seed: int = EVAL_SEED, whole_word: bool = False) -> EvalSet:
        if len(chunks) == 0:
            raise UsageError("no chunks to evaluate on: the text is shorter than one chunk")
        inputs, labels = fixed_masks(chunks, tables, probability, seed, whole_word)
        if not bool((labels != IGNORE).any()):  # its perplexity would be 0/0: refuse it before any work
            raise FieldError("mlm_probability", f"the test set has no masked token ({len(chunks)} chunks of "
                             f"{chunks.shape[1]} tokens at {{field}} {probability}): raise {{field}} or "
                             "{chunk_size}, or add test text", also=("chunk_size",))
        return cls(inputs, labels)

    def __len__(self) -> int:
        return len(self.inputs)


def perplexity(model: Any, evalset: EvalSet, batch_size: int = 32, device: Any = "cpu",
               autocast: torch.dtype | None = None,
               cancelled: Callable[[], bool] | None = None) -> EvalResult:
    """exp of the mean cross-entropy over every masked token (token-weighted, not batch-weighted)."""
    wrapper = _masked_only(model)
    was_training = model.training  # the caller's model, not a wrapper made here (new modules train)
    wrapper.eval()
    device = torch.device(device)
    total_loss, total_tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(evalset), batch_size):
            if cancelled is not None and cancelled():
                raise RunCancelled("evaluation cancelled")
            ids = evalset.inputs[start : start + batch_size].to(device)
            labels = evalset.labels[start : start + batch_size].to(device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss, count = wrapper(ids, torch.ones_like(ids), labels)
            n = int(count)
            if n:
                total_loss += float(loss) * n
                total_tokens += n
    if was_training:
        wrapper.train()
    mean = total_loss / max(total_tokens, 1)
    return EvalResult(math.exp(mean) if total_tokens else float("nan"), mean, len(evalset), total_tokens)


def _masked_only(model: Any) -> MaskedOnlyMLM:
    """The masked-only wrapper to evaluate with: `model` itself, the module inside a DDP wrapper (an
    evaluation needs no gradient sync, so every process runs it alone), or a new one around a plain LM."""
    if isinstance(model, MaskedOnlyMLM):
        return model
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, MaskedOnlyMLM) else MaskedOnlyMLM(model)


def eval_corpus(corpus: str, model: str, chunk_size: int, text_field: str = "text",
                test_size: int | None = None, allow_pickle: bool = False,
                hub: HubOptions | None = None, device: str = "cpu",
                autocast: torch.dtype | None = None) -> dict[str, Any]:
    """Perplexity of a model on a whole corpus (every split), or on a seeded sample of `test_size` chunks.
    `mlm-tui eval` measures on the CPU in fp32; `benchmarks/bench_gpu.py` measures the same chunks on a GPU
    in bf16 to check that the two agree."""
    from mlm_tui.chunking import check_chunk_size, tokenize_corpus
    from mlm_tui.models import load_model

    handle = load_model(model, allow_pickle=allow_pickle, device=device)
    check_chunk_size(chunk_size, handle.tokenizer)
    splits = tokenize_corpus(corpus, handle.tokenizer, text_field, hub=hub)
    chunks = np.concatenate([s.chunks(chunk_size) for s in splits.values()])
    if test_size is not None and test_size < len(chunks):
        chunks = chunks[np.sort(np.random.default_rng(0).choice(len(chunks), test_size, replace=False))]
    evalset = EvalSet.build(chunks, TokenTables.from_tokenizer(handle.tokenizer))
    return perplexity(handle.model, evalset, 32, handle.device, autocast).to_dict()
