"""The masked-only loss computed row by row (`heads._RowwiseCrossEntropy`): the same gradients as the
whole-matrix cross-entropy, bitwise, so a run trains exactly as before with less memory at its peak."""

from __future__ import annotations

import pytest

from mlm_tui.heads import LOSS_ELEMENTS

SLICE = LOSS_ELEMENTS // 30522  # rows of BERT's vocabulary the loss takes at a time


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("rows", [1, SLICE, SLICE + 1, 150])
def test_rowwise_loss_has_the_whole_matrix_gradients(dtype, rows):
    import torch

    from mlm_tui.heads import _RowwiseCrossEntropy

    generator = torch.Generator().manual_seed(rows)
    logits = (torch.randn(rows, 30522, generator=generator) * 4).to(getattr(torch, dtype)).requires_grad_()
    targets = torch.randint(0, 30522, (rows,), generator=generator)
    targets[::3] = -100  # padding rows: no loss, no gradient
    whole = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    (expected,) = torch.autograd.grad(whole / 7, logits)
    rowwise = _RowwiseCrossEntropy.apply(logits * 1, targets)  # the head's output: not a leaf
    (got,) = torch.autograd.grad(rowwise / 7, logits)
    assert got.dtype == logits.dtype
    assert torch.equal(got, expected)
    assert torch.allclose(rowwise, whole, rtol=1e-6)
    assert not got[::3].any()
