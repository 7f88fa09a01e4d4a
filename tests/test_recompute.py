"""What a training step keeps for its backward pass (`mlm_tui.recompute`): GELU outputs are computed again,
not kept, equal casts of one tensor are kept once, and the gradients are bitwise the same."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest
import torch

from mlm_tui import recompute
from mlm_tui.heads import MaskedOnlyMLM
from mlm_tui.recompute import kept_cheaply


def tiny_bert() -> MaskedOnlyMLM:
    from transformers import AutoConfig, AutoModelForMaskedLM

    config = AutoConfig.for_model("bert", vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    return MaskedOnlyMLM(AutoModelForMaskedLM.from_config(config)).train()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 120, (3, 24), generator=generator)
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    return ids, labels


def loss_of(wrapper: MaskedOnlyMLM, cheaply: bool, autocast: bool = True) -> torch.Tensor:
    """The training loss of the test batch, its forward pass within `kept_cheaply()` or not."""
    ids, labels = batch()
    with (torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
          kept_cheaply() if cheaply else contextlib.nullcontext()):
        loss, _ = wrapper(ids, torch.ones_like(ids), labels)
    return loss


def gradients(wrapper: MaskedOnlyMLM, cheaply: bool, autocast: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)  # the same dropout draws
    loss_of(wrapper, cheaply, autocast).backward()
    grads = {name: p.grad.clone() for name, p in wrapper.named_parameters() if p.grad is not None}
    wrapper.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_the_gradients_are_bitwise_the_same(autocast: bool) -> None:
    wrapper = tiny_bert()
    expected, got = gradients(wrapper, False, autocast), gradients(wrapper, True, autocast)
    assert expected.keys() == got.keys() and len(got) > 10
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.parametrize("cheaply", [False, True], ids=["plain", "kept-cheaply"])
def test_gelu_outputs_are_not_kept(cheaply: bool) -> None:
    """After the forward pass the feed-forward's GELU outputs are freed (the plain forward keeps them alive
    until the backward pass), and the backward pass computes them again."""
    wrapper = tiny_bert()
    seen: list[weakref.ref] = []
    for layer in wrapper.model.bert.encoder.layer:
        layer.intermediate.register_forward_hook(lambda m, i, out: seen.append(weakref.ref(out)))
    loss = loss_of(wrapper, cheaply)
    gc.collect()
    assert [ref() is not None for ref in seen] == [not cheaply] * 2
    loss.backward()
    assert all(p.grad is not None for p in wrapper.parameters() if p.requires_grad)


def test_other_tensors_are_kept_as_they_are() -> None:
    """A weight's bf16 copy (as autocast makes for a Linear) and any other op's output are kept."""
    weight = torch.nn.Parameter(torch.randn(40, 8))
    for kept in (weight.to(torch.bfloat16).t(), weight * 2):
        assert recompute._pack({}, kept) is kept


def kept_hidden_states(wrapper: MaskedOnlyMLM, cheaply: bool) -> int:
    """How many bf16 tensors of the hidden states' shape the forward pass keeps for its backward pass (what
    `kept_cheaply`'s hook keeps, or everything autograd saves)."""
    casts: dict = {}
    kept: set[int] = set()

    def pack(tensor: torch.Tensor) -> object:
        packed = recompute._pack(casts, tensor) if cheaply else tensor
        if isinstance(packed, torch.Tensor) and packed.dtype == torch.bfloat16 and packed.shape == (72, 32):
            kept.add(packed.untyped_storage().data_ptr())
        return packed

    with torch.autograd.graph.saved_tensors_hooks(pack, recompute._unpack):
        loss_of(wrapper, cheaply=False).backward()
    return len(kept)


def test_the_query_key_and_value_keep_one_cast_of_their_input() -> None:
    """A layer's query, key and value projections each cast the same hidden states to bf16; kept cheaply,
    one copy is kept for the three (the gradients are bitwise the same: the test above)."""
    wrapper = tiny_bert()
    layers = len(wrapper.model.bert.encoder.layer)
    plain = kept_hidden_states(wrapper, cheaply=False)
    assert kept_hidden_states(wrapper, cheaply=True) == plain - 2 * layers


def test_a_cast_of_a_tensor_changed_in_place_is_kept_as_it_is() -> None:
    """Two casts of one tensor with an in-place change between them are not equal: both are kept, and the
    gradient is the plain one."""
    weight = torch.nn.Parameter(torch.randn(8, 8))

    def grad(cheaply: bool) -> torch.Tensor:
        source = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) @ weight
        with (torch.autocast("cpu", dtype=torch.bfloat16),
              kept_cheaply() if cheaply else contextlib.nullcontext()):
            first = torch.nn.functional.linear(source, weight)
            source.data.mul_(3)  # the source changes: its next cast differs from the first
            second = torch.nn.functional.linear(source, weight)
        (first.float().sum() + second.float().square().sum()).backward()
        result, weight.grad = weight.grad, None
        return result

    assert torch.equal(grad(True), grad(False))
