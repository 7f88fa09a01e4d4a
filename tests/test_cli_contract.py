"""The CLI contract scripts rely on: JSON shapes, corpus formats, one-line errors and exit codes."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SENTENCES, write_jsonl

DOCS = [f"{SENTENCES[i % len(SENTENCES)]} Note {i}." for i in range(40)]


def tokenizer_counts(model_dir: Path, docs: list[str]) -> tuple[int, int]:
    """(documents, tokens) as the tokenizer itself counts them, special tokens included."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return len(docs), sum(len(tok(d)["input_ids"]) for d in docs)


def write_corpus(path: Path, docs: list[str]) -> Path:
    """Write docs in the format the suffix names (a `text` field/column where there are fields)."""
    kind = path.suffix
    if kind == ".txt":
        path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    elif kind == ".jsonl":
        write_jsonl(path, docs)
    elif kind == ".json":
        path.write_text(json.dumps([{"text": d} for d in docs]), encoding="utf-8")
    elif kind in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.DataFrame({"id": range(len(docs)), "text": docs})
        frame.to_csv(path, index=False) if kind == ".csv" else frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".json", ".csv", ".parquet"])
def test_chunks_counts_match_the_tokenizer_in_every_format(cli, tiny_model_dir, tmp_path, suffix):
    corpus = write_corpus(tmp_path / f"docs{suffix}", DOCS)
    code, out, err = cli("chunks", corpus, "--model", tiny_model_dir, "--chunk-size", 32, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["corpus"] == str(corpus) and data["chunk_size"] == 32
    train = data["splits"]["train"]
    assert (train["documents"], train["tokens"]) == tokenizer_counts(tiny_model_dir, DOCS)
    assert train["chunks"] * 32 + train["dropped_tokens"] == train["tokens"]
    assert 0 <= train["dropped_tokens"] < 32


def test_chunks_of_a_folder_keeps_its_split_files(cli, tiny_model_dir, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_corpus(folder / "train.jsonl", DOCS[:30])
    write_corpus(folder / "test.txt", DOCS[30:])
    code, out, err = cli("chunks", folder, "--model", tiny_model_dir, "--chunk-size", 16, "--json")
    assert code == 0, err
    splits = json.loads(out)["splits"]
    assert set(splits) == {"train", "test"}
    test = splits["test"]
    assert (test["documents"], test["tokens"]) == tokenizer_counts(tiny_model_dir, DOCS[30:])


def test_chunks_show_decodes_the_first_chunks(cli, tiny_model_dir, corpus_jsonl):
    code, out, _ = cli("chunks", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32, "--show", 3,
                       "--json")
    assert code == 0
    examples = json.loads(out)["examples"]
    assert len(examples) == 3
    assert examples[0].startswith("[CLS] the enzyme catalyses")


def test_chunks_loads_no_model_weights(cli, tiny_model_dir, corpus_jsonl, monkeypatch):
    from transformers import PreTrainedModel

    def refuse(*args, **kwargs):
        raise AssertionError("chunks loaded model weights")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", refuse)
    code, out, err = cli("chunks", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32, "--json")
    assert code == 0, err
    assert json.loads(out)["splits"]["train"]["chunks"] > 0


def test_text_output_without_json_is_not_json(cli, tiny_model_dir, corpus_jsonl):
    code, out, _ = cli("chunks", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32)
    assert code == 0 and "chunks of 32 tokens" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_fill_json_shape(cli, tiny_model_dir):
    code, out, err = cli("fill", "Rain fell over the [MASK].", "--model", tiny_model_dir, "--top-k", 3,
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"model", "text", "masks"} and data["text"] == "Rain fell over the [MASK]."
    (mask,) = data["masks"]
    assert set(mask) == {"index", "fills"} and len(mask["fills"]) == 3
    for fill in mask["fills"]:
        assert set(fill) == {"token", "token_id", "score", "sequence"}
        assert fill["sequence"].startswith("rain fell over the") and "[MASK]" not in fill["sequence"]
        assert isinstance(fill["token_id"], int) and 0 < fill["score"] < 1


def test_eval_json_shape(cli, tiny_model_dir, corpus_jsonl):
    code, out, err = cli("eval", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32,
                         "--test-size", 8, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"perplexity", "chunks", "masked_tokens"}
    assert data["chunks"] == 8 and data["masked_tokens"] > 0
    # an untrained tiny model is close to uniform over its ~30k-token vocabulary
    assert 1_000 < data["perplexity"] < 200_000


def test_train_and_runs_json_shapes(cli, tiny_model_dir, corpus_jsonl):
    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32,
                         "--max-steps", 2, "--batch-size", 4, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"run_id", "status", "model", "perplexity_before", "perplexity_after",
                           "general_perplexity_before", "general_perplexity_after", "bpc_before",
                           "bpc_after", "train_runtime", "train_tokens", "steps", "learning_rate",
                           "learning_rate_reason", "model_path"}
    assert result["learning_rate_reason"].startswith("auto: the rate for a model of ")
    assert "a run of 2 steps is too short for a range test" in result["learning_rate_reason"]
    assert result["model"] == str(tiny_model_dir) and Path(result["model_path"], "config.json").is_file()
    assert "held out" in err  # a corpus without a test split gets one, by documents
    code, out, _ = cli("runs", "--json")
    assert code == 0
    rows = json.loads(out)["runs"]
    row = next(r for r in rows if r["run_id"] == result["run_id"])
    assert set(row) == {"run_id", "status", "created", "model", "corpus", "perplexity_before",
                        "perplexity_after", "general_perplexity_before", "general_perplexity_after",
                        "bpc_before", "bpc_after", "steps", "total_steps", "duration", "bytes"}
    assert (row["status"], row["steps"], row["total_steps"], row["corpus"]) == ("completed", 2, 2,
                                                                                str(corpus_jsonl))
    assert row["perplexity_after"] == result["perplexity_after"]
    assert row["general_perplexity_after"] == result["general_perplexity_after"] > 0
    run_dir = Path(result["model_path"]).parent
    assert row["bytes"] == sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert json.loads(out)["total_bytes"] == sum(r["bytes"] for r in rows)


def test_runs_show_and_delete(cli, tiny_model_dir, corpus_jsonl):
    from mlm_tui import runstore

    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32,
                         "--max-steps", 4, "--save-steps", 2, "--batch-size", 4, "--test-size", 8,
                         "--no-general", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("runs", "show", run_id, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["run_id"], shown["status"], shown["step"]) == (run_id, "completed", 4)
    assert shown["total_steps"] == 4
    assert shown["config"]["chunk_size"] == 32 and shown["config"]["model"] == str(tiny_model_dir)
    assert shown["plan"]["batch_size"] == 4 and shown["checkpoints"] == [2]
    assert shown["model_path"] == str(runstore.runs_dir() / run_id / "model")
    assert shown["bytes"] > 0 and shown["perplexity_after"] > 0
    code, out, _ = cli("runs", "show", run_id)
    assert code == 0 and f"model path {shown['model_path']}" in out and "checkpoints 2" in out
    settings = next(line for line in out.splitlines() if line.startswith("settings"))
    assert "--chunk-size=32" in settings and "--no-general" in settings.split()  # those not the defaults
    code, again, err = cli("train", "--json", *shlex.split(settings.removeprefix("settings")), "--",
                           corpus_jsonl)  # the line runs the same settings again as it reads
    assert code == 0, err
    first, second = (runstore.find_run(ref).info().config for ref in (run_id, json.loads(again)["run_id"]))
    assert second == first

    based = runstore.create_run({"model": run_id, "corpus": str(corpus_jsonl)})  # a run started from it
    based.fail("failed", "for the test")
    based.release()
    code, out, err = cli("runs", "delete", run_id, "--checkpoints-only")
    assert code == 0, err
    assert f"deleted the checkpoints of run {run_id}" in out
    assert f"note: started from its model (their own checkpoints and models are kept): {based.run_id}" in out
    code, out, _ = cli("runs", "show", run_id, "--json")
    shown = json.loads(out)
    assert shown["checkpoints"] == [] and Path(shown["model_path"], "config.json").is_file()
    code, out, _ = cli("fill", "a [MASK] day", "--model", run_id, "--json")  # the final model is kept
    assert code == 0
    code, out, err = cli("runs", "delete", run_id, "--json")
    assert code == 0, err
    assert json.loads(out)["named_by"] == [based.run_id] and runstore.find_run(run_id) is None
    code, _, err = cli("runs", "show", run_id)
    assert code == 2 and f"no run called '{run_id}'" in err


@pytest.fixture
def bad_inputs(tmp_path: Path, tiny_model_dir: Path) -> dict[str, Path]:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "binary.jsonl").write_bytes(b"\0\1\2" * 500)
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": "fine too"}\n{"text": oops}\n')
    (tmp_path / "notes.md").write_text("# not a corpus format\n")
    write_jsonl(tmp_path / "body.jsonl", DOCS, field="body")
    write_jsonl(tmp_path / "ok.jsonl", DOCS)
    (tmp_path / "not-a-model").mkdir()
    return {p.name: p for p in tmp_path.iterdir()}


CORPUS_ERRORS = [
    ("missing.jsonl", 2, "no such corpus file"),
    ("empty.jsonl", 2, "empty"),
    ("blank.txt", 2, "empty"),
    ("binary.txt", 2, "not UTF-8"),
    ("binary.jsonl", 2, "binary"),
    ("broken.jsonl", 2, "line 3"),
    ("notes.md", 2, "unsupported corpus format"),
    ("body.jsonl", 2, "no text field 'text' (text fields: body); pick one with --text-field"),
    ("no_such_user/no_such_dataset", 2, "hub dataset"),
]


@pytest.mark.parametrize(("name", "code", "words"), CORPUS_ERRORS)
@pytest.mark.parametrize("command", ["chunks", "eval", "train"])
def test_bad_corpus_is_one_line(cli, tiny_model_dir, bad_inputs, tmp_path, command, name, code, words):
    corpus = bad_inputs.get(name, tmp_path / name) if "/" not in name else name
    got, out, err = cli(command, corpus, "--model", tiny_model_dir, "--chunk-size", 32)
    assert got == code
    assert_one_line_error(err, words)
    assert out == ""


def assert_one_line_error(err: str, words: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], err
    assert "Traceback" not in err


def test_text_field_flag_picks_the_column(cli, tiny_model_dir, bad_inputs):
    code, out, _ = cli("chunks", bad_inputs["body.jsonl"], "--model", tiny_model_dir, "--text-field", "body",
                       "--json")
    assert code == 0 and json.loads(out)["splits"]["train"]["documents"] == len(DOCS)


USAGE_ERRORS = [
    (["chunks", "{ok}", "--chunk-size", "0"], "--chunk-size must be at least 2"),
    (["chunks", "{ok}", "--chunk-size", "-5"], "--chunk-size must be at least 2"),
    (["chunks", "{ok}", "--chunk-size", "4096"], "beyond this model's maximum of 256"),
    (["chunks", "{ok}", "--chunk-size", "ten"], "not a whole number"),
    (["chunks", "{ok}", "--show", "-1"], "--show"),
    (["train", "{ok}", "--chunk-size", "0"], "--chunk-size must be at least 2"),
    (["train", "{ok}", "--chunk-size", "1000"], "beyond this model's maximum"),
    (["train", "{ok}", "--batch-size", "0"], "--batch-size"),
    (["train", "{ok}", "--batch-size", "-4"], "--batch-size"),
    (["train", "{ok}", "--learning-rate", "0"], "--learning-rate"),
    (["train", "{ok}", "--learning-rate", "-1e-4"], "--learning-rate"),
    (["train", "{ok}", "--max-steps", "0"], "--max-steps"),
    (["train", "{ok}", "--max-steps", "-2"], "--max-steps"),
    (["train", "{ok}", "--epochs", "0"], "--epochs"),
    (["train", "{ok}", "--warmup-steps", "-1"], "--warmup-steps"),
    (["train"], "give a CORPUS"),
    (["train", "--resume", "20990101-000000-abcd"], "no run called"),
    (["train", "--resume", "../../etc"], "no run called"),
    (["train", "{ok}", "--accept-changed-corpus"], "--accept-changed-corpus only applies with --resume"),
    (["train", "{ok}", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["runs", "show", "20990101-000000-abcd"], "no run called"),
    (["runs", "delete", "../x"], "no run called"),
    (["runs", "learned", "20990101-000000-abcd"], "no run called"),
    (["runs", "learned", "20990101-000000-abcd", "--top", "0"], "--top"),
    (["train", "{ok}", "--general", "./no/such.txt"], "--general: no such corpus file or folder"),
    (["fill", "a sentence without a mask"], "no [MASK] in the text"),
    (["fill", "[MASK] [MASK] [MASK]"], "only masks"),
    (["fill", "word " * 300 + "[MASK]"], "this model reads at most 256"),
    (["fill", "a [MASK]", "--top-k", "0"], "--top-k"),
    (["fill", "a [MASK]", "--model", "{not-a-model}"], "not a model directory"),
    (["fill", "a [MASK]", "--model", "./no/such/dir"], "no model directory, run or hub id"),
    (["fill", "a [MASK]", "--model", "nobody/no-such-model"], "not in the local cache"),
    (["fill", "a [MASK]", "--model", "20990101-000000-abcd"], "no run called '20990101-000000-abcd'"),
    (["eval", "{ok}", "--model", "20990101-000000-abcd"], "no run called"),
    (["bogus-command"], "invalid choice"),
]


@pytest.mark.parametrize("json_mode", [False, True])
@pytest.mark.parametrize(("argv", "words"), USAGE_ERRORS)
def test_usage_errors_exit_2_with_one_line(cli, tiny_model_dir, bad_inputs, argv, words, json_mode):
    argv = [a.format(ok=bad_inputs["ok.jsonl"], **{"not-a-model": bad_inputs["not-a-model"]}) for a in argv]
    if "--model" not in argv and argv[0] in ("chunks", "train", "fill") and "--resume" not in argv:
        argv += ["--model", str(tiny_model_dir)]
    before = len(json.loads(cli("runs", "--json")[1])["runs"])
    code, out, err = cli(*argv, *(["--json"] if json_mode else []))
    assert code == 2
    assert_one_line_error(err, words)
    if json_mode:
        assert words in json.loads(out)["error"]
    else:
        assert out == ""
    assert len(json.loads(cli("runs", "--json")[1])["runs"]) == before  # a refused run leaves no trace


def test_unexpected_failures_are_one_line_too(cli, tiny_model_dir, corpus_jsonl, monkeypatch):
    from mlm_tui import evaluate

    def boom(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(evaluate, "fixed_masks", boom)
    code, out, err = cli("eval", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", 32, "--json")
    assert code == 1
    assert_one_line_error(err, "Input/output error")
    assert "Input/output error" in json.loads(out)["error"]


def test_closed_stdout_exits_quietly(tiny_model_dir, corpus_jsonl):
    """`mlm-tui chunks ... | head -c 0`: no BrokenPipeError traceback, no 'Exception ignored' noise."""
    proc = subprocess.Popen([sys.executable, "-m", "mlm_tui.cli", "chunks", str(corpus_jsonl), "--model",
                             str(tiny_model_dir), "--chunk-size", "32", "--show", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(False, False, "fp32"), (True, False, "bf16"),
                                                             (False, True, "bf16")])
def test_auto_precision_on_the_cpu_is_bf16_only_with_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    import torch

    from mlm_tui.training import pick_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert pick_precision("auto", "cpu") == expected
    assert pick_precision("fp32", "cpu") == "fp32"


def test_training_on_a_corpus_with_its_own_test_split_prints_no_warnings(tmp_path, tiny_model_dir):
    """The splits come memory-mapped from the token cache; a fresh process shows what a user would see."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_corpus(folder / "train.jsonl", DOCS[:30])
    write_corpus(folder / "test.jsonl", DOCS[30:])
    for _ in range(2):  # the second run is served from the token cache
        proc = subprocess.run([sys.executable, "-m", "mlm_tui.cli", "train", str(folder), "--model",
                               str(tiny_model_dir), "--chunk-size", "16", "--max-steps", "2", "--batch-size",
                               "4"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Warning" not in proc.stderr, proc.stderr
