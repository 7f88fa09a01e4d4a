"""The CPU training attention (`mlm_tui.attention`): what sdpa computes, with the same dropout mask for the
same random state, gradients included; used by a CPU run; never written into a saved model's config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from mlm_tui import attention, runstore

B, H, L, D = 3, 4, 24, 16


def qkv(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, L, D, generator=generator).to(dtype).requires_grad_() for _ in range(3)]


def padding_mask() -> torch.Tensor:
    """sdpa's mask (True: attend) with padding: row 1 attends to its first 17 keys, row 2 to its first 5."""
    mask = torch.ones(B, 1, L, L, dtype=torch.bool)
    mask[1, ..., 17:] = False
    mask[2, ..., 5:] = False
    return mask


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor,
              p: float, scale: float) -> torch.Tensor:
    """Eager attention in fp32, dropping with the given bool mask."""
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return ((probs * keep / (1 - p)) @ v.float()).to(q.dtype)


def forward_backward(fn, inputs: list[torch.Tensor], seed: int, autocast: bool) -> list[torch.Tensor]:
    """The output and the gradients of q, k, v for a fixed upstream gradient, from torch's state `seed`."""
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(*(x.to(torch.bfloat16) if autocast else x for x in inputs))
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * upstream).sum().backward()
    results = [out.detach().float(), *(x.grad.float() for x in inputs)]
    for x in inputs:
        x.grad = None
    return results


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("sequences", [None, 1, 2], ids=["whole-batch", "1-a-time", "2-a-time"])
def test_same_as_sdpa_with_the_same_dropout_draws(autocast: bool, sequences: int | None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same random state gives the same mask as sdpa's own dropout (the math path it takes on the
    CPU): output and gradients equal (bitwise here; allowed a rounding), and the stream is left as sdpa
    leaves it, so a run draws what it drew before; the same whether the batch goes in one piece or a few
    sequences at a time (as a run's batches do)."""
    if sequences is not None:
        monkeypatch.setattr(attention, "ATTENTION_ELEMENTS", sequences * H * L * L)
    inputs, mask, scale = qkv(), padding_mask(), 0.3
    ours = forward_backward(lambda q, k, v: attention.dropout_attention(q, k, v, mask, 0.1, scale),
                            inputs, seed=7, autocast=autocast)
    after_ours = torch.rand(4)
    sdpa = forward_backward(lambda q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=0.1, scale=scale), inputs, seed=7, autocast=autocast)
    after_sdpa = torch.rand(4)
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if autocast else {"atol": 1e-5, "rtol": 1e-5}
    for a, b in zip(ours, sdpa, strict=True):
        torch.testing.assert_close(a, b, **tolerance)
    assert torch.equal(after_ours, after_sdpa)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("broadcast", [False, True], ids=["mask-per-row", "mask-for-all"])
def test_same_as_eager_attention_with_the_same_bool_mask(p: float, autocast: bool, broadcast: bool,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a plain reference that drops with the bool mask the function draws (p = 0: none), one
    sequence at a time, with a mask per sequence or one that broadcasts over the batch."""
    monkeypatch.setattr(attention, "ATTENTION_ELEMENTS", 1)
    inputs, mask, scale = qkv(), padding_mask(), D**-0.5
    if broadcast:
        mask = mask[1:2]
    torch.manual_seed(3)
    keep = torch.empty(B, H, L, L, dtype=torch.bool).bernoulli_(1 - p)  # the draw the function makes
    ours = forward_backward(lambda q, k, v: attention.dropout_attention(q, k, v, mask, p, scale),
                            inputs, seed=3, autocast=autocast)
    ref = forward_backward(lambda q, k, v: reference(q, k, v, mask, keep, p, scale), inputs, seed=3,
                           autocast=autocast)
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if autocast else {"atol": 1e-5, "rtol": 1e-5}
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, **tolerance)


def test_keeps_a_bool_dropout_mask_not_the_probabilities() -> None:
    """What autograd keeps: q, k, v, the bool dropout mask and the padding mask, no L x L float tensor."""
    q, k, v = qkv()
    mask = padding_mask()
    out = attention.dropout_attention(q, k, v, mask, 0.1, D**-0.5)
    saved = out.grad_fn.saved_tensors
    big = [t for t in saved if t.shape[-2:] == (L, L) and t.dtype != torch.bool]
    assert big == []
    assert any(t.dtype == torch.bool and t.shape == (B, H, L, L) for t in saved)


def tiny(family: str) -> torch.nn.Module:
    """A small seeded masked LM of the family, attention dropout 0.1, loaded as the workbench loads (sdpa)."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    sizes = {"bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "intermediate_size": 64},
             "roberta": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "pad_token_id": 1},
             "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}}[family]
    config = AutoConfig.for_model(family, vocab_size=120, max_position_embeddings=64, **sizes)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config)
    assert model.config._attn_implementation == "sdpa"
    return model


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_a_model_trains_as_with_sdpa_and_evaluates_with_sdpa(family: str) -> None:
    model = tiny(family).train()
    ids = torch.randint(5, 120, (3, 20), generator=torch.Generator().manual_seed(0))
    pad = torch.ones_like(ids)
    pad[1, 12:] = 0

    def step() -> list[torch.Tensor]:
        torch.manual_seed(11)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=pad).logits.float()
        logits.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return [logits.detach(), *grads]

    with_sdpa = step()
    assert attention.use_for_training(model, "cpu")
    assert model.config._attn_implementation == attention.ATTENTION
    for a, b in zip(step(), with_sdpa, strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    model.eval()  # no dropout: the calls go to sdpa, exactly as before
    with torch.no_grad():
        evaluated = model(input_ids=ids, attention_mask=pad).logits
        model.set_attn_implementation("sdpa")
        assert torch.equal(evaluated, model(input_ids=ids, attention_mask=pad).logits)


def test_not_on_a_gpu_nor_twice() -> None:
    model = tiny("bert")
    assert not attention.use_for_training(model, "cuda")
    assert model.config._attn_implementation == "sdpa"
    assert attention.use_for_training(model, "cpu")
    assert not attention.use_for_training(model, "cpu")  # already switched: left as it is
    assert model.config._attn_implementation == attention.ATTENTION


def test_a_saved_model_names_no_custom_attention(tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM

    model = tiny("bert")
    attention.use_for_training(model, "cpu")
    model.save_pretrained(tmp_path)
    assert attention.ATTENTION not in (tmp_path / "config.json").read_text()
    assert AutoModelForMaskedLM.from_pretrained(tmp_path).config._attn_implementation == "sdpa"


def test_a_cpu_run_trains_with_it_and_saves_models_that_load_without_it(
        cli, tiny_model_dir: Path, corpus_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run: its steps go through the function; its checkpoint and final model load with plain
    transformers, whose config.json names no attention of mlm_tui's."""
    from transformers import AutoModelForMaskedLM

    calls: list[int] = []
    original = attention.dropout_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "dropout_attention", counted)
    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32,
                         "--batch-size", 4, "--test-size", 4, "--max-steps", 3, "--save-steps", 1,
                         "--no-general", "--device", "cpu", "--json")
    assert code == 0, err
    assert len(calls) == 3 * 2  # 3 steps, 2 layers: evaluation (eval mode) goes to sdpa
    run = runstore.find_run(json.loads(out)["run_id"])
    assert run is not None and run.checkpoint_steps()
    for folder in (run.checkpoint_path(run.checkpoint_steps()[-1]), run.model_path):
        assert attention.ATTENTION not in (folder / "config.json").read_text()
        model = AutoModelForMaskedLM.from_pretrained(folder)
        assert model.config._attn_implementation == "sdpa"
