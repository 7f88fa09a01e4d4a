"""Attention for training on the CPU with attention dropout, keeping a bool dropout mask, not probabilities.

With attention dropout (0.1 in BERT-like models), PyTorch's CPU `scaled_dot_product_attention` takes its
plain (math) path, and autograd keeps per layer, for the backward pass, the fp32 softmax, the dropout's mask
as floats and the dropped probabilities: three batch x heads x length x length fp32 tensors, 38 MB a layer
at batch 16 x 128 with 12 heads, 216 MB of the 526 MB of activations of a `starter` step (README, "Memory of
a training run"). This function computes the same thing (the same fp32 arithmetic, and the same dropout mask
for the same random state: the mask is drawn as the math path draws it, one `bernoulli_` over the
probabilities' shape) but keeps only q, k and v (which the math path keeps too), the padding mask (one for
every layer) and the dropout mask as bool, 3 MB a layer; its backward computes the softmax again
(selective recomputation: one more q.kT and softmax a layer, a few per cent of a step).

It is registered with transformers' attention interface as `ATTENTION` (with sdpa's boolean masks) and
used by families whose attention goes through that interface (BERT, RoBERTa, DistilBERT, ...) only where
it pays: `use_for_training` switches a model to it for training on the CPU; on a GPU the model keeps sdpa
(flash), and a family that does not use the interface keeps its own. A model in eval mode, a layer without
dropout, or a call it does not handle (grouped heads, a causal mask, a position bias, soft-capping) goes to
sdpa's function unchanged, so evaluation during a run computes what it did. The choice lives only in the
in-memory config (`_attn_implementation`, which transformers does not write to config.json), so a saved
model loads anywhere without mlm_tui (tests/test_attention.py checks it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from mlm_tui.heads import row_slices

ATTENTION = "mlm_tui_cpu_dropout"
ATTENTION_ELEMENTS = 2**18  # probabilities computed at a time: 1 MB in fp32 (see _DropoutAttention)


class _DropoutAttention(torch.autograd.Function):
    """softmax(q.kT * scale + mask) with dropout, times v, in fp32; keeps q, k, v, the masks (bool).

    Both passes go a few sequences at a time (`heads.row_slices`), so their fp32 temporaries are about 1 MB,
    not 12 MB: allocated while every activation of the step is alive, batch-sized temporaries left holes
    in the heap that glibc's allocator kept (README, "Memory of a training run"). Each sequence's
    arithmetic is the same either way, and the dropout mask is drawn once over the whole batch.
    """

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None, p: float, scale: float) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            shape = (*query.shape[:-1], key.shape[-2])
            keep = torch.empty(shape, dtype=torch.bool, device=query.device).bernoulli_(1 - p)
            out = torch.empty((*query.shape[:-1], value.shape[-1]), dtype=torch.float32, device=query.device)
            for rows in row_slices(keep, ATTENTION_ELEMENTS):
                probs = _probs(*_scaled(query[rows], key[rows], scale), _rows(mask, rows))
                probs.mul_(keep[rows]).mul_(1 / (1 - p))
                torch.matmul(probs, value[rows].float(), out=out[rows])
        ctx.save_for_backward(query, key, value, keep, *(() if mask is None else (mask,)))
        ctx.p, ctx.scale = p, scale
        return out.to(query.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, keep, *masks = ctx.saved_tensors
        mask = masks[0] if masks else None
        factor = 1 / (1 - ctx.p)
        root = math.sqrt(ctx.scale)
        grad_query, grad_key, grad_value = (torch.empty_like(t) for t in (query, key, value))
        with torch.autocast("cpu", enabled=False):
            for rows in row_slices(keep, ATTENTION_ELEMENTS):
                part = grad[rows].float()
                scaled_query, scaled_key = _scaled(query[rows], key[rows], ctx.scale)
                probs = _probs(scaled_query, scaled_key, _rows(mask, rows))  # the softmax again, not kept
                dropped = probs * keep[rows]
                dropped.mul_(factor)
                grad_value[rows] = torch.matmul(dropped.transpose(-2, -1), part)
                del dropped
                grad_probs = torch.matmul(part, value[rows].float().transpose(-2, -1))
                grad_probs.mul_(keep[rows]).mul_(factor)
                grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, torch.float32)
                del grad_probs, probs
                grad_query[rows] = torch.matmul(grad_scores, scaled_key).mul_(root)
                grad_key[rows] = torch.matmul(grad_scores.transpose(-2, -1), scaled_query).mul_(root)
        return grad_query, grad_key, grad_value, None, None, None


def _rows(mask: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    """The mask of those sequences: sdpa's mask has the batch's size or broadcasts over it (size 1)."""
    return mask if mask is None or mask.shape[0] == 1 else mask[rows]


def _scaled(query: torch.Tensor, key: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k in fp32, each times the square root of the scale (as sdpa's math path scales them)."""
    root = math.sqrt(scale)
    return query.float() * root, key.float() * root


def _probs(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q.kT + mask) in fp32 (q, k scaled); a row whose keys are all masked is zeros (as sdpa's)."""
    scores = torch.matmul(query, key.transpose(-2, -1))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))
        else:
            scores.add_(mask)
    probs = torch.softmax(scores, dim=-1)
    if mask is not None and mask.dtype == torch.bool:
        dead = ~mask.any(dim=-1, keepdim=True)
        if bool(dead.any()):
            probs.masked_fill_(dead, 0.0)
    return probs


def dropout_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      mask: torch.Tensor | None, p: float, scale: float | None = None) -> torch.Tensor:
    """The attention output, (batch, heads, length, head size), of q, k, v of that shape: dropout p > 0
    on the probabilities; `mask` is sdpa's (bool, True where a key is attended to) or additive (float)."""
    scale = query.size(-1) ** -0.5 if scale is None else scale
    return _DropoutAttention.apply(query, key, value, mask, p, scale)


def attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface (as `sdpa_attention_forward`): (output as batch, length, heads,
    head size; no weights). Hands the calls it is not for to sdpa's."""
    if (not module.training or dropout <= 0.0 or query.device.type != "cpu" or is_causal
            or getattr(module, "num_key_value_groups", 1) > 1 or key.shape[1] != query.shape[1]
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
            or kwargs.get("s_aux") is not None or not torch.is_grad_enabled()):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = dropout_attention(query, key, value, attention_mask, dropout, scaling)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `ATTENTION` known to transformers: the function, and sdpa's masks for it (bool, or None when
    nothing is masked). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention_forward)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_for_training(model: nn.Module, device: torch.device | str) -> bool:
    """Switch `model` to `ATTENTION` when it pays: training on the CPU, in a family whose attention goes
    through the interface and now uses sdpa. Whether it did."""
    config = getattr(model, "config", None)
    if (torch.device(device).type != "cpu" or config is None
            or getattr(config, "_attn_implementation", None) != "sdpa"
            or not hasattr(model, "set_attn_implementation") or not model._can_set_attn_implementation()):
        return False
    register()
    model.set_attn_implementation(ATTENTION)
    return config._attn_implementation == ATTENTION

