"""The brake on forgetting (issue 21): an `auto` run whose general English rose too much by a tenth of its
steps trains on at a fraction of its rate, says so, and keeps it through a resume; a rate given is never
braked."""

from __future__ import annotations

import math

import pytest

from mlm_tui import brake, runstore
from mlm_tui.errors import RunCancelled
from mlm_tui.lifecycle import TrainingRun
from mlm_tui.run_settings import TrainConfig


def test_the_brake_is_read_at_a_tenth_of_the_run_against_its_bar():
    assert brake.check_step(150) == 15 and brake.check_step(20) == 2
    assert brake.check_step(4) is None  # a tenth of it rounds to no step
    assert brake.judge(15, 50.0, 50.0 * (1 + brake.RISE) - 1e-9) is None  # at the bar: on course
    assert brake.judge(15, 50.0, 45.0) is None  # general English got better
    braked = brake.judge(15, 50.0, 55.0)
    assert braked == brake.Brake(15, pytest.approx(0.1), brake.FACTOR)
    assert brake.Brake.from_record(braked.to_dict()) == braked
    assert brake.Brake.from_record({"step": "15", "rise": 0.1, "factor": 0.3}) is None  # a hand-edited file
    assert brake.with_brake("why", None) == "why"
    said = (f"why; cut to {brake.FACTOR:.0%} at step 15, where general English had risen 10.0% "
            f"(over {brake.RISE:.0%})")
    assert brake.with_brake("why", braked.to_dict()) == said


def settings(corpus, model, **overrides: object) -> TrainConfig:
    values = {"corpus": str(corpus), "model": str(model), "chunk_size": 32, "batch_size": 4, "max_steps": 20,
              "logging_steps": 1, "test_size": 8, "precision": "fp32", "device": "cpu", "bpc_chars": 0,
              **overrides}
    return TrainConfig(**values)


def rates(run: runstore.Run) -> dict[int, float]:
    return {row["step"]: row["learning_rate"] for row in run.metrics() if "learning_rate" in row}


def test_an_auto_run_that_forgets_brakes_once_and_a_resume_keeps_it(tiny_model_dir, corpus_jsonl, monkeypatch,
                                                                     cli):
    """Against a run that could not brake (a bar no rise reaches), a run that must (any rise over a bar
    below zero) trains at the same rates up to the check and at FACTOR of them after it; its reason says
    so wherever the rate is shown; stopped after the check and resumed, it keeps the brake."""
    monkeypatch.setattr(brake, "RISE", math.inf)
    free = TrainingRun(settings(corpus_jsonl, tiny_model_dir)).run()
    monkeypatch.setattr(brake, "RISE", -1.0)
    braked = TrainingRun(settings(corpus_jsonl, tiny_model_dir)).run()
    want, got = rates(runstore.find_run(free["run_id"])), rates(runstore.find_run(braked["run_id"]))
    assert sorted(want) == sorted(got) == list(range(1, 21))
    for step in want:  # the rate of step 3 is set after step 2's check
        assert got[step] == pytest.approx(want[step] * (brake.FACTOR if step > 2 else 1.0)), step
    assert free["learning_rate"] == braked["learning_rate"]  # the peak the run chose is the one it reports
    assert "cut to" not in free["learning_rate_reason"]
    said = f"; cut to {brake.FACTOR:.0%} at step 2, where general English had risen"
    assert said in braked["learning_rate_reason"]
    run = runstore.find_run(braked["run_id"])
    code, shown, _ = cli("runs", "show", run.run_id)
    assert code == 0 and f"cut to {brake.FACTOR:.0%} at step 2" in shown
    assert run.info().learning_rate_brake.startswith(f"cut to {brake.FACTOR:.0%} at step 2")  # its own line
    assert runstore.find_run(free["run_id"]).info().learning_rate_brake is None
    assert [row["step"] for row in run.metrics() if "general_perplexity" in row] == [2]

    stop: list[int] = []
    cut = TrainingRun(settings(corpus_jsonl, tiny_model_dir, save_steps=4), should_stop=lambda: bool(stop),
                      on_event=lambda e: stop.append(1) if e["event"] == "step" and e["step"] == 5 else None)
    with pytest.raises(RunCancelled, match="cancelled at step 5"):
        cut.run()
    monkeypatch.setattr(brake, "RISE", math.inf)  # the resumed steps keep the brake the checkpoint holds
    resumed = TrainingRun.resuming(cut.run_record).run()
    assert rates(cut.run_record) == pytest.approx(got)
    assert f"cut to {brake.FACTOR:.0%} at step 2" in resumed["learning_rate_reason"]


def test_a_given_rate_is_never_braked(tiny_model_dir, corpus_jsonl, monkeypatch):
    monkeypatch.setattr(brake, "RISE", -1.0)
    result = TrainingRun(settings(corpus_jsonl, tiny_model_dir, learning_rate=1e-3)).run()
    run = runstore.find_run(result["run_id"])
    assert rates(run) == pytest.approx({step: 1e-3 * (20 - step) / 20 for step in range(1, 21)})
    assert result["learning_rate_reason"] == "given"
    assert not [row for row in run.metrics() if "general_perplexity" in row]
