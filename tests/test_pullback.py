"""The pullback (issue 21): an `auto` run that ends having forgotten more general English than the budget
keeps weights part of the way back to its start, the largest share within the budget, and says so; a rate
given is kept as trained."""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from mlm_tui import pullback, runstore
from mlm_tui.lifecycle import TrainingRun
from mlm_tui.run_settings import TrainConfig


@pytest.mark.parametrize(("curve", "want"), [
    (lambda a: 0.2 * a, 0.5),  # straight: half the way is at the budget
    (lambda a: 0.4 * a * a, 0.5),  # forgetting that grows faster near the trained end
    (lambda a: 0.2 * a ** 0.5, 0.25),  # and one that grows slower
    (lambda a: 0.101 * a, 0.1 / 0.101),  # just over it: nearly the whole way
    (lambda a: 0.138 * a ** 1.6, 0.818),  # about the shape of the licence texts' run with `starter`
])
def test_the_search_finds_the_largest_share_within_the_budget(curve, want):
    """In STEPS readings, within 2% of the share where the rise meets the budget, never past it."""
    seen: list[float] = []

    def rise_at(alpha: float) -> float:
        seen.append(alpha)
        return curve(alpha)

    alpha, rise = pullback.search(rise_at, curve(1.0), budget=0.1)
    assert len(seen) == pullback.STEPS
    assert want - 0.02 < alpha <= want + 1e-9
    assert rise == curve(alpha) and rise <= 0.1


def test_the_search_goes_back_to_the_start_when_no_share_is_within_the_budget():
    assert pullback.search(lambda a: 0.5 + a, 1.5, budget=0.1) == (0.0, 0.0)


def test_a_pullback_is_recorded_and_said_with_the_rate_and_its_brake():
    done = pullback.Pullback(0.75, 0.09, 0.138)
    assert pullback.Pullback.from_record(done.to_dict()) == done
    assert pullback.Pullback.from_record({"alpha": "0.75", "rise": 0.09, "trained_rise": 0.1}) is None
    plain = {"reason": "the loss diverged at 5e-03", "suggested": 1e-4}
    assert pullback.explained(plain) == "auto: the loss diverged at 5e-03"
    said = pullback.explained({**plain, "pullback": done.to_dict(),
                               "brake": {"step": 15, "rise": 0.05, "factor": 0.3}})
    assert said.startswith("auto: the loss diverged at 5e-03; cut to 30% at step 15")
    assert said.endswith("; final weights 0.75 of the way from the start (general English +9.0%; trained "
                         f"+13.8%, over {pullback.BUDGET:.0%})")


def settings(corpus, model, **overrides: object) -> TrainConfig:
    values = {"corpus": str(corpus), "model": str(model), "chunk_size": 32, "batch_size": 4, "max_steps": 20,
              "logging_steps": 1, "test_size": 8, "precision": "fp32", "device": "cpu", "bpc_chars": 0,
              **overrides}
    return TrainConfig(**values)


def test_an_auto_run_over_the_budget_ends_pulled_back_and_says_so(tiny_model_dir, corpus_jsonl, monkeypatch,
                                                                  cli):
    """With a budget no share meets (below zero), the run's final model is its starting one: it measures
    as it did before training, on its test split and on general English; its record, its reason and
    `runs show` say how far back it went. With a budget any rise meets, the same run keeps its weights."""
    monkeypatch.setattr(pullback, "BUDGET", math.inf)
    kept = TrainingRun(settings(corpus_jsonl, tiny_model_dir)).run()
    assert kept["perplexity_after"] != pytest.approx(kept["perplexity_before"])  # it did learn
    assert "final weights" not in kept["learning_rate_reason"]
    assert "pullback" not in runstore.find_run(kept["run_id"]).config()["lr_find"]

    monkeypatch.setattr(pullback, "BUDGET", -1.0)
    back = TrainingRun(settings(corpus_jsonl, tiny_model_dir)).run()
    assert back["perplexity_after"] == pytest.approx(back["perplexity_before"], rel=1e-6)
    assert back["general_perplexity_after"] == pytest.approx(back["general_perplexity_before"], rel=1e-6)
    run = runstore.find_run(back["run_id"])
    assert run.config()["lr_find"]["pullback"]["alpha"] == 0.0
    assert "; final weights 0.00 of the way from the start" in back["learning_rate_reason"]
    code, shown, _ = cli("runs", "show", run.run_id)
    assert code == 0 and "final weights 0.00 of the way from the start" in shown
    assert run.info().pullback.startswith("final weights 0.00 of the way")  # the Train pane's own line
    assert runstore.find_run(kept["run_id"]).info().pullback is None
    start = load_file(tiny_model_dir / "model.safetensors")
    final = load_file(run.model_path / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert final[name].equal(start[name])


def test_a_given_rate_keeps_its_trained_weights(tiny_model_dir, corpus_jsonl, monkeypatch):
    monkeypatch.setattr(pullback, "BUDGET", -1.0)
    result = TrainingRun(settings(corpus_jsonl, tiny_model_dir, learning_rate=1e-3)).run()
    assert result["perplexity_after"] != pytest.approx(result["perplexity_before"])
    assert result["learning_rate_reason"] == "given"
    assert "lr_find" not in runstore.find_run(result["run_id"]).config()
