"""Where users already are: model cards, export and push, hub datasets, trackers, several processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SENTENCES, write_jsonl

from mlm_tui import runstore

FAST = ["--chunk-size", "32", "--batch-size", "4", "--test-size", "8"]


@pytest.fixture(scope="module")
def odd_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus whose name YAML and a terminal must both escape: a colon, quotes, a newline."""
    folder = tmp_path_factory.mktemp("corpora")
    docs = [f"{SENTENCES[i % len(SENTENCES)]} Item {i}." for i in range(200)]
    return write_jsonl(folder / 'notes: "legal"\n- x.jsonl', docs)


@pytest.fixture(scope="module")
def completed_run(odd_corpus: Path, tiny_model_dir: Path) -> runstore.Run:
    """The run this fixture trained: the one new in the store (the newest id in a shared store may be
    another test's run of the same second)."""
    from mlm_tui.cli import main

    before = {run.run_id for run in runstore.list_runs()[0]}
    assert main(["train", str(odd_corpus), "--model", str(tiny_model_dir), *FAST, "--max-steps", "2",
                 "--whole-word-mask"]) == 0
    (run,) = [run for run in runstore.list_runs()[0] if run.run_id not in before]
    return run


def test_every_final_model_has_a_card_the_hub_library_reads_back(completed_run, odd_corpus, tiny_model_dir):
    from huggingface_hub import ModelCard

    info = completed_run.info()
    card = ModelCard.load(completed_run.model_path / "README.md")
    data = card.data.to_dict()
    assert data["tags"] == ["fill-mask", "domain-adaptation", "mlm-tui"]
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "fill-mask"
    assert "base_model" not in data and "datasets" not in data  # a local model and a local corpus
    (result,) = card.data.eval_results
    assert result.dataset_name == str(odd_corpus)  # the name with its colon, quotes and newline, intact
    assert result.metric_value == pytest.approx(info.perplexity_after, abs=1e-4)
    assert f"| {info.perplexity_before:.2f} | {info.perplexity_after:.2f}" in card.text
    assert info.bpc_before and info.bpc_after  # and bits per character, which compare across vocabularies
    assert f"| {info.bpc_before:.3f} | {info.bpc_after:.3f}" in card.text
    assert "\\n- x.jsonl" in card.text  # the newline escaped in the Markdown: it forges no list item
    assert "--whole-word-mask" in card.text and f"--model={tiny_model_dir}" in card.text
    assert f"transformers {info.versions['transformers']}" in card.text


def test_a_hub_model_and_dataset_are_named_in_the_metadata(completed_run, monkeypatch):
    from dataclasses import replace

    from mlm_tui import modelcard

    info = completed_run.info()
    hub = replace(info, config=replace(info.config, model="distilbert-base-uncased", corpus="wikitext"))
    data = modelcard.build_card(hub).data.to_dict()
    assert data["base_model"] == "distilbert-base-uncased" and data["datasets"] == ["wikitext"]


def test_export_copies_the_final_model_and_it_loads(cli, completed_run, tmp_path):
    from mlm_tui.models import load_model

    dest = tmp_path / "out"
    code, out, err = cli("runs", "export", completed_run.run_id, dest, "--json")
    assert code == 0, err
    assert json.loads(out)["path"] == str(dest)
    names = {p.name for p in dest.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json", "README.md"} <= names
    assert load_model(str(dest)).fill("the [MASK] is here.", top_k=1).masks
    code, _, err = cli("runs", "export", completed_run.run_id, dest)
    assert code == 2 and err.count("\n") == 1 and "not an empty folder" in err


def test_export_writes_a_card_for_a_run_from_before_cards(cli, completed_run, tmp_path):
    (completed_run.model_path / "README.md").unlink()
    code, _, err = cli("runs", "export", completed_run.run_id, tmp_path / "out")
    assert code == 0, err
    card = (completed_run.model_path / "README.md").read_text()
    assert (tmp_path / "out" / "README.md").read_text() == card


def test_export_and_push_of_a_run_without_a_model_say_so(cli, tiny_model_dir, odd_corpus, tmp_path):
    run = runstore.create_run({"corpus": str(odd_corpus), "model": "starter"})
    run.fail("failed", "it broke")
    run.release()
    for argv in (("export", run.run_id, tmp_path / "x"), ("push", run.run_id, "me/model")):
        code, _, err = cli("runs", *argv)
        assert code == 2 and "has no final model (status: failed)" in err and err.count("\n") == 1


def test_push_offline_or_without_a_token_fails_at_once(cli, completed_run, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = cli("runs", "push", completed_run.run_id, "me/model", "--json")
    assert code == 2 and "HF_HUB_OFFLINE is set" in json.loads(out)["error"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored token either
    code, _, err = cli("runs", "push", completed_run.run_id, "me/model")
    assert code == 2 and "no Hugging Face token" in err and err.count("\n") == 1


def test_push_sends_the_final_model_folder_with_the_plain_library_calls(completed_run, monkeypatch):
    """The upload cannot run here: the calls it makes are recorded instead, and the folder checked."""
    import huggingface_hub

    from mlm_tui import modelcard

    calls = []
    monkeypatch.setattr(modelcard, "check_push", lambda: "hf_token")
    def create_repo(repo_id: str, **kw: object) -> huggingface_hub.RepoUrl:
        calls.append(("create", repo_id, kw))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)))
    assert modelcard.push(completed_run, "me/model", private=True) == "https://huggingface.co/me/model"
    (_, repo, create), (_, upload) = calls
    assert repo == "me/model" and create["private"] and create["token"] == "hf_token"
    folder = Path(upload["folder_path"])
    assert folder == completed_run.model_path and (folder / "README.md").is_file()
    assert {"model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}


# -- hub datasets: subsets, splits, streaming --------------------------------------------------------------
HUB_README = """---
configs:
- config_name: legal
  data_files:
  - split: train
    path: legal/train.jsonl
  - split: test
    path: legal/test.jsonl
- config_name: notes
  data_files:
  - split: train
    path: notes/train.jsonl
  - split: extra
    path: notes/extra.jsonl
---
# a dataset in Hub layout
"""


def notes(n: int, start: int = 0) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]} Note {i} about case {i * 7}." for i in range(start, start + n)]


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder in Hub layout, which `datasets.load_dataset` reads by path, as it would a hub id."""
    root = tmp_path_factory.mktemp("hub-dataset")
    (root / "README.md").write_text(HUB_README)
    for subset, split, docs in (("legal", "train", notes(120)), ("legal", "test", notes(30, 500)),
                                ("notes", "train", notes(300, 1000)), ("notes", "extra", notes(20, 2000))):
        (root / subset).mkdir(exist_ok=True)
        write_jsonl(root / subset / f"{split}.jsonl", docs)
    return root


def test_a_subset_and_its_splits_are_read_as_load_dataset_reads_them(cli, hub_folder, tiny_model_dir):
    code, out, err = cli("chunks", hub_folder, "--subset", "legal", "--model", tiny_model_dir, "--json")
    assert code == 0, err
    splits = json.loads(out)["splits"]
    assert (splits["train"]["documents"], splits["test"]["documents"]) == (120, 30)
    code, out, err = cli("chunks", hub_folder, "--subset", "notes", "--test-split", "extra", "--model",
                         tiny_model_dir, "--json")
    assert code == 0, err
    splits = json.loads(out)["splits"]
    assert (splits["train"]["documents"], splits["test"]["documents"]) == (300, 20)


def test_streaming_gives_the_same_tokens_as_the_files_and_writes_no_arrow_copy(hub_folder, tiny_model_dir,
                                                                               state_root):
    from mlm_tui.chunking import open_tokenizer, tokenize_corpus
    from mlm_tui.corpus import HubOptions

    tok = open_tokenizer(str(tiny_model_dir))
    arrows_before = set(state_root.rglob("*.arrow"))
    streamed = tokenize_corpus(str(hub_folder), tok, hub=HubOptions(subset="notes", streaming=True))
    assert set(streamed) == {"train"}  # no test split: nothing held out without a test size
    direct = tokenize_corpus(str(hub_folder / "notes" / "train.jsonl"), tok)["train"]
    assert streamed["train"].ids.tolist() == direct.ids.tolist()
    assert isinstance(streamed["train"].ids, __import__("numpy").memmap)  # served from the token cache
    assert set(state_root.rglob("*.arrow")) == arrows_before


def test_a_stream_without_a_test_split_holds_out_its_first_documents(hub_folder, tiny_model_dir):
    from mlm_tui.chunking import open_tokenizer, tokenize_corpus
    from mlm_tui.corpus import HubOptions

    tok = open_tokenizer(str(tiny_model_dir))
    splits = tokenize_corpus(str(hub_folder), tok, hub=HubOptions(subset="notes", streaming=True),
                             holdout_tokens=8 * 32)
    whole = tokenize_corpus(str(hub_folder / "notes" / "train.jsonl"), tok)["train"]
    test, train = splits["test"], splits["train"]
    assert test.tokens >= 8 * 32 > test.tokens - int(test.doc_lengths[-1])  # just enough documents
    assert test.documents + train.documents == whole.documents == 300
    assert test.ids.tolist() + train.ids.tolist() == whole.ids.tolist()  # the first ones, skipped by train


def test_train_streams_a_subset_and_records_it(cli, hub_folder, tiny_model_dir):
    code, out, err = cli("train", hub_folder, "--subset", "notes", "--streaming", "--model", tiny_model_dir,
                         *FAST, "--max-steps", "1", "--json")
    assert code == 0, err
    info = runstore.find_run(json.loads(out)["run_id"]).info()
    assert info.plan.test_chunks == 8 and (info.config.subset, info.config.streaming) == ("notes", True)
    assert "--subset=notes --streaming" in (info.model_path / "README.md").read_text()
    # bits per character read a local corpus's text: a hub dataset's run records none, and says so once
    assert info.bpc_before is None and info.bpc_after is None
    log = (info.model_path.parent / "log.txt").read_text()
    assert log.count("bits per character not measured") == 1


@pytest.mark.parametrize(("argv", "says"), [
    (("--subset", "legal", "--test-split", "dev"), "has no split 'dev' (splits: train, test); pick one with "
                                                    "--test-split"),
    (("--subset", "nope"), "could not open the dataset"),
])
def test_a_wrong_subset_or_split_is_one_line(cli, hub_folder, tiny_model_dir, argv, says):
    code, _, err = cli("chunks", hub_folder, *argv, "--model", tiny_model_dir, "--json")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and says in err, err


# -- trackers ------------------------------------------------------------------------------------------------
def test_tensorboard_gets_the_metrics_of_metrics_jsonl(cli, corpus_jsonl, tiny_model_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, *FAST, "--max-steps", "3",
                         "--logging-steps", "1", "--eval-steps", "2", "--report-to", "tensorboard", "--json")
    assert code == 0, err
    run = runstore.find_run(json.loads(out)["run_id"])
    (events,) = {p.parent for p in run.dir.rglob("events.out.tfevents.*") if p.parent.name == "mlm-tui"}
    board = EventAccumulator(str(events))
    board.Reload()
    for name in ("loss", "learning_rate", "tokens_per_s", "eval_perplexity"):
        want = {row["step"]: row[name] for row in run.metrics() if name in row}
        got = {e.step: e.value for e in board.Scalars(name)}
        assert got.keys() == want.keys() and want, name
        assert list(got.values()) == pytest.approx(list(want.values()), rel=1e-5), name


@pytest.mark.parametrize("tracker", ["wandb", "mlflow", "trackio", "tensorboard"])
def test_a_tracker_that_is_not_installed_names_its_extra(cli, corpus_jsonl, tiny_model_dir, tracker,
                                                         monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(tracker) else real(name, *a))
    code, _, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--report-to", tracker, "--json")
    assert code == 2 and err.count("\n") == 1, err
    assert f'--report-to {tracker}: {tracker} is not installed (pip install "mlm-tui[{tracker}]")' in err


# -- several processes -----------------------------------------------------------------------------------
def test_several_gpus_and_nodes_are_the_accelerate_launch_command_users_know():
    """GPUs and nodes are not here: the commands they would run are checked instead."""
    import sys

    from mlm_tui.launcher import launch_command
    from mlm_tui.run_settings import TrainConfig

    one_node = TrainConfig(corpus="c.jsonl", processes=4)
    assert launch_command(one_node, ["train", "x"], "cuda") == [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4",
        "--num_machines", "1", "--machine_rank", "0", "-m", "mlm_tui.cli", "train", "x"]
    nodes = TrainConfig(corpus="c.jsonl", processes=8, nodes=2, node_rank=1, main_address="10.0.0.1:29500")
    assert launch_command(nodes, ["train"], "cuda")[3:15] == [
        "--multi_gpu", "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
        "--main_process_ip", "10.0.0.1", "--main_process_port", "29500", "-m"]
    assert launch_command(nodes, ["train"], "cpu")[1:13] == [
        "-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "29500"]


def test_several_nodes_need_the_main_address_before_a_run_exists(cli, corpus_jsonl):
    before = runstore.list_runs()[0]
    code, _, err = cli("train", corpus_jsonl, "--nodes", "2", "--device", "cpu")
    assert code == 2 and "with 2 nodes give --main-address host:port of node 0" in err, err
    assert runstore.list_runs()[0] == before


def test_the_accelerate_launch_module_takes_these_options():
    """The options are Accelerate's own: its parser accepts the command built for several nodes."""
    from accelerate.commands.launch import launch_command_parser

    from mlm_tui.launcher import launch_command
    from mlm_tui.run_settings import TrainConfig

    config = TrainConfig(corpus="c.jsonl", processes=8, nodes=2, node_rank=1, main_address="10.0.0.1:29500")
    command = launch_command(config, ["train", "c.jsonl"], "cuda")
    args = launch_command_parser().parse_args(command[3:])
    assert (args.multi_gpu, args.num_processes, args.num_machines, args.machine_rank) == (True, 16, 2, 1)
    assert (args.main_process_ip, args.main_process_port, args.module) == ("10.0.0.1", 29500, True)
    assert args.training_script == "mlm_tui.cli" and args.training_script_args == ["train", "c.jsonl"]
