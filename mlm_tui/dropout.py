"""Dropout that keeps a bool mask for the backward pass, not a mask as large as its input.

On the CPU, `F.dropout` draws a noise tensor of the input's dtype (`empty_like(input).bernoulli_(1 - p)`,
divided by `1 - p`), multiplies, and autograd keeps that noise until the backward pass: in a BERT layer two
bf16 masks of the hidden size (1.5 MB each in a `starter` step at batch 16 x 128) and one fp32 mask after
the embeddings (3 MB), 21 MB alive at the step's peak. `_MaskedDropout` draws the same noise the same way
(so the output and the random state are bitwise what `F.dropout` gives), keeps it as bool (a byte an
element), and makes the noise again from it in the backward pass: the gradient is bitwise the same
(tests/test_lean.py). GPUs already keep a bool mask (`native_dropout`), so only CPU training uses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable


class _MaskedDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        noise = torch.empty_like(x).bernoulli_(1 - p)
        keep = noise.bool()
        noise.div_(1 - p)
        ctx.save_for_backward(keep)
        ctx.p = p
        return x * noise

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        noise = keep.to(grad.dtype)
        noise.div_(1 - ctx.p)  # 1 / (1 - p) rounded as the forward pass rounded it, or 0
        return grad * noise, None


class _BoolMaskDropout(nn.Dropout):
    """An `nn.Dropout` whose training-time forward is `_MaskedDropout` where autograd will keep a mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and 0 < self.p < 1 and not self.inplace and x.requires_grad
                and torch.is_grad_enabled() and x.device.type == "cpu"):
            return super().forward(x)
        return _MaskedDropout.apply(x, self.p)


def keep_bool_masks(model: nn.Module) -> int:
    """Switch `model`'s `nn.Dropout` modules to the dropout above; how many it switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = _BoolMaskDropout
            switched += 1
    return switched
