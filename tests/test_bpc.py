"""Bits per character by PLL-word-l2r (`bpc`): agrees with a direct computation, one masked copy at a
time, and compares a base model with its vocabulary-extended copy over the same characters."""

from __future__ import annotations

import math

import pytest
from conftest import write_jsonl

from mlm_tui import bpc


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    return AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(
        tiny_model_dir)


def _direct_bits(model, tokenizer, text: str) -> float:
    """Each token masked with the rest of its word to its right (words from the tokenizer's word ids),
    one copy at a time, its -log2 p summed."""
    import torch

    enc = tokenizer(text)
    ids, words = enc["input_ids"], enc.word_ids()
    total = 0.0
    for i, w in enumerate(words):
        if w is None:
            continue
        copy = list(ids)
        j = i
        while j < len(ids) and words[j] == w:
            copy[j] = tokenizer.mask_token_id
            j += 1
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([copy])).logits[0, i]
        total -= float(logits.log_softmax(-1)[ids[i]]) / math.log(2)
    return total


def test_bits_agree_with_a_direct_computation(tiny):
    model, tokenizer = tiny
    texts = ["The enzyme catalyses the hydrolysis of jargon.", "Microprocessors, unsurprisingly!"]
    result = bpc.pll_bits(model, tokenizer, texts)
    direct = sum(_direct_bits(model, tokenizer, t) for t in texts)
    assert result.bits == pytest.approx(direct, rel=1e-4)
    assert result.characters == sum(map(len, texts)) and result.words == 9
    assert result.bpc == pytest.approx(direct / result.characters, rel=1e-4)
    # a long text is measured a window at a time: the same characters, every token counted once
    long = " ".join(texts * 8)
    windowed = bpc.pll_bits(model, tokenizer, [long], window=16)
    assert windowed.tokens == len(tokenizer(long, add_special_tokens=False)["input_ids"])
    assert windowed.characters == len(long) and windowed.bits > 0


def test_an_extended_copy_is_measured_over_the_same_characters(tiny):
    """Before any training, the extended model's new token costs what its pieces cost in one go (the
    mean-of-pieces initialisation is not the chain); both are measured over the same characters."""
    from mlm_tui import vocab_extend
    from mlm_tui.chunking import encode_documents

    model, tokenizer = tiny
    docs = ["the microprocessor and the microprocessor run jargon"] * 20
    new_tok, ext = vocab_extend.extend(tokenizer, encode_documents(tokenizer, docs), 2, min_count=3)
    import copy

    new_model = copy.deepcopy(model)
    vocab_extend.extend_model(new_model, ext)
    base = bpc.pll_bits(model, tokenizer, docs[:2], focus=["microprocessor"])
    extended = bpc.pll_bits(new_model, new_tok, docs[:2], focus=["microprocessor"])
    assert base.characters == extended.characters and base.words == extended.words
    assert extended.tokens < base.tokens
    assert base.focus_occurrences == extended.focus_occurrences == 4
    assert math.isfinite(extended.bpc) and extended.bpc != base.bpc


def test_measured_texts_are_the_held_out_documents(tmp_path):
    from mlm_tui.chunking import held_out_documents

    docs = [f"document number {i} with some words" for i in range(50)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    held = [docs[i] for i in held_out_documents(50, 0.1, 42)[1]]
    assert bpc.measured_texts(str(corpus), seed=42) == held
    capped = bpc.measured_texts(str(corpus), seed=42, max_chars=40)
    assert sum(map(len, capped)) == 40 and capped[0] == held[0]


def test_cli_eval_bpc(cli, tiny_model_dir, tmp_path):
    import json

    corpus = write_jsonl(tmp_path / "c.jsonl", [f"document number {i} with some words" for i in range(50)])
    code, out, err = cli("eval", corpus, "--model", tiny_model_dir, "--bpc", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["characters"] == sum(map(len, bpc.measured_texts(str(corpus))))
    assert data["bpc"] == pytest.approx(data["bits"] / data["characters"]) and data["bpc"] > 0
    code, _, err = cli("eval", corpus, "--model", tiny_model_dir, "--bpc", "--subset", "x")
    assert code == 2 and "local corpus" in err
