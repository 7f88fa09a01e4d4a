"""How many checkpoints a run keeps (`--keep-checkpoints`, the form's Checkpoints): the latest N and the
best while it trains, none once it completed with 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlm_tui import runstore


def train(cli, corpus: Path, model: Path, *extra: object) -> runstore.Run:
    code, out, err = cli("train", corpus, "--model", model, "--chunk-size", 32, "--batch-size", 4,
                         "--test-size", 4, "--max-steps", 4, "--save-steps", 1, "--no-general", "--json",
                         *extra)
    assert code == 0, err
    run = runstore.find_run(json.loads(out)["run_id"])
    assert run is not None
    return run


# Checkpoints at steps 1, 2 and 3; the last step writes the final model instead.
@pytest.mark.parametrize(("keep", "kept"), [(None, [3]), ("2", [2, 3]), ("0", [])])
def test_a_run_keeps_the_checkpoints_it_was_asked_to(cli, tiny_model_dir: Path, corpus_jsonl: Path,
                                                     keep: str | None, kept: list[int]) -> None:
    run = train(cli, corpus_jsonl, tiny_model_dir, *(["--keep-checkpoints", keep] if keep else []))
    assert run.checkpoint_steps() == kept  # no eval steps: the best is not another checkpoint
    assert run.info().model_path is not None  # the final model stays whatever is kept
    if not kept:
        assert run.best_checkpoint_step() is None


def test_the_best_checkpoint_is_kept_beside_the_latest(cli, tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    run = train(cli, corpus_jsonl, tiny_model_dir, "--eval-steps", 1, "--learning-rate", "1e-3")
    best = run.best_checkpoint_step()
    assert best is not None and run.checkpoint_steps() == sorted({best, 3})


def test_a_bad_count_is_refused_by_its_flag(cli, tiny_model_dir: Path, corpus_jsonl: Path) -> None:
    code, _, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--keep-checkpoints", "-1")
    assert code == 2 and "--keep-checkpoints" in err
