"""Issue 13 through the CLI on tiny runs: what a run learned (`runs learned`) and what it cost (perplexity on
general text before and after, in `train`, `runs` and `runs show`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SENTENCES, write_jsonl
from test_cli_contract import assert_one_line_error

TINY_RUN = ["--chunk-size", 32, "--batch-size", 4, "--precision", "fp32"]


def train(cli, corpus: Path, model: Path | str, *extra) -> dict:
    code, out, err = cli("train", corpus, "--model", model, *TINY_RUN, *extra, "--json")
    assert code == 0, err
    return json.loads(out)


def test_runs_learned_measures_the_runs_own_test_chunks(cli, tiny_model_dir, corpus_jsonl, monkeypatch):
    from mlm_tui import learned

    result = train(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 4, "--test-size", 6, "--learning-rate",
                   "1e-2")
    seen: list[np.ndarray] = []
    measure = learned.masked_token_losses

    def spy(*args, **kwargs):  # the real computation, recorded
        seen.append(measure(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(learned, "masked_token_losses", spy)
    code, out, err = cli("runs", "learned", result["run_id"], "--min-count", 1, "--top", 1000, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["run_id", "base", "better", "worse", "probes"]
    assert (data["run_id"], data["base"]) == (result["run_id"], str(tiny_model_dir))
    # The per-position losses are the terms of the run's own perplexities, before and after: same chunks,
    # same masks as training measured.
    before, after = seen
    assert math.exp(float(np.mean(before))) == pytest.approx(result["perplexity_before"], rel=1e-4)
    assert math.exp(float(np.mean(after))) == pytest.approx(result["perplexity_after"], rel=1e-4)
    assert data["better"]  # an untrained tiny model learns the corpus's words at once
    words = data["better"] + data["worse"]
    assert all(set(w) == {"word", "count", "loss_before", "loss_after"} for w in words)
    assert all(w["loss_after"] < w["loss_before"] for w in data["better"])
    assert all(w["loss_after"] > w["loss_before"] for w in data["worse"])
    assert data["probes"]  # the corpus's split words ("hydrolysis", ...) occur in its test split
    for probe in data["probes"]:
        assert list(probe) == ["text", "word", "rank_before", "rank_after", "fills_before", "fills_after"]
        assert "[MASK]" in probe["text"] and probe["word"] not in probe["text"].split()
        assert len(probe["fills_before"]) == len(probe["fills_after"]) == 5

    code, out, err = cli("runs", "learned", result["run_id"], "--min-count", 1, "--top", 3)
    assert code == 0, err
    assert "loss fell most:" in out and out.count("->") >= 3 and "before: " in out

    with open(corpus_jsonl, "a", encoding="utf-8") as fh:  # its test chunks could no longer be rebuilt
        fh.write(json.dumps({"text": "One more document."}) + "\n")
    code, out, err = cli("runs", "learned", result["run_id"])
    assert code == 2
    assert_one_line_error(err, f"changed since run {result['run_id']} read it")


def test_runs_learned_names_a_base_model_that_is_gone(cli, tiny_model_dir, corpus_jsonl):
    base = train(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 1, "--test-size", 4)["run_id"]
    run = train(cli, corpus_jsonl, base, "--max-steps", 1, "--test-size", 4)["run_id"]
    assert cli("runs", "delete", base)[0] == 0
    words = f"the base model of run {run}, {base}, can't be loaded any more: no run called '{base}'"
    code, out, err = cli("runs", "learned", run)
    assert code == 1 and out == ""
    assert_one_line_error(err, words)
    code, out, err = cli("runs", "learned", run, "--json")
    assert code == 1 and words in json.loads(out)["error"]


def test_runs_learned_needs_a_final_model(cli, corpus_jsonl):
    from mlm_tui import runstore

    run = runstore.create_run({"model": "starter", "corpus": str(corpus_jsonl)})
    run.fail("cancelled", "for the test")
    run.release()
    code, _, err = cli("runs", "learned", run.run_id)
    assert code == 2
    assert_one_line_error(err, f"run {run.run_id} has no final model (cancelled)")


def _general_perplexity(model_dir: Path | str, docs: list[str], chunk_size: int) -> float:
    """Perplexity on general text the plain way: the tokenizer's own ids, concatenated and cut into chunks,
    the run's seeded sample of them, masked as a run masks its test set."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_tui.evaluate import EvalSet, perplexity
    from mlm_tui.masking import TokenTables
    from mlm_tui.rundata import GENERAL_CHUNKS, GENERAL_SEED

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = np.array([i for d in docs for i in tokenizer(d)["input_ids"]], dtype=np.int32)
    chunks = ids[: len(ids) // chunk_size * chunk_size].reshape(-1, chunk_size)
    if len(chunks) > GENERAL_CHUNKS:
        chunks = chunks[np.sort(np.random.default_rng(GENERAL_SEED).choice(len(chunks), GENERAL_CHUNKS,
                                                                            replace=False))]
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    with torch.no_grad():
        return perplexity(model, EvalSet.build(chunks, TokenTables.from_tokenizer(tokenizer))).perplexity


def test_every_run_measures_what_it_cost_on_general_english(cli, tiny_model_dir, corpus_jsonl):
    from mlm_tui import runstore
    from mlm_tui.vocab import REFERENCE_NAME, reference_documents

    result = train(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 3, "--test-size", 4, "--learning-rate",
                   "1e-2")
    docs = reference_documents()
    before, after = result["general_perplexity_before"], result["general_perplexity_after"]
    assert before == pytest.approx(_general_perplexity(tiny_model_dir, docs, 32), rel=1e-4)
    assert after == pytest.approx(_general_perplexity(result["model_path"], docs, 32), rel=1e-4)
    assert before != after
    run = runstore.find_run(result["run_id"])
    log = run.log_path.read_text()
    for when in ("before", "after"):
        value = result[f"general_perplexity_{when}"]
        assert f"general perplexity {value:.2f} {when} training, on 32 chunks of {REFERENCE_NAME} (" in log
    code, out, _ = cli("runs", "show", result["run_id"])
    assert code == 0 and f"general    {before:.2f} -> {after:.2f} (" in out and REFERENCE_NAME in out
    code, out, _ = cli("runs", "show", result["run_id"], "--json")
    assert json.loads(out)["general_perplexity_before"] == before


def test_general_text_of_ones_own_or_none(cli, tiny_model_dir, corpus_jsonl, tmp_path):
    general = tmp_path / "general.txt"
    general.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")  # a few chunks: all of them count
    result = train(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 1, "--test-size", 4, "--general",
                   general)
    code, out, err = cli("eval", general, "--model", tiny_model_dir, "--chunk-size", 32, "--json")
    assert code == 0, err
    assert result["general_perplexity_before"] == pytest.approx(json.loads(out)["perplexity"], rel=1e-4)
    code, out, _ = cli("runs", "show", result["run_id"])
    assert f"on {general}" in out

    result = train(cli, corpus_jsonl, tiny_model_dir, "--max-steps", 1, "--test-size", 4, "--no-general")
    assert result["general_perplexity_before"] is None and result["general_perplexity_after"] is None
    code, out, _ = cli("runs", "show", result["run_id"])
    assert "general " not in out
    assert "general perplexity" not in Path(result["model_path"]).parent.joinpath("log.txt").read_text()


def test_a_text_field_applies_to_the_general_corpus_too(cli, tiny_model_dir, tmp_path):
    docs = [f"{s} Item {i}." for i, s in enumerate(SENTENCES * 30)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs, "body")
    general = write_jsonl(tmp_path / "g.jsonl", SENTENCES * 3, "text")
    code, _, err = cli("train", corpus, "--model", tiny_model_dir, *TINY_RUN, "--max-steps", 1,
                       "--text-field", "body", "--general", general)
    assert code == 2
    assert_one_line_error(err, f"--general {general}: {general}: no text field 'body'")
