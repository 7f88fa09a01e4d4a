"""The brake on forgetting (issue 21), now only as runs recorded it: an `auto` run trains at its own rate
to its end (the pullback bounds its cost there), and a run that braked mid-run still says so."""

from __future__ import annotations

import pytest

from mlm_tui import brake, pullback, runstore
from mlm_tui.lifecycle import TrainingRun
from mlm_tui.run_settings import TrainConfig


def test_a_brake_record_reads_as_it_was_written():
    braked = brake.Brake.from_record({"step": 15, "rise": 0.055, "factor": 0.3})
    assert braked == brake.Brake(15, 0.055, 0.3)
    assert brake.Brake.from_record({"step": "15", "rise": 0.1, "factor": 0.3}) is None  # a hand-edited file
    assert brake.Brake.from_record(None) is None
    assert brake.with_brake("why", None) == "why"
    said = "why; cut to 30% at step 15, where general English had risen 5.5% (over 4%)"
    assert brake.with_brake("why", {"step": 15, "rise": 0.055, "factor": 0.3}) == said


def rates(run: runstore.Run) -> dict[int, float]:
    return {row["step"]: row["learning_rate"] for row in run.metrics() if "learning_rate" in row}


def test_an_auto_run_that_forgets_trains_at_its_own_rate_to_the_end(tiny_model_dir, corpus_jsonl,
                                                                     monkeypatch):
    """Any rise of general English is over a budget below zero, and the rate still decays from the peak
    the run chose, step by step, with no reading of general English in between."""
    monkeypatch.setattr(pullback, "BUDGET", -1.0)
    config = TrainConfig(corpus=str(corpus_jsonl), model=str(tiny_model_dir), chunk_size=32, batch_size=4,
                         max_steps=20, logging_steps=1, test_size=8, precision="fp32", device="cpu",
                         bpc_chars=0)
    result = TrainingRun(config).run()
    run = runstore.find_run(result["run_id"])
    peak = result["learning_rate"]
    assert rates(run) == pytest.approx({step: peak * (20 - step) / 20 for step in range(1, 21)})
    assert not [row for row in run.metrics() if "general_perplexity" in row]
    assert "cut to" not in result["learning_rate_reason"] and run.info().learning_rate_brake is None


def test_a_run_that_braked_says_so(finished_run, cli):
    run = runstore.find_run(finished_run)
    found = run.config()["lr_find"]
    run.update_config(lr_find={**found, "brake": {"step": 2, "rise": 0.05, "factor": 0.3}})
    said = "cut to 30% at step 2, where general English had risen 5.0% (over 4%)"
    assert run.info().learning_rate_brake == said  # the Train pane's own line
    assert run.info().learning_rate_reason.endswith(f"; {said}")
    code, shown, _ = cli("runs", "show", finished_run)
    assert code == 0 and said in shown
