"""End-to-end: the loop the course teaches, through the CLI, on a tiny model."""

from __future__ import annotations

import json


def test_fill_json_shape(cli, tiny_model_dir):
    code, out, _ = cli("fill", "The [MASK] sat on the [MASK].", "--model", tiny_model_dir, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["text"] == "The [MASK] sat on the [MASK]."
    assert [m["index"] for m in data["masks"]] == [2, 6]
    for mask in data["masks"]:
        scores = [f["score"] for f in mask["fills"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert all(0 < s < 1 for s in scores)
    first = data["masks"][0]["fills"][0]
    assert first["sequence"].endswith("sat on the [MASK].")


def test_train_then_fill_with_run_id(cli, tiny_model_dir, corpus_jsonl):
    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32,
                         "--max-steps", 4, "--batch-size", 4, "--learning-rate", "1e-3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and result["steps"] == 4
    assert result["train_tokens"] == 4 * 4 * 32
    assert result["perplexity_after"] < result["perplexity_before"]
    code, out, _ = cli("runs", "--json")
    runs = {r["run_id"]: r for r in json.loads(out)["runs"]}
    assert runs[result["run_id"]]["status"] == "completed"
    code, out, _ = cli("fill", "hello [MASK] world", "--model", result["run_id"], "--json")
    assert code == 0 and json.loads(out)["masks"]


def test_model_before_the_subcommand_is_honoured(cli, tiny_model_dir):
    code, out, _ = cli("--model", tiny_model_dir, "fill", "a [MASK] day", "--json")
    assert code == 0
    assert json.loads(out)["model"] == tiny_model_dir.name
