"""Issue 13 through the CLI on tiny runs: what a run learned (`runs learned`) and what it cost (perplexity on
general text before and after, in `train`, `runs` and `runs show`)."""

from __future__ import annotations

import json
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


def _split_corpus(tmp_path: Path) -> Path:
    """A corpus folder with its own test split: "zymurgy" only in the training text, "hydrolysis" in 10 test
    documents."""
    folder = tmp_path / "split-corpus"
    folder.mkdir()
    train = [f"{SENTENCES[i % len(SENTENCES)]} Item {i}." for i in range(240)]
    train += [f"Zymurgy is the chemistry of fermentation, note {i}." for i in range(30)]
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", [f"{SENTENCES[i % len(SENTENCES)]} Item {i}." for i in range(60)])
    return folder


def test_runs_learned_lists_the_domain_words_the_run_learned(cli, tiny_model_dir, tmp_path):
    corpus = _split_corpus(tmp_path)
    result = train(cli, corpus, tiny_model_dir, "--max-steps", 6, "--test-size", 6, "--learning-rate", "1e-2")
    code, out, err = cli("runs", "learned", result["run_id"], "--min-count", 3, "--per-word", 8, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["run_id", "base", "model", "summary", "better", "worse", "unchanged", "general",
                          "probes", "per_word", "occurrences", "rows"]
    assert (data["run_id"], data["base"], data["model"]) == (result["run_id"], str(tiny_model_dir),
                                                              "final model")
    summary = data["summary"]
    assert summary["measured"] == summary["better"] + summary["worse"] + summary["unchanged"] > 0
    assert summary["text"].startswith(f"of the corpus's {summary['domain_words']} words most cut into "
                                      f"pieces, {summary['measured']} occur 3+ times in the test split")
    # An untrained tiny model learns the corpus's words at once: "hydrolysis" (10 test documents) is easier,
    # measured on each of its occurrences up to the cap of 8.
    better = {w["word"]: w for w in data["better"]}
    hydrolysis = better["hydrolysis"]
    assert 3 <= hydrolysis["found"] <= 10 and hydrolysis["occurrences"] == min(8, hydrolysis["found"])
    assert hydrolysis["count"] == hydrolysis["occurrences"] and hydrolysis["domain"] is True
    assert hydrolysis["loss_after"] < hydrolysis["loss_before"] and hydrolysis["ci"][1] < 0
    assert hydrolysis["total_change"] == pytest.approx(hydrolysis["change"] * hydrolysis["occurrences"])
    totals = [w["total_change"] for w in data["better"]]
    assert totals == sorted(totals)
    for w in data["better"] + data["worse"] + data["unchanged"] + data["general"]:
        assert w["occurrences"] >= 3 and w["ci"][0] <= w["change"] <= w["ci"][1]
        assert w["word"] != "zymurgy"  # only in the training text: never measured
    assert all(w["kind"] == "general" and not w["domain"] for w in data["general"])
    assert "." in {w["word"] for w in data["general"]}
    assert "." not in {w["word"] for w in data["better"] + data["worse"] + data["unchanged"]}
    assert data["probes"] and "zymurgy" not in {p["word"] for p in data["probes"]}
    for probe in data["probes"]:
        assert "[MASK]" in probe["text"] and probe["word"] not in probe["text"].split()
        assert len(probe["fills_before"]) == len(probe["fills_after"]) == 5
        assert len(probe["piece_ranks_after"]) == len(probe["pieces"]) == probe["text"].count("[MASK]")

    code, out, err = cli("runs", "learned", result["run_id"], "--min-count", 3, "--per-word", 8, "--all",
                         "--json")
    mixed = json.loads(out)
    assert mixed["general"] == [] and mixed["summary"] == summary
    assert "." in {w["word"] for w in mixed["better"] + mixed["worse"] + mixed["unchanged"]}

    code, out, err = cli("runs", "learned", result["run_id"], "--min-count", 3, "--per-word", 8, "--top", 3)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == summary["text"]
    assert "easier beyond noise" in out and "punctuation, markup and general English:" in out
    assert "hydrolysis" in out and "before: " in out

    code, out, err = cli("runs", "show", result["run_id"])  # the summary of the last word test, too
    assert code == 0 and f"learned    {summary['text']} (final model, " in out
    code, out, err = cli("runs", "show", result["run_id"], "--json")
    assert json.loads(out)["learned"]["summary"] == summary

    with open(corpus / "test.jsonl", "a", encoding="utf-8") as fh:  # its test split could not be rebuilt
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
    assert_one_line_error(err, f"run {run.run_id} has no final model (cancelled) and no checkpoint")


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
    assert not any(line.startswith("general ") for line in out.splitlines())  # no "what it cost" line
    assert "general perplexity" not in Path(result["model_path"]).parent.joinpath("log.txt").read_text()


def test_a_text_field_applies_to_the_general_corpus_too(cli, tiny_model_dir, tmp_path):
    docs = [f"{s} Item {i}." for i, s in enumerate(SENTENCES * 30)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs, "body")
    general = write_jsonl(tmp_path / "g.jsonl", SENTENCES * 3, "text")
    code, _, err = cli("train", corpus, "--model", tiny_model_dir, *TINY_RUN, "--max-steps", 1,
                       "--text-field", "body", "--general", general)
    assert code == 2
    assert_one_line_error(err, f"--general {general}: {general}: no text field 'body'")


def test_a_cancelled_run_is_compared_from_its_last_checkpoint(cli, tiny_model_dir, corpus_jsonl):
    from mlm_tui.errors import RunCancelled
    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    def cancel_at_step_2(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 2:
            (trainer.run_record.dir / "cancel").touch()

    config = TrainConfig(corpus=str(corpus_jsonl), model=str(tiny_model_dir), chunk_size=32, batch_size=4,
                         max_steps=8, test_size=4, learning_rate=1e-2, no_general=True)
    trainer = TrainingRun(config, on_event=cancel_at_step_2)
    with pytest.raises(RunCancelled):
        trainer.run()
    run_id = trainer.run_record.run_id
    code, out, err = cli("runs", "learned", run_id, "--min-count", 2, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"] == "last checkpoint, step 2; run cancelled"
    assert data["better"] or data["worse"] or data["unchanged"]
    code, out, err = cli("runs", "learned", run_id, "--min-count", 2)
    assert code == 0 and f"run {run_id} (last checkpoint, step 2; run cancelled)" in out
