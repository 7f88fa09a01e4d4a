"""What a CPU training step keeps, made smaller (`mlm_tui.lean`): the vocabulary matrix's gradient without
vocabulary-sized temporaries (`vocab_grad`) and dropout keeping a bool mask (`dropout`), each computing
what PyTorch's own path computes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mlm_tui import vocab_grad
from mlm_tui.dropout import keep_bool_masks
from mlm_tui.heads import MaskedOnlyMLM
from mlm_tui.lean import for_cpu_training
from mlm_tui.vocab_grad import add_in_place

VOCAB, HIDDEN = 120, 32


def tiny_bert(tied: bool = True) -> MaskedOnlyMLM:
    from transformers import AutoConfig, AutoModelForMaskedLM

    config = AutoConfig.for_model("bert", vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                  tie_word_embeddings=tied)
    torch.manual_seed(0)
    return MaskedOnlyMLM(AutoModelForMaskedLM.from_config(config)).train()


def gradients(wrapper: MaskedOnlyMLM, steps: int = 1) -> dict[str, torch.Tensor]:
    """The loss and gradients of `steps` batches accumulated, the batches with padding (id 0) in them."""
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        ids = torch.randint(1, VOCAB, (3, 24), generator=generator)
        ids[0, -5:] = 0
        labels = torch.full_like(ids, -100)
        labels[:, ::4] = ids[:, ::4]
        torch.manual_seed(7)  # the same dropout draws
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = wrapper(ids, torch.ones_like(ids), labels)
        loss.backward()
        losses.append(loss.detach())
    grads = {name: p.grad.clone() for name, p in wrapper.named_parameters() if p.grad is not None}
    return {"loss": torch.stack(losses), **grads}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("steps", [1, 2], ids=["one-batch", "accumulated"])
def test_the_embeddings_gradient_is_nn_embeddings(tied: bool, steps: int) -> None:
    plain = tiny_bert(tied)
    adding = copy.deepcopy(plain)
    assert add_in_place(adding.model) and not add_in_place(plain.model.bert.encoder)
    expected, got = gradients(plain, steps), gradients(adding, steps)
    assert expected.keys() == got.keys() and len(got) > 10
    for name in expected:  # the rows are added in another order: equal up to rounding
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
    table = "model.bert.embeddings.word_embeddings.weight"
    assert got[table].abs().sum() > 0
    if not tied:  # the padding row's gradient comes from the lookup alone, which gives it none
        assert got[table][0].abs().sum() == 0


class VocabularySized(TorchDispatchMode):
    """Records the ops whose result is a new vocabulary x hidden matrix, with its dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = [a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)]
        if (isinstance(out, torch.Tensor) and out.shape == (VOCAB, HIDDEN)
                and out.untyped_storage().data_ptr() not in inputs):
            self.made.append((str(func), out.dtype))
        return out


@pytest.mark.parametrize("adding", [False, True], ids=["nn.Embedding", "added-in-place"])
def test_the_backward_pass_makes_one_vocabulary_sized_gradient(adding: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vocab_grad, "SLICE_ELEMENTS", 40 * HIDDEN)  # a slice: a third of the vocabulary
    wrapper = tiny_bert()
    if adding:
        add_in_place(wrapper.model)
    ids = torch.randint(1, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))
    labels = torch.where(torch.arange(24) % 4 == 0, ids, -100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = wrapper(ids, torch.ones_like(ids), labels)
    with VocabularySized() as seen:
        loss.backward()
    if adding:  # the fp32 gradient, written a slice at a time, and nothing else
        assert seen.made == [("aten.empty.memory_format", torch.float32)]
    else:  # the decoder's in bf16, then in fp32; nn.Embedding's own dense gradient, and their sum
        assert [dtype for _, dtype in seen.made] == [torch.bfloat16, *[torch.float32] * 3], seen.made


@pytest.mark.parametrize("bias", [True, False])
def test_the_decoders_gradients_are_autocasts_bitwise(bias: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CPU bf16 autocast, the same output and the same gradients for the input, weight and bias as
    `nn.Linear`'s, the weight's computed in slices of rows (three here, the last one short)."""
    monkeypatch.setattr(vocab_grad, "SLICE_ELEMENTS", 48 * 16)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 20, 16, generator=generator, requires_grad=True)
    upstream = torch.randn(2, 20, 120, generator=generator, dtype=torch.bfloat16)
    linear = nn.Linear(16, 120, bias=bias)

    def step() -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = linear(x)
        out.backward(upstream)
        grads = [x.grad, *(p.grad for p in linear.parameters())]
        x.grad = None
        linear.zero_grad(set_to_none=True)
        return [out, *grads]

    plain = step()
    decoder = nn.Module()
    decoder.get_output_embeddings = lambda: linear
    assert vocab_grad.add_in_place(decoder) and type(linear) is not nn.Linear
    for a, b in zip(plain, step(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    with torch.no_grad():  # and outside training, nn.Linear's own
        assert torch.equal(linear(x), nn.functional.linear(x, linear.weight, linear.bias))


def test_the_lookup_is_nn_embeddings_without_a_gradient() -> None:
    """Under no_grad (evaluation) and for a frozen table the lookup is nn.Embedding's own."""
    wrapper = tiny_bert()
    add_in_place(wrapper.model)
    ids = torch.randint(1, VOCAB, (2, 8), generator=torch.Generator().manual_seed(2))
    embedding = wrapper.model.get_input_embeddings()
    with torch.no_grad():
        assert embedding(ids).grad_fn is None
    embedding.weight.requires_grad_(False)
    assert embedding(ids).grad_fn is None
    assert torch.equal(embedding(ids), embedding.weight[ids])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_with_a_bool_mask_is_dropout_bitwise(dtype: torch.dtype) -> None:
    """The same output, gradient and random state after it; what autograd keeps is a bool mask."""
    x = torch.randn(64, 96, dtype=dtype, requires_grad=True)
    upstream = torch.randn(64, 96, dtype=dtype)

    def step(dropout: nn.Module) -> tuple[torch.Tensor, ...]:
        kept: list[torch.Tensor] = []
        torch.manual_seed(5)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            y = dropout(x)
        y.backward(upstream)
        grad, x.grad = x.grad, None
        return y, grad, torch.rand(4), kept[0]

    dropout = nn.Dropout(0.1).train()
    plain = step(dropout)
    assert keep_bool_masks(nn.Sequential(dropout)) == 1
    masked = step(dropout)
    for a, b in zip(plain[:3], masked[:3], strict=True):
        assert torch.equal(a, b)
    assert (plain[0] == 0).any() and (plain[0] != 0).any()
    assert plain[3].dtype == dtype and masked[3].dtype == torch.bool
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_a_model_trains_as_before_and_saves_as_before(tmp_path: Any) -> None:
    """A whole model switched for CPU training: the same loss and gradients (up to the embedding rows'
    order), the same state dict, and a saved model plain transformers loads; nothing switched for a GPU."""
    from transformers import AutoModelForMaskedLM

    plain = tiny_bert()
    lean = copy.deepcopy(plain)
    for_cpu_training(lean.model, "cuda")
    assert all(type(m) in (nn.Dropout, nn.Embedding) for m in lean.modules()
               if isinstance(m, nn.Dropout | nn.Embedding))
    several = copy.deepcopy(plain)
    for_cpu_training(several.model, "cpu", processes=2)  # DDP: the vocabulary matrix's modules as they are
    assert type(several.model.get_input_embeddings()) is nn.Embedding
    assert type(several.model.get_output_embeddings()) is nn.Linear
    for_cpu_training(lean.model, "cpu")
    assert type(lean.model.get_input_embeddings()) is not nn.Embedding
    assert not any(type(m) is nn.Dropout for m in lean.modules())
    expected, got = gradients(plain), gradients(lean)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
    assert lean.state_dict().keys() == plain.state_dict().keys()
    lean.model.save_pretrained(tmp_path)
    again = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert type(again.get_input_embeddings()) is nn.Embedding
    assert torch.equal(again.get_input_embeddings().weight, lean.model.get_input_embeddings().weight)
