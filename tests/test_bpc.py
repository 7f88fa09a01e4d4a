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


# -- a run's bits per character (bpc_before, bpc_after) ---------------------------------------------------
RUN_FLAGS = ("--chunk-size", "32", "--batch-size", "4", "--test-size", "4", "--max-steps", "2",
             "--no-general", "--precision", "fp32", "--device", "cpu", "--json")


def test_a_run_records_bits_per_character_and_runs_show_prints_them(cli, finished_run):
    import json

    from mlm_tui.runstore import find_run

    code, out, err = cli("runs", "show", finished_run, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert math.isfinite(shown["bpc_before"]) and math.isfinite(shown["bpc_after"])
    assert shown["bpc_before"] > 0 and shown["bpc_characters"] > 0
    code, out, _ = cli("runs", "show", finished_run)
    line = next(line for line in out.splitlines() if line.startswith("bits/char"))
    assert f"{shown['bpc_before']:.3f} -> {shown['bpc_after']:.3f}" in line
    assert f"{shown['bpc_characters']:,} characters" in line
    code, out, _ = cli("runs", "--json")
    row = next(r for r in json.loads(out)["runs"] if r["run_id"] == finished_run)
    assert (row["bpc_before"], row["bpc_after"]) == (shown["bpc_before"], shown["bpc_after"])
    run = find_run(finished_run)
    assert run is not None
    log = run.log_path.read_text()
    assert f"bits per character {shown['bpc_before']:.4f} before training" in log
    assert f"bits per character {shown['bpc_after']:.4f} after training" in log


def test_an_extended_runs_bpc_before_is_the_base_model_with_its_own_tokenizer(cli, home, tiny_model_dir,
                                                                              tmp_path):
    """The same characters, each model with its own tokenizer: the base before, the run's model after."""
    import json

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_tui.runstore import find_run

    docs = [f"the microprocessor and the glomerulonephritis of item {i}" for i in range(120)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    code, out, err = cli("train", corpus, "--model", tiny_model_dir, "--extend-vocab", "2", "--bpc-chars",
                         "300", *RUN_FLAGS)
    assert code == 0, err
    result = json.loads(out)
    texts = bpc.measured_texts(str(corpus), seed=42, max_chars=300)
    base_model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir)
    base_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = bpc.pll_bits(base_model, base_tokenizer, texts)
    assert base.characters == 300 and result["bpc_before"] == pytest.approx(base.bpc, rel=1e-5)
    run = find_run(result["run_id"])
    assert run is not None
    final = bpc.pll_bits(AutoModelForMaskedLM.from_pretrained(run.model_path),
                         AutoTokenizer.from_pretrained(run.model_path), texts)
    assert result["bpc_after"] == pytest.approx(final.bpc, rel=1e-5)
    assert final.tokens < base.tokens  # the run's tokenizer spells the added words whole
    assert "the base model, its own tokenizer" in run.log_path.read_text()


def test_a_resumed_run_keeps_its_bpc_before(home, tiny_model_dir, corpus_jsonl):
    from conftest import cancelled_run

    from mlm_tui.lifecycle import TrainingRun

    run = cancelled_run(tiny_model_dir, corpus_jsonl)
    before = run.info().bpc_before
    assert before is not None and run.info().bpc_after is None
    TrainingRun.resuming(run).run()
    info = run.info()
    assert info.status == "completed" and info.bpc_before == before and info.bpc_after is not None
    measured = [line for line in run.log_path.read_text().splitlines() if "bits per character" in line]
    assert [("before" in line, "after" in line) for line in measured] == [(True, False), (False, True)]


def test_bpc_chars_0_records_none(cli, home, tiny_model_dir, corpus_jsonl):
    import json

    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--bpc-chars", "0", *RUN_FLAGS)
    assert code == 0, err
    result = json.loads(out)
    assert result["bpc_before"] is None and result["bpc_after"] is None
    code, out, _ = cli("runs", "show", result["run_id"])
    assert code == 0 and "bits/char" not in out and "perplexity" in out
