"""The downstream probe (issue 23) on a tiny real model: its figures against a direct scikit-learn
computation, its intervals against a known truth, its feature cache, the fine-tune method, its errors,
`runs probe` and the workbench's probe screen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cancelled_run, write_jsonl
from pilot import settle, wait_for
from test_cli_contract import assert_one_line_error

# Three topics with their own words, so that even a tiny random model's features separate them somewhat.
TOPICS = {
    "bio": ["enzyme", "protein", "cell", "gene", "tissue", "membrane"],
    "law": ["court", "contract", "plaintiff", "statute", "verdict", "appeal"],
    "code": ["function", "compiler", "variable", "pointer", "module", "thread"],
}
FILLER = ["the", "a", "of", "and", "in", "with", "for", "on"]
# The fine-tune probe of the tiny random model: its default rate (5e-5, for a pretrained encoder) barely
# moves a 2-layer model whose every weight is random; this rate learns the topics in a few dozen steps.
TINY_RATE = "3e-3"


def labelled_rows(n_per_class: int, seed: int = 0, label_kind=str) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i, (topic, words) in enumerate(TOPICS.items()):
        for _ in range(n_per_class):
            text = " ".join(rng.choice(words + FILLER, size=int(rng.integers(6, 20))))
            rows.append({"text": text, "topic": topic if label_kind is str else i})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return path


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "topics.jsonl", labelled_rows(30))


def fails(code: int, err: str, words: str) -> None:
    """A usage error: exit 2, one line that says it."""
    assert code == 2, err
    assert_one_line_error(err, words)


def probe_json(cli, *args) -> dict:
    code, out, err = cli("probe", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_figures_match_a_direct_scikit_learn_computation(cli, tiny_model_dir, labelled):
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from transformers import AutoModel, AutoTokenizer

    from mlm_tui import probe

    data = probe_json(cli, labelled, "--label-field", "topic", "--model", tiny_model_dir)
    assert list(data) == ["corpus", "text_field", "label_field", "method", "features", "split", "train",
                          "test", "classes", "left_out", "majority", "models", "difference"]
    assert data["split"] == "stratified" and data["train"] + data["test"] == 90 and data["test"] == 18
    assert [c["label"] for c in data["classes"]] == ["bio", "code", "law"]
    assert all(c["test"] == 6 for c in data["classes"])  # stratified: 20% of each class
    assert data["difference"] is None  # one model
    [model] = data["models"]

    # The same split, features computed one text at a time with plain transformers, the regularisation
    # chosen by scikit-learn's own grid search over the same folds, then scikit-learn's metrics.
    prepared = probe.prepare(probe.read_labelled(str(labelled), "text", "topic"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoder = AutoModel.from_pretrained(tiny_model_dir)

    def pooled(text: str) -> np.ndarray:
        batch = tokenizer(text, return_tensors="pt", truncation=True, max_length=probe.MAX_LENGTH)
        with torch.no_grad():
            return encoder(**batch).last_hidden_state[0].mean(0).numpy()

    x_train = np.stack([pooled(t) for t in prepared.train.texts])
    x_test = np.stack([pooled(t) for t in prepared.test.texts])
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                          {"logisticregression__C": list(probe.CS)},
                          cv=StratifiedKFold(5, shuffle=True, random_state=probe.SEED), scoring="accuracy")
    search.fit(x_train, prepared.y_train)
    assert model["C"] == search.best_params_["logisticregression__C"]
    pred = search.predict(x_test)
    assert model["accuracy"] == pytest.approx(accuracy_score(prepared.y_test, pred))
    assert model["macro_f1"] == pytest.approx(f1_score(prepared.y_test, pred, average="macro"))
    per_class = f1_score(prepared.y_test, pred, average=None)
    assert [c["f1"] for c in model["per_class"]] == pytest.approx(list(per_class))
    lo, hi = model["accuracy_ci"]
    assert lo <= model["accuracy"] <= hi
    top = np.bincount(prepared.y_train).argmax()
    assert data["majority"]["accuracy"] == pytest.approx(float(np.mean(prepared.y_test == top)))


def test_two_models_give_a_paired_difference_and_cached_features_equal_fresh(cli, tiny_model_dir, labelled,
                                                                             tmp_path):
    import shutil

    from mlm_tui import probe
    from mlm_tui.models import load_model

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    first = probe_json(cli, labelled, "--label-field", "topic", "--model", tiny_model_dir, "--model", other)
    assert [m["model"] for m in first["models"]] == [str(tiny_model_dir), str(other)]
    diff = first["difference"]
    assert set(diff) >= {"accuracy", "ci", "verdict"}
    # The same weights: the same predictions, a difference of exactly nothing, and the verdict says so.
    assert diff["accuracy"] == 0 and diff["ci"] == [0, 0]
    assert diff["verdict"].startswith("no difference beyond noise")
    again = probe_json(cli, labelled, "--label-field", "topic", "--model", tiny_model_dir, "--model", other)
    assert [m["cached_features"] for m in again["models"]] == [True, True]
    assert again["models"] == [{**m, "cached_features": True} for m in first["models"]]

    handle = load_model(str(tiny_model_dir))
    texts = [r["text"] for r in labelled_rows(5)]
    fresh, cached = probe.features(handle, texts)
    assert not cached
    served, cached = probe.features(handle, texts)
    assert cached and np.array_equal(served, fresh)
    direct = probe.extract(handle.model, handle.tokenizer, texts, batch_size=1)  # one a batch: no padding
    np.testing.assert_allclose(fresh, direct, rtol=1e-4, atol=1e-5)


def test_intervals_cover_the_truth_on_a_synthetic_task():
    """Predictions right with a known probability: the 95% intervals should hold it about 95 times in 100,
    and the paired difference of two equally good models should hold zero as often."""
    from mlm_tui.probe import bootstrap, interval

    rng = np.random.default_rng(1)
    trials, n, k, p = 100, 300, 3, 0.7
    covered = covered_diff = 0
    for t in range(trials):
        y = rng.integers(0, k, n)
        preds = [np.where(rng.random(n) < p, y, (y + rng.integers(1, k, n)) % k) for _ in range(2)]
        boot = bootstrap(y, preds, k, n=400, seed=t)
        lo, hi = interval(boot["accuracy"][0])
        covered += lo <= p <= hi
        lo, hi = interval(boot["accuracy"][1] - boot["accuracy"][0])
        covered_diff += lo <= 0 <= hi
    assert 0.88 <= covered / trials <= 1.0
    assert 0.88 <= covered_diff / trials <= 1.0


def test_the_corpus_own_splits_are_used_and_small_classes_named(cli, tiny_model_dir, tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    train = labelled_rows(20) + [{"text": "a rare one about boats", "topic": "boats"}] * 3
    write_rows(folder / "train.jsonl", train)
    write_rows(folder / "test.jsonl", [*labelled_rows(4, seed=9), {"text": "boats again", "topic": "boats"}])
    code, out, err = cli("probe", folder, "--label-field", "topic", "--model", tiny_model_dir, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["split"] == "corpus" and data["train"] == 60 and data["test"] == 12
    assert data["left_out"] == [{"label": "boats", "train": 3, "test": 1}]
    code, out, err = cli("probe", folder, "--label-field", "topic", "--model", tiny_model_dir)
    assert code == 0, err
    assert "left out class 'boats': 3 train / 1 test" in err
    assert "no difference" not in out and "majority class" in out


def test_csv_and_parquet_read_as_json_lines_do(cli, tiny_model_dir, tmp_path):
    """The same rows, labels as whole numbers, in each format the tool reads: the same probe."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pa_parquet

    rows = labelled_rows(15, label_kind=int)
    table = pa.Table.from_pylist(rows)
    pa_csv.write_csv(table, tmp_path / "t.csv")
    pa_parquet.write_table(table, tmp_path / "t.parquet")
    corpora = (write_rows(tmp_path / "t.jsonl", rows), tmp_path / "t.csv", tmp_path / "t.parquet")
    results = [probe_json(cli, c, "--label-field", "topic", "--model", tiny_model_dir) for c in corpora]
    assert [c["label"] for c in results[0]["classes"]] == [0, 1, 2]
    for r in results:
        r["corpus"] = None
        r["models"][0].pop("cached_features")  # the same texts: the second and third read the cache
    assert results[1] == results[0] and results[2] == results[0]


HUB_README = """---
dataset_info:
  features:
  - name: text
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': bio
          '1': law
          '2': code
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train.jsonl
  - split: validation
    path: data/validation.jsonl
---
"""


def test_a_dataset_in_hub_layout_gives_its_class_names_and_its_validation_split(cli, tiny_model_dir,
                                                                                 tmp_path):
    (tmp_path / "README.md").write_text(HUB_README)
    (tmp_path / "data").mkdir()
    rows = labelled_rows(12, label_kind=int)
    write_rows(tmp_path / "data" / "train.jsonl", [{"text": r["text"], "label": r["topic"]} for r in rows])
    write_rows(tmp_path / "data" / "validation.jsonl",
               [{"text": r["text"], "label": r["topic"]} for r in labelled_rows(2, seed=5, label_kind=int)])
    data = probe_json(cli, tmp_path, "--train-split", "train", "--label-field", "label", "--model",
                      tiny_model_dir)
    assert data["split"] == "corpus" and (data["train"], data["test"]) == (36, 6)
    assert [c["label"] for c in data["classes"]] == ["bio", "code", "law"]


SUBSETS_README = """---
configs:
- config_name: plain
  data_files:
  - split: train
    path: plain/train.jsonl
- config_name: topics
  data_files:
  - split: train
    path: topics/train.jsonl
---
"""


def test_runs_probe_reads_the_runs_own_subset_of_a_dataset(cli, tiny_model_dir, tmp_path):
    """The run's corpus as the run read it: its subset, not the dataset's first."""
    (tmp_path / "README.md").write_text(SUBSETS_README)
    for subset in ("plain", "topics"):
        (tmp_path / subset).mkdir()
    write_jsonl(tmp_path / "plain" / "train.jsonl", [r["text"] for r in labelled_rows(10)])
    write_rows(tmp_path / "topics" / "train.jsonl", labelled_rows(20))
    code, out, err = cli("train", tmp_path, "--subset", "topics", "--model", tiny_model_dir, "--chunk-size",
                         32, "--batch-size", 4, "--test-size", 4, "--max-steps", 1, "--json")
    assert code == 0, err
    data = json.loads(cli("runs", "probe", json.loads(out)["run_id"], "--label-field", "topic", "--json")[1])
    assert data["train"] + data["test"] == 60


def test_max_train_caps_the_training_part_stratified(cli, tiny_model_dir, labelled):
    data = probe_json(cli, labelled, "--label-field", "topic", "--model", tiny_model_dir, "--max-train", 30)
    assert data["train"] == 30 and all(c["train"] == 10 for c in data["classes"])


@pytest.mark.parametrize(("rows", "args", "message"), [
    (labelled_rows(10), ["--label-field", "section"], "no label column 'section' (other columns: topic)"),
    ([{"text": f"t {i}", "topic": "one"} for i in range(20)], ["--label-field", "topic"], "one class only"),
    ([{"text": f"t {i}", "topic": i / 3} for i in range(20)], ["--label-field", "topic"], "decimal numbers"),
    ([{"text": f"t {i}", "topic": None} for i in range(20)], ["--label-field", "topic"], "is empty"),
    ([{"text": f"t {i}", "topic": i % 2} for i in range(20)] + [{"text": "x", "topic": "b"}],
     ["--label-field", "topic"], "could not read it as json"),
    ([{"text": f"t {i}", "topic": str(i % 5)} for i in range(12)], ["--label-field", "topic"],
     "nothing left to probe"),
])
def test_bad_labels_are_one_line_and_exit_2_writing_nothing(cli, tiny_model_dir, tmp_path, rows, args,
                                                            message):
    from mlm_tui.home import root

    corpus = write_rows(tmp_path / "bad.jsonl", rows)
    cache = root() / "cache" / "features"
    before = sorted(cache.iterdir()) if cache.exists() else []
    code, out, err = cli("probe", corpus, *args, "--model", tiny_model_dir)
    fails(code, err, message)
    code, out, err = cli("probe", corpus, *args, "--model", tiny_model_dir, "--json")
    assert code == 2 and message in json.loads(out)["error"]
    assert (sorted(cache.iterdir()) if cache.exists() else []) == before


def test_a_fine_tune_probe_beats_the_majority_on_the_linear_probes_test_part(cli, tiny_model_dir, tmp_path):
    from mlm_tui import probe

    corpus = write_rows(tmp_path / "topics.jsonl", labelled_rows(60))
    args = ("--label-field", "topic", "--model", tiny_model_dir, "--method", "finetune", "--steps", 60,
            "--learning-rate", TINY_RATE)
    data = probe_json(cli, corpus, *args)
    assert list(data) == ["corpus", "text_field", "label_field", "method", "finetune", "split", "train",
                          "test", "classes", "left_out", "majority", "models", "difference"]
    assert data["method"] == "finetune"
    assert data["finetune"] == {"steps": 60, "batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 6,
                                "weight_decay": probe.FINETUNE_WEIGHT_DECAY, "max_length": probe.MAX_LENGTH,
                                "seed": probe.SEED}
    [model] = data["models"]
    assert model["accuracy_ci"][0] > data["majority"]["accuracy"]  # beyond noise, not by luck
    assert model["macro_f1"] > data["majority"]["macro_f1"]
    assert [c["label"] for c in model["per_class"]] == ["bio", "code", "law"]
    assert model["train_loss"] < 1.0  # below a guess among three (ln 3 = 1.10): it learned
    linear = probe_json(cli, corpus, "--label-field", "topic", "--model", tiny_model_dir)
    assert {k: linear[k] for k in ("split", "train", "test", "classes", "majority")} == \
        {k: data[k] for k in ("split", "train", "test", "classes", "majority")}
    # The same test examples, in the same order, whichever method scores them.
    reports = [probe.run_probe(str(corpus), "topic", [(str(tiny_model_dir), "m", "m")], method=method,
                               steps=2, device="cpu") for method in probe.METHODS]
    assert reports[0].data.test.texts == reports[1].data.test.texts
    assert np.array_equal(reports[0].data.y_test, reports[1].data.y_test)
    code, out, err = cli("probe", corpus, *args)
    assert code == 0, err
    assert "fine-tuned: a classification head on each model, all weights trained 60 steps" in out
    assert "fine-tuning" in err and "60/60 steps" in err  # what it does, then its progress


def test_fine_tune_probes_of_the_same_weights_agree_exactly(cli, tiny_model_dir, labelled, tmp_path):
    """Seeded: two fine-tunes of the same weights predict the same, so their difference is nothing."""
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    data = probe_json(cli, labelled, "--label-field", "topic", "--model", tiny_model_dir, "--model", other,
                      "--method", "finetune", "--steps", 5, "--learning-rate", TINY_RATE)
    first, second = data["models"]
    assert first["per_class"] == second["per_class"] and first["train_loss"] == second["train_loss"]
    assert data["difference"]["accuracy"] == 0 and data["difference"]["ci"] == [0, 0]
    assert data["difference"]["verdict"].startswith("no difference beyond noise")


def test_a_fine_tune_probe_reports_its_steps_and_stops_when_cancelled(tiny_model_dir, labelled):
    from mlm_tui import probe
    from mlm_tui.errors import RunCancelled

    seen: list[tuple[int, int, str]] = []
    with pytest.raises(RunCancelled):
        probe.run_probe(str(labelled), "topic", [(str(tiny_model_dir), "m", "m")], method="finetune",
                        steps=50, device="cpu", progress=lambda *event: seen.append(event),
                        cancelled=lambda: len(seen) >= 3)
    assert seen == [(1, 50, "steps"), (2, 50, "steps"), (3, 50, "steps")]  # stopped at the next step


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "finetune", "--steps", "0"], "argument --steps: must be at least 1 (got 0)"),
    (["--steps", "10"], "--steps: only the fine-tune probe trains; add --method finetune"),
    (["--learning-rate", "1e-3"], "--learning-rate: only the fine-tune probe trains"),
    (["--method", "finetune", "--learning-rate", "0"], "--learning-rate must be a number above 0"),
    (["--method", "lasso"], "argument --method: invalid choice: 'lasso'"),
])
def test_bad_fine_tune_settings_are_one_line_and_exit_2(cli, tiny_model_dir, labelled, args, message):
    code, _, err = cli("probe", labelled, "--label-field", "topic", "--model", tiny_model_dir, *args)
    fails(code, err, message)
    code, _, err = cli("runs", "probe", "20990101-000000-abcd", "--label-field", "topic", *args)
    fails(code, err, message)  # refused before the run is looked for


def test_plain_text_and_a_missing_label_flag_are_usage_errors(cli, tiny_model_dir, tmp_path):
    text = tmp_path / "c.txt"
    text.write_text("one line\nanother\n")
    code, _, err = cli("probe", text, "--label-field", "topic", "--model", tiny_model_dir)
    fails(code, err, "plain text has no label column")
    code, _, err = cli("probe", text)
    fails(code, err, "--label-field")


def test_runs_probe_compares_a_runs_base_and_final_model_on_its_own_corpus(cli, tiny_model_dir, labelled,
                                                                            tmp_path):
    code, out, err = cli("train", labelled, "--model", tiny_model_dir, "--chunk-size", 32, "--batch-size", 4,
                         "--test-size", 4, "--max-steps", 2, "--precision", "fp32", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    data = json.loads(cli("runs", "probe", run_id, "--label-field", "topic", "--json")[1])
    assert data["corpus"] == str(labelled)
    base, adapted = data["models"]
    assert (base["model"], adapted["model"]) == (str(tiny_model_dir), run_id)  # named as the run names them
    assert data["difference"]["of"] == "adapted - base"
    assert data["difference"]["accuracy"] == pytest.approx(adapted["accuracy"] - base["accuracy"])
    code, out, err = cli("runs", "probe", run_id, "--label-field", "topic")
    assert code == 0, err
    assert "difference (adapted - base):" in out
    tuned = json.loads(cli("runs", "probe", run_id, "--label-field", "topic", "--method", "finetune",
                           "--steps", 3, "--json")[1])
    assert tuned["method"] == "finetune" and tuned["finetune"]["steps"] == 3
    assert [m["model"] for m in tuned["models"]] == [str(tiny_model_dir), run_id]
    assert tuned["difference"]["of"] == "adapted - base" and tuned["test"] == data["test"]
    # Another corpus, given: the run's text field, the corpus's labels.
    other = write_rows(tmp_path / "other.jsonl", labelled_rows(12, seed=3))
    data = json.loads(cli("runs", "probe", run_id, other, "--label-field", "topic", "--json")[1])
    assert data["corpus"] == str(other) and data["train"] + data["test"] == 36
    unlabelled = write_jsonl(tmp_path / "plain.jsonl", ["no labels here"] * 10)
    code, out, err = cli("runs", "probe", run_id, unlabelled, "--label-field", "topic")
    fails(code, err, "no label column 'topic'")
    code, out, err = cli("runs", "probe", "20990101-000000-abcd", "--label-field", "topic")
    fails(code, err, "no run called")


def test_runs_probe_of_a_cancelled_run_takes_its_last_checkpoint(cli, tiny_model_dir, labelled):
    """As `runs learned` does (`runstore.model_refs`): a run that ended without a final model is compared
    by its last checkpoint, and the report says so."""
    run = cancelled_run(tiny_model_dir, labelled)
    code, out, err = cli("runs", "probe", run.run_id, "--label-field", "topic", "--json")
    assert code == 0, err
    step = run.checkpoint_steps()[-1]
    adapted = json.loads(out)["models"][1]["model"]
    assert adapted == f"{run.run_id} (last checkpoint, step {step}; run cancelled)"


@pytest.mark.anyio
async def test_the_workbench_probes_a_run_from_the_runs_table(cli, tiny_model_dir, labelled, tmp_path,
                                                            monkeypatch):
    from textual.widgets import OptionList

    from mlm_tui.app.probe_screen import ProbeScreen
    from mlm_tui.app.workbench import WorkbenchApp

    monkeypatch.setenv("MLM_TUI_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("mlm_tui.probe.STEPS", 3)  # the workbench's fine-tune: its default steps, fewer
    code, out, err = cli("train", labelled, "--model", tiny_model_dir, "--chunk-size", 32, "--batch-size", 4,
                         "--test-size", 4, "--max-steps", 2, "--precision", "fp32", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    expected = json.loads(cli("runs", "probe", run_id, "--label-field", "topic", "--json")[1])
    app = WorkbenchApp(model=str(tiny_model_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)
        await wait_for(lambda: app.query_one("#runs").row_count == 1, 10, pilot)
        app.query_one("#runs").focus()
        await pilot.press("p")
        # The label-column picker, with the corpus's columns but its text column.
        await wait_for(lambda: bool(app.screen.query(OptionList)), 20, pilot)
        picker = app.screen.query_one(OptionList)
        assert [str(picker.get_option_at_index(i).prompt) for i in range(picker.option_count)] == ["topic"]
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ProbeScreen) and "F1 per class" in _body(app), 60,
                       pilot)
        text = _body(app)
        assert expected["difference"]["verdict"] in text.replace("\n", " ")
        assert all(c["label"] in text for c in expected["classes"])
        # m: the fine-tune instead, at once on the same label column, its steps as the picker names them.
        await pilot.press("m")
        await wait_for(lambda: bool(app.screen.query(OptionList)), 20, pilot)
        picker = app.screen.query_one(OptionList)
        choices = [str(picker.get_option_at_index(i).prompt) for i in range(picker.option_count)]
        assert choices[0].startswith("linear") and "trained 3 steps" in choices[1]
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, ProbeScreen) and "fine-tuned:" in _body(app), 60, pilot)
        text = _body(app).replace("\n", " ")
        assert "trained 3 steps" in text and "difference (adapted - base):" in text
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, ProbeScreen)


def _body(app) -> str:
    from rich.console import Console

    console = Console(width=200)
    with console.capture() as captured:
        console.print(app.screen.query_one("#probe-body").content)
    return captured.get()
