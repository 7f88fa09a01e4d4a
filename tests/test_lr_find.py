"""`--learning-rate auto` and `mlm-tui lr-find`: the rule, the throwaway copy, the record and resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mlm_tui import lr_find, runstore
from mlm_tui.cli import build_parser
from mlm_tui.errors import RunCancelled
from mlm_tui.lifecycle import TrainingRun
from mlm_tui.run_settings import TrainConfig, config_from_args, config_from_form, train_argv


def curve(n: int, diverge_at: float | None, noise: float, seed: int = 0) -> tuple[list[float], list[float]]:
    """A range-test curve: a loss of about 3 that falls a little, with seeded per-step noise of +-`noise`,
    then climbs a nat per step from the first rate at or past `diverge_at`."""
    rng = random.Random(seed)
    lrs = lr_find.rates(n)
    losses, climb = [], 0
    for k, lr in enumerate(lrs):
        loss = 3.0 - 0.3 * k / n + rng.uniform(-noise, noise)
        if diverge_at is not None and lr >= diverge_at:
            climb += 1
            loss += 1.0 + climb
        losses.append(loss)
    return lrs, losses


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [15, 100])
def test_the_rule_reads_the_rate_off_where_the_loss_diverges_not_off_the_noise(n, seed):
    lrs, losses = curve(n, diverge_at=3e-3, noise=0.3, seed=seed)
    first = next(k for k, lr in enumerate(lrs) if lr >= 3e-3)
    test = lr_find.suggest(lrs, losses)
    # between the last step under the bar and the first over it, never off in the noise before
    assert lr_find.FRACTION * lrs[first - 1] <= test.suggested <= lr_find.FRACTION * lrs[first]
    assert f"diverged at {test.suggested / lr_find.FRACTION:.1e}" in test.reason
    assert test.curve() == [{"lr": lr, "loss": loss} for lr, loss in zip(lrs, losses, strict=True)]


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8])
def test_the_rate_of_divergence_is_read_between_steps_not_rounded_to_one(where):
    """A clean divergence: flat at 3 nats for six steps, then over the bar (1 nat up) from the seventh, so
    steeply that the loss crossed it `where` of the way from the sixth step to the seventh. Reading whole
    steps put the rate up to 2x off on a 15-step test (issue 21)."""
    lrs = lr_find.rates(15)
    losses = [3.0] * 6 + [3.0 + 1.0 / where + k for k in range(9)]
    test = lr_find.suggest(lrs, losses)
    crossed = lrs[5] * (lrs[6] / lrs[5]) ** where
    assert lrs[5] < crossed < lrs[6]
    assert test.suggested == pytest.approx(lr_find.FRACTION * crossed, rel=1e-9)
    assert "crossed 4.00 and stayed over it" in test.reason


def test_a_curve_that_never_diverges_suggests_a_fraction_of_the_top_rate():
    lrs, losses = curve(20, diverge_at=None, noise=0.3)
    test = lr_find.suggest(lrs, losses)
    assert test.suggested == pytest.approx(lr_find.FRACTION * lrs[-1])
    assert "did not diverge" in test.reason


@pytest.mark.parametrize("seed", range(20))
def test_a_noisy_flat_curve_has_not_diverged(seed):
    """Step-to-step noise of +-0.5 nats, as one batch of a few chunks gives, is no divergence."""
    lrs, losses = curve(15, diverge_at=None, noise=0.5, seed=seed)
    assert lr_find.diverged_at(losses) is None
    assert lr_find.suggest(lrs, losses).suggested == pytest.approx(lr_find.FRACTION * lrs[-1])


@pytest.mark.parametrize("at", [4, 8, 13, 14])
def test_a_single_spike_is_not_a_divergence(at):
    """One step 3 nats up that falls back (a hard batch) is noise; the old one-step rule took it."""
    _, losses = curve(15, diverge_at=None, noise=0.2, seed=at)
    losses[at] += 3.0
    assert lr_find.diverged_at(losses) is None
    second = at + 1 if at < 14 else at - 1  # the last step alone has no next one to confirm it
    losses[second] += 3.0
    assert lr_find.diverged_at(losses) == min(at, second)  # two in a row are a divergence


def test_a_loss_that_is_not_finite_has_diverged_at_once():
    lrs, losses = curve(15, diverge_at=None, noise=0.2)
    losses[9] = float("nan")
    assert lr_find.diverged_at(losses) == 9
    test = lr_find.suggest(lrs, losses)  # anywhere past the step before: the rate of the step before
    assert test.suggested == pytest.approx(lr_find.FRACTION * lrs[8])
    assert "was not finite" in test.reason


def test_a_run_too_short_for_a_test_takes_the_rate_for_its_models_size(cli, tiny_model_dir, corpus_jsonl):
    from transformers import AutoModelForMaskedLM

    assert lr_find.steps_for(150) == 15 and lr_find.steps_for(5000) == lr_find.MAX_STEPS
    assert lr_find.too_short(79) is not None and lr_find.too_short(80) is None
    events: list[dict] = []
    short = TrainingRun(settings(corpus_jsonl, tiny_model_dir, max_steps=10), on_event=events.append)
    result = short.run()
    size = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).num_parameters(exclude_embeddings=True)
    want = min(1e-3, max(lr_find.LR_MIN, lr_find.RULE_RATE * (lr_find.RULE_SIZE / size) ** 0.5))
    assert result["learning_rate"] == pytest.approx(want)
    recorded = short.run_record.config()["lr_find"]
    assert recorded["suggested"] == pytest.approx(want) and recorded["steps"] == 0
    assert "10 steps is too short for a range test" in recorded["reason"]
    assert not [e for e in events if e["event"] == "lr_find"]  # no test ran, and no curve is kept
    assert not (short.run_record.dir / lr_find.CURVE_FILE).exists()
    code, out, _ = cli("runs", "show", short.run_record.run_id)
    assert code == 0 and f"learn rate {want:.2e}, auto: {recorded['reason']}" in out


def test_a_rate_given_is_the_rate_the_run_trains_at(cli, tiny_model_dir, corpus_jsonl):
    events: list[dict] = []
    given = TrainingRun(settings(corpus_jsonl, tiny_model_dir, max_steps=10, learning_rate=3e-4,
                                 warmup_steps=0), on_event=events.append)
    result = given.run()
    assert result["learning_rate"] == 3e-4 and result["learning_rate_reason"] == "given"
    first = next(row for row in given.run_record.metrics() if "learning_rate" in row)
    assert first["learning_rate"] == pytest.approx(3e-4 * (1 - first["step"] / 10))  # linear decay from it
    assert "lr_find" not in given.run_record.config()
    assert not [e for e in events if e["event"] == "lr_find"]
    code, out, _ = cli("runs", "show", given.run_record.run_id)
    assert code == 0 and "learn rate 3.00e-04, given" in out


def test_no_rate_flag_means_auto(cli):
    assert TrainConfig(corpus="c").learning_rate == "auto"
    assert config_from_args(build_parser().parse_args(["train", "c.jsonl"])).learning_rate == "auto"


def test_auto_is_a_value_of_the_setting_in_the_form_the_cli_and_the_record(cli):
    config, errors = config_from_form({"corpus": "c.jsonl", "learning_rate": " Auto "})
    assert errors == {} and config.learning_rate == "auto"
    launched = build_parser().parse_args(train_argv(config))  # the workbench's launcher passes it on
    assert config_from_args(launched) == config
    assert TrainConfig.from_record({"corpus": "c", "learning_rate": "auto"}).learning_rate == "auto"
    _, errors = config_from_form({"corpus": "c.jsonl", "learning_rate": "fast"})
    assert errors == {"learning_rate": "Learn. rate: not a number or auto: 'fast'"}
    code, _, err = cli("train", "c.jsonl", "--learning-rate", "fast")
    assert code == 2 and "not a number or auto: 'fast'" in err


def tiny_batches(tokenizer_dir: Path, n: int):
    import torch
    from transformers import AutoTokenizer

    from mlm_tui.masking import TokenTables

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(1000, 5000, (n * 4, 16), generator=g)
    return (lambda k: data[k * 4 : (k + 1) * 4]), TokenTables.from_tokenizer(tokenizer)


def test_the_test_trains_the_model_it_is_given_and_leaves_the_random_state_as_it_was(tiny_model_dir):
    """The model is the caller's to throw away (a run loads its own again: the auto-run test below); the
    run's dropout draws are untouched."""
    import torch
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches, tables = tiny_batches(tiny_model_dir, 12)
    rng = torch.get_rng_state()
    test = lr_find.range_test(model, batches, tables, steps=12, seed=1, mlm_probability=0.15,
                              whole_word=False, weight_decay=0.01, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before)
    assert 4 <= len(test.lrs) <= 12 and test.lrs == lr_find.rates(12)[: len(test.lrs)]
    assert len(set(test.losses)) == len(test.losses)  # it trained: every step's loss differs


def settings(corpus: Path, model: Path, **overrides: object) -> TrainConfig:
    values = {"corpus": str(corpus), "model": str(model), "chunk_size": 32, "batch_size": 4, "max_steps": 80,
              "logging_steps": 1, "test_size": 8, "precision": "fp32", "device": "cpu", "save_steps": 1000,
              "learning_rate": "auto", **overrides}
    return TrainConfig(**values)


def losses(run: runstore.Run) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in run.metrics() if "loss" in row}


def test_an_auto_run_records_its_test_and_trains_as_a_run_at_the_rate_it_chose(cli, tiny_model_dir,
                                                                                 corpus_jsonl):
    events: list[dict] = []
    auto = TrainingRun(settings(corpus_jsonl, tiny_model_dir, max_steps=10 * lr_find.MIN_STEPS),
                    on_event=events.append)
    auto.run()
    run = auto.run_record
    recorded = run.config()
    assert recorded["learning_rate"] == "auto"  # the setting as given; the rate chosen beside it
    chosen = recorded["lr_find"]["suggested"]
    points = lr_find.read_curve(run.dir)
    assert len(points) == recorded["lr_find"]["steps"] and points == [
        {"lr": e["lr"], "loss": e["loss"]} for e in events if e["event"] == "lr_find"]
    said = [e["message"] for e in events if e["event"] == "status" and "(auto)" in e["message"]]
    assert said == [f"learning rate {chosen:.2e} (auto): {recorded['lr_find']['reason']}"]
    code, out, _ = cli("runs", "show", run.run_id)
    assert code == 0 and f"learn rate {chosen:.2e}, auto: {recorded['lr_find']['reason']}" in out
    fixed = TrainingRun(settings(corpus_jsonl, tiny_model_dir, max_steps=10 * lr_find.MIN_STEPS,
                              learning_rate=chosen))
    fixed.run()
    assert run.info().perplexity_before == fixed.run_record.info().perplexity_before
    want, got = losses(fixed.run_record), losses(run)
    assert len(want) == 10 * lr_find.MIN_STEPS and len(set(want.values())) > 1
    for step in want:  # same weights, masks and dropout draws as if the test had never run
        assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_a_resumed_auto_run_keeps_the_rate_its_test_chose(tiny_model_dir, corpus_jsonl):
    steps = 10 * lr_find.MIN_STEPS
    straight = TrainingRun(settings(corpus_jsonl, tiny_model_dir, max_steps=steps))
    straight.run()
    stop: list[int] = []
    cut = TrainingRun(settings(corpus_jsonl, tiny_model_dir, max_steps=steps),
                   should_stop=lambda: bool(stop),
                   on_event=lambda e: stop.append(1) if e["event"] == "step" and e["step"] == 12 else None)
    with pytest.raises(RunCancelled):
        cut.run()
    run = cut.run_record
    chosen = run.config()["lr_find"]["suggested"]
    curve_written = (run.dir / lr_find.CURVE_FILE).stat().st_mtime_ns
    events: list[dict] = []
    TrainingRun.resuming(run, on_event=events.append).run()
    assert not [e for e in events if e["event"] == "lr_find"]  # no second test
    assert (run.dir / lr_find.CURVE_FILE).stat().st_mtime_ns == curve_written
    said = f"learning rate {chosen:.2e}, chosen when the run started: {run.config()['lr_find']['reason']}"
    assert any(e.get("message") == said for e in events)
    want, got = losses(straight.run_record), losses(run)
    assert sorted(got) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_lr_find_cli_contract(cli, tiny_model_dir, corpus_jsonl):
    runs_before = len(runstore.list_runs()[0])
    code, out, err = cli("lr-find", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", "32",
                         "--batch-size", "4", "--max-steps", "100", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"model", "suggested", "reason", "curve"} and result["model"] == str(tiny_model_dir)
    assert 1 <= len(result["curve"]) <= 10 and all(set(p) == {"lr", "loss"} for p in result["curve"])
    lrs = [p["lr"] for p in result["curve"]]
    assert lrs == sorted(lrs) and lrs[0] == lr_find.LR_MIN
    assert lr_find.LR_MIN * lr_find.FRACTION <= result["suggested"] <= lr_find.LR_MAX
    # half of each batch a step: the test stays a small share of the run it is for
    assert "learning-rate range test: 10 steps from 1e-05 to 0.1 on 2 of the 4 rows of each" in err
    assert len(runstore.list_runs()[0]) == runs_before  # the test alone leaves no run behind
    code, out, err = cli("lr-find", corpus_jsonl, "--model", tiny_model_dir, "--max-steps", "40", "--json")
    assert code == 2
    assert json.loads(out)["error"].startswith("--max-steps 40: a range test takes a tenth of a run of at "
                                               "least 80 steps")


def test_auto_on_a_corpus_too_small_for_a_test_at_its_epochs_trains_at_the_rule_rate(cli, tiny_model_dir,
                                                                                        corpus_jsonl):
    """The steps of an `--epochs` run are known only once the corpus is read, after the run exists: it
    takes the rate for the model's size rather than failing there (issue 19, item 9)."""
    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", "32",
                         "--batch-size", "4", "--epochs", "1", "--test-size", "8", "--learning-rate", "auto",
                         "--no-general",
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert "too short for a range test" in result["learning_rate_reason"]
    assert runstore.find_run(result["run_id"]).status() == "completed"
