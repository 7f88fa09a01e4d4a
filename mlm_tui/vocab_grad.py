"""The vocabulary matrix's gradient made without vocabulary-sized temporaries, on a CPU training step.

A BERT-like model's largest parameter is its vocabulary x hidden matrix (30,522 x 384 for `starter`,
47 MB in fp32), which the input embedding looks rows up in and the head's decoder, tied to it, projects
onto. Its gradient needs to exist once, in fp32, until the optimizer step. PyTorch's own backward pass
makes it three times more, each while much of the step's memory is alive (README, "Memory of a training
run"):
- under bf16 autocast the decoder's gradient is computed whole in bf16 (23 MB), then cast to fp32: at
  the start of the backward pass, with every activation alive;
- `nn.Embedding`'s backward pass builds a dense gradient of the whole matrix for the two thousand rows a
  batch looked up, and autograd adds it to the decoder's into a new matrix (two more, 47 MB each, which
  glibc maps on top of the heap it holds).

`add_in_place(model)` switches the two modules so that neither is made:
- the decoder (`_SlicedDecoder`) computes the same bf16 products a slice of the vocabulary at a time and
  writes each into the fp32 gradient (the same values: the tests compare bitwise);
- the lookup (`_Lookup`) adds its rows into the weight's `.grad` (`index_add_`) when the backward pass
  reaches it, where the decoder's gradient already is: autograd accumulates a parameter's gradient as soon
  as its last contribution arrives, and the decoder's is the first of the backward pass. The sum is the
  same up to the order in which rows are added.
Both are for one process on the CPU (`lean.py`): DDP reduces a gradient when autograd accumulates it,
before the lookup's rows would arrive, and a GPU's `index_add_` is not deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from mlm_tui.heads import row_slices

SLICE_ELEMENTS = 2**19  # the decoder's gradient computed this many bf16 elements at a time: 1 MB


class _Lookup(torch.autograd.Function):
    """`F.embedding` whose backward pass adds into `module.weight.grad` and hands autograd nothing."""

    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, table: torch.Tensor, module: nn.Embedding) -> torch.Tensor:
        ctx.module = module
        ctx.save_for_backward(ids)
        return F.embedding(ids, table, module.padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:
        (ids,) = ctx.saved_tensors
        weight = ctx.module.weight
        ids, grad = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if ctx.module.padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
            kept = ids != ctx.module.padding_idx
            ids, grad = ids[kept], grad[kept]
        if weight.grad is None:
            weight.grad = torch.zeros_like(weight)
        weight.grad.index_add_(0, ids, grad.to(weight.grad.dtype))
        return None, None, None


class _AddingEmbedding(nn.Embedding):
    """An `nn.Embedding` (same parameters, same state dict) whose lookup is `_Lookup` when it trains."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad):
            return super().forward(ids)
        # The lookup reads a detached alias: the parameter's own gradient is left to `_Lookup.backward`,
        # and the alias, a leaf that requires grad, gives autograd the node that calls it.
        return _Lookup.apply(ids, self.weight.detach().requires_grad_(), self)


class _SlicedDecoder(torch.autograd.Function):
    """`linear(x, weight, bias)` as CPU autocast computes it (every input cast to `dtype`), whose backward
    pass writes the weight's gradient into an fp32 matrix a slice of rows at a time."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
        low = [None if t is None else t.to(dtype) for t in (x, weight, bias)]
        ctx.save_for_backward(low[0], low[1])
        ctx.x_dtype, ctx.bias_dtype = x.dtype, None if bias is None else bias.dtype
        with torch.autocast("cpu", enabled=False):
            return F.linear(*low)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        inputs = x.reshape(-1, x.shape[-1])
        grad_x = (grad @ weight).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:  # what autograd computes for it, `rows.t().mm(inputs)`, in slices
            grad_weight = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
            for part in row_slices(weight, SLICE_ELEMENTS):
                grad_weight[part] = rows[:, part].t().mm(inputs)
        grad_bias = None
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None


class _SlicedLinear(nn.Linear):
    """An `nn.Linear` (same parameters, same state dict) whose product is `_SlicedDecoder` under CPU
    autocast when it trains."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.weight.requires_grad and torch.is_autocast_enabled("cpu")
                and x.device.type == "cpu"):
            return super().forward(x)
        return _SlicedDecoder.apply(x, self.weight, self.bias, torch.get_autocast_dtype("cpu"))


def add_in_place(model: nn.Module) -> bool:
    """Switch `model`'s input embedding and output projection to the modules above where they are plain
    `nn.Embedding` (without max_norm, scale_grad_by_freq or sparse gradients) and `nn.Linear`. Whether
    either is switched now."""
    lookup = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if (type(lookup) is nn.Embedding and lookup.max_norm is None and not lookup.scale_grad_by_freq
            and not lookup.sparse):
        lookup.__class__ = _AddingEmbedding
    decoder = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(decoder) is nn.Linear:
        decoder.__class__ = _SlicedLinear
    return type(lookup) is _AddingEmbedding or type(decoder) is _SlicedLinear
