"""Split a masked-LM into its encoder and its vocabulary head.

The head (a 384..768 x 30k projection) costs as much as a small encoder. Training and filling only need
its logits at masked positions, so both run the encoder over every token and the head over masked rows
only. Families whose head we don't know fall back to the full forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ROW_MULTIPLE = 16  # the masked rows the head runs on are padded to a multiple of this (see MaskedOnlyMLM)


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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norms, as the Trainer does. Beside the heads because
    training and the range test (`lr_find`) build the same optimizer over the same model."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
        total = nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        return total / count.clamp(min=1), count
