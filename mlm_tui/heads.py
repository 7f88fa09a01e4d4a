"""Split a masked-LM into its encoder and its vocabulary head.

The head (a 384..768 x 30k projection) costs as much as a small encoder. Training and filling only need
its logits at masked positions, so both run the encoder over every token and the head over masked rows
only. Families whose head we don't know fall back to the full forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ROW_MULTIPLE = 16  # the masked rows the head runs on are padded to a multiple of this (see MaskedOnlyMLM)
LOSS_ELEMENTS = 2**18  # logits the loss turns into fp32 at a time: 1 MB (8 MB left holes the heap kept)


def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The callable mapping hidden states to vocabulary logits, or None for an unknown family."""
    if hasattr(model, "cls") and hasattr(model.cls, "predictions"):  # BERT and its relatives
        return model.cls
    if hasattr(model, "lm_head"):  # RoBERTa, XLM-R, CamemBERT, ModernBERT ...
        return model.lm_head
    if hasattr(model, "vocab_projector") and hasattr(model, "vocab_transform"):  # DistilBERT
        act = model.activation

        def distilbert_head(hidden: torch.Tensor) -> torch.Tensor:
            hidden = model.vocab_layer_norm(act(model.vocab_transform(hidden)))
            return model.vocab_projector(hidden)

        return distilbert_head
    return None


def adamw(model: nn.Module, weight_decay: float, learning_rate: float,
          device: torch.device | str) -> torch.optim.AdamW:
    """The AdamW that training, the range test (`lr_find`) and the probe's fine-tune step with: the
    Trainer's groups (no weight decay on biases and norms), fused where PyTorch has a fused kernel (CUDA,
    CPU): one pass over each parameter and no parameter-sized temporaries, 8-10% more tokens/s than
    `foreach` in a CPU run of `starter` (README, "Memory of a training run")."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kernel = {"fused": True} if torch.device(device).type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=learning_rate, **kernel)


def encoder_hidden(model: nn.Module, **inputs: Any) -> torch.Tensor:
    """Last hidden states of the model's encoder (no vocabulary projection)."""
    return model.base_model(**inputs)[0]


def masked_logits(model: nn.Module, ids: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits of a masked LM (in eval mode) at the selected positions, with the vocabulary
    head on those rows only when the family's head is known."""
    head = mlm_head(model)
    if head is None:
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[select]
    return head(encoder_hidden(model, input_ids=ids, attention_mask=torch.ones_like(ids))[select])


class MaskedOnlyMLM(nn.Module):
    """Wraps an MLM so its forward returns the loss computed from logits at labelled positions only.

    Same loss as `model(**batch, labels=labels).loss` (mean cross-entropy over tokens whose label is not
    -100), at a fraction of the head's cost. Being a module, it goes through Accelerate/DDP like any other.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = mlm_head(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> Any:
        """(mean loss over the masked tokens, their count).

        A batch with no masked token (a small --mlm-probability or --chunk-size makes them) has a loss of
        zero, not the 0/0 = NaN of a mean over nothing; it still runs the whole graph, so its zero
        gradients take part in every process's all-reduce, and training counts it like any other batch.

        The head runs on the masked rows padded with zero rows (labelled -100: no loss, no gradient) to a
        multiple of ROW_MULTIPLE: on a CPU in bf16, oneDNN keeps kernels and buffers for every matrix shape
        it meets, and a count of masked tokens that differs from batch to batch grew a long run's memory
        by hundreds of MB (README, "Memory of a training run").
        """
        select = labels != -100
        targets = labels[select]
        if self.head is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[select]
        else:
            hidden = encoder_hidden(self.model, input_ids=input_ids, attention_mask=attention_mask)[select]
            pad = -len(targets) % ROW_MULTIPLE
            hidden = nn.functional.pad(hidden, (0, 0, 0, pad))
            targets = nn.functional.pad(targets, (0, pad), value=-100)
            logits = self.head(hidden)
        count = select.sum()
        total = _RowwiseCrossEntropy.apply(logits, targets)
        return total / count.clamp(min=1), count


class _RowwiseCrossEntropy(torch.autograd.Function):
    """`cross_entropy(logits.float(), targets, reduction="sum")` computed a few rows at a time (about
    LOSS_ELEMENTS logits), keeping the logits as they came (bf16 under autocast) for the backward pass
    instead of their fp32 log-softmax, and writing their gradient over them (nothing reads the head's
    output after the loss).

    Why: the whole-matrix loss holds, while every activation of the step is alive, an fp32 copy of the
    logits, their log-softmax (kept for backward) and in backward two more fp32 matrices of that size:
    112 MB above the head's output at batch 16 x 128 with a 30k vocabulary, 916 MB with XLM-R's 250k
    (`benchmarks/bench_train_memory.py`). In slices, the backward pass computes the log-softmax again (the
    same operations, row by row), so the gradients are bitwise the same; only the loss's sum may round
    differently in its last bit.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, targets)
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for rows in row_slices(logits, LOSS_ELEMENTS):
            total += nn.functional.cross_entropy(logits[rows].float(), targets[rows], reduction="sum")
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets = ctx.saved_tensors
        for rows in row_slices(logits, LOSS_ELEMENTS):
            with torch.enable_grad():
                part = logits[rows].detach().requires_grad_()
                loss = nn.functional.cross_entropy(part.float(), targets[rows], reduction="sum")
                (logits[rows],) = torch.autograd.grad(loss, part, grad)
        return logits, None


def row_slices(tensor: torch.Tensor, elements: int) -> list[slice]:
    """Slices of `tensor`'s first dimension holding about `elements` elements each (one row at least): the
    loss here and the CPU attention (`attention.py`) go through a step's largest temporaries this way, so
    that none is allocated whole while every activation of the step is alive."""
    step = max(1, elements // max(1, math.prod(tensor.shape[1:])))
    return [slice(start, start + step) for start in range(0, len(tensor), step)]
