"""What happens when things go wrong: Ctrl+C, kill -9, two runs at once, a full disk, unsafe files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlm_tui import checkpoints, runstore
from mlm_tui.errors import RunCancelled, UsageError
from mlm_tui.lifecycle import TrainingRun
from mlm_tui.run_settings import TrainConfig

FAST = ["--chunk-size", "32", "--batch-size", "4"]


def train_argv(corpus: Path, model: Path, *extra: str) -> list[str]:
    return ["train", str(corpus), "--model", str(model), *FAST, *extra]


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLM_TUI_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mlm_tui.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def read_stderr_until(proc: subprocess.Popen[bytes], needle: str, timeout: float = 240) -> str:
    """Read the process's stderr until `needle` shows up; fail if it exits or stalls first."""
    buf = b""
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout
    while needle.encode() not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in time:\n{buf.decode()}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the process ended before {needle!r}:\n{buf.decode()}"
            buf += chunk
    return buf.decode()


def run_of_pid(pid: int) -> runstore.Run:
    runs, _ = runstore.list_runs()
    return next(r for r in runs if r.state().get("pid") == pid)


def step_rows(run: runstore.Run) -> list[int]:
    return [row["step"] for row in run.metrics() if "loss" in row]


def test_ctrl_c_stops_at_the_next_step_and_saves(tiny_model_dir, corpus_jsonl):
    proc = spawn(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "100000", "--logging-steps", "1",
                             "--json"))
    read_stderr_until(proc, "step 2/100000")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    message = json.loads(out)["error"]
    assert message.startswith("cancelled at step")
    run_id = re.search(r"--resume (\S+)", message).group(1)
    run = runstore.find_run(run_id)
    assert run.status() == "cancelled"
    stopped_at = int(re.search(r"at step (\d+)", message).group(1))
    assert stopped_at >= 2 and run.state()["step"] == stopped_at
    ckpt = run.latest_checkpoint()
    assert ckpt is not None and json.loads((ckpt / "trainer_state.json").read_text())["step"] == stopped_at


def test_killed_run_is_interrupted_and_a_running_one_refuses_resume(cli, tiny_model_dir, corpus_jsonl):
    proc = spawn(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "100000", "--logging-steps", "1"))
    try:
        read_stderr_until(proc, "step 2/100000")
        run = run_of_pid(proc.pid)
        rows = {r["run_id"]: r for r in json.loads(cli("runs", "--json")[1])["runs"]}
        assert rows[run.run_id]["status"] == "running"
        code, _, err = cli("train", "--resume", run.run_id)
        assert code == 2 and f"run {run.run_id} is running" in err
    finally:
        proc.kill()
        proc.communicate()
    rows = {r["run_id"]: r for r in json.loads(cli("runs", "--json")[1])["runs"]}
    assert rows[run.run_id]["status"] == "interrupted"


def test_two_runs_at_once_both_complete(cli, tiny_model_dir, corpus_jsonl):
    procs = [spawn(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "2", "--json")) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    ids = {r["run_id"] for r in results}
    assert len(ids) == 2
    listed = {r["run_id"]: r["status"] for r in json.loads(cli("runs", "--json")[1])["runs"]}
    assert all(listed[i] == "completed" for i in ids)


def config(corpus: Path, model: Path, **overrides: object) -> TrainConfig:
    settings = {"corpus": str(corpus), "model": str(model), "chunk_size": 32, "batch_size": 4, "max_steps": 8,
                "logging_steps": 1, "test_size": 8, **overrides}
    return TrainConfig(**settings)


def test_resume_continues_steps_and_metrics(cli, tiny_model_dir, corpus_jsonl):
    """A run that died at step 5 with its last checkpoint at step 4 redoes step 5 once and ends at 8."""

    def die_at_step_5(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 5:
            raise RuntimeError("power cut")

    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir, save_steps=2), on_event=die_at_step_5)
    with pytest.raises(RuntimeError):
        trainer.run()
    run = trainer.run_record
    assert run.status() == "failed" and step_rows(run) == [1, 2, 3, 4, 5]
    before = run.state()["perplexity_before"]
    general_before = run.info().general_perplexity_before

    code, out, err = cli("train", "--resume", run.run_id, "--json")
    assert code == 0, err
    assert "resumed at step 4 of 8" in err
    result = json.loads(out)
    assert (result["run_id"], result["status"], result["steps"]) == (run.run_id, "completed", 8)
    assert result["train_tokens"] == 8 * 4 * 32
    assert result["perplexity_before"] == before  # measured once, before the first step
    assert result["general_perplexity_before"] == general_before is not None  # the same, on general text
    assert err.count("general perplexity") == 1 and result["general_perplexity_after"] is not None
    assert step_rows(run) == list(range(1, 9))
    assert run.status() == "completed"
    code, _, err = cli("train", "--resume", run.run_id)
    assert code == 2 and "is completed" in err


def test_a_run_cancelled_before_its_first_step_resumes_from_the_start(cli, tiny_model_dir, corpus_jsonl):
    """Ctrl+C while the starting perplexity is measured: no checkpoint yet, so resume starts at step 0."""
    measuring = []

    def on_event(event: dict) -> None:
        if "measuring perplexity before" in event.get("message", ""):
            measuring.append(1)

    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir, max_steps=3), on_event=on_event,
                       should_stop=lambda: bool(measuring))
    with pytest.raises(RunCancelled, match=r"evaluation cancelled; resume with: mlm-tui train --resume \d"):
        trainer.run()
    run = trainer.run_record
    assert run.status() == "cancelled" and run.latest_checkpoint() is None
    code, out, err = cli("train", "--resume", run.run_id, "--json")
    assert code == 0, err
    assert f"run {run.run_id} has no checkpoint left: it starts again from step 0" in err
    assert json.loads(out)["steps"] == 3 and step_rows(run) == [1, 2, 3]


def test_cancel_file_stops_a_run_like_ctrl_c(tiny_model_dir, corpus_jsonl):
    """The workbench cancels a run it launched by creating `cancel` in the run folder."""

    def cancel_at_step_2(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 2:
            (trainer.run_record.dir / "cancel").touch()

    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir), on_event=cancel_at_step_2)
    with pytest.raises(RunCancelled, match="cancelled at step 2"):
        trainer.run()
    assert trainer.run_record.status() == "cancelled"
    assert trainer.run_record.latest_checkpoint().name == "step-0000002"


def test_a_long_run_shows_its_first_losses_at_once_not_at_its_first_thousandth(tiny_model_dir, corpus_jsonl):
    """A million-step run logs every 1,000 steps by default; its chart and its ETA would wait for step 1,000.
    Steps 1, 2, 4, ... log before that; a given interval is kept as given."""
    logged: list[dict] = []

    def cancel_at_step_8(event: dict) -> None:
        if event["event"] == "step":
            logged.append(event)
            if event["step"] >= 8:
                (trainer.run_record.dir / "cancel").touch()

    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir, max_steps=1_000_000, logging_steps=None,
                                 save_steps=1_000_000), on_event=cancel_at_step_8)
    with pytest.raises(RunCancelled):
        trainer.run()
    assert trainer.run_record.info().plan.logging_steps == 1000
    assert [e["step"] for e in logged] == [1, 2, 4, 8]
    rows = [json.loads(line) for line in (trainer.run_record.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 4, 8]
    assert all(0 < e["eta"] < float("inf") for e in logged)
    assert config(corpus_jsonl, tiny_model_dir, logging_steps=3).logging_steps == 3
    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir, logging_steps=3), on_event=logged.append)
    logged.clear()
    trainer.run()
    assert [e["step"] for e in logged if e["event"] == "step"] == [3, 6, 8]


def test_full_disk_during_a_checkpoint_fails_cleanly(cli, tiny_model_dir, corpus_jsonl, monkeypatch):
    real_write = checkpoints._write_model
    calls = []

    def write_then_fill_the_disk(model, tokenizer, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(model, tokenizer, path)

    monkeypatch.setattr(checkpoints, "_write_model", write_then_fill_the_disk)
    before = {r.run_id for r in runstore.list_runs()[0]}
    code, out, err = cli(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "6", "--save-steps", "2",
                                     "--test-size", "8", "--json"))
    assert code == 1 and "Traceback" not in err
    message = json.loads(out)["error"]
    assert "could not write the checkpoint at step 4 (No space left on device)" in message
    (run,) = [r for r in runstore.list_runs()[0] if r.run_id not in before]  # runs within a second tie
    assert run.status() == "failed" and "No space left" in run.state()["message"]
    left = sorted(p.name for p in run.checkpoints_dir.iterdir())
    assert left == ["step-0000002"]  # the earlier checkpoint, and no half-written folder
    kept = {p.name for p in (run.checkpoints_dir / left[0]).iterdir()}
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= kept
    monkeypatch.setattr(checkpoints, "_write_model", real_write)
    code, out, err = cli("train", "--resume", run.run_id, "--json")
    assert code == 0, err
    assert "resumed at step 2 of 6" in err and json.loads(out)["steps"] == 6


def test_secondary_processes_train_but_write_nothing(cli, tiny_model_dir, corpus_jsonl, monkeypatch):
    """Under `accelerate launch` only the main process writes the run store and prints the result."""
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    before = sorted(p.name for p in runstore.runs_dir().iterdir())
    code, out, err = cli(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "2", "--save-steps", "1",
                                     "--test-size", "8", "--json"))
    assert code == 0, err
    assert out == "" and "step 2/2" not in err  # the main process reports progress and the result
    assert sorted(p.name for p in runstore.runs_dir().iterdir()) == before


def cli_process(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLM_TUI_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mlm_tui.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


def test_two_processes_train_one_run_at_the_rate_the_main_process_tested(tiny_model_dir, corpus_jsonl):
    """`--processes 2` (torchrun with two CPU processes, gloo): one run, one result, one copy of progress,
    and one range test, on the main process; had the other process trained at another rate, the averaged
    gradients from step 2 on would differ from a run given that rate outright."""
    base = train_argv(corpus_jsonl, tiny_model_dir, "--batch-size", "2", "--max-steps", "80", "--test-size",
                      "8", "--logging-steps", "1", "--precision", "fp32", "--processes", "2", "--json")

    def launch(*extra: str) -> tuple[dict, str]:
        proc = cli_process(*base, *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout), proc.stderr

    auto, said = launch("--learning-rate", "auto")
    assert said.count("learning-rate range test: 8 steps") == 1
    chosen = runstore.find_run(auto["run_id"]).config()["lr_find"]["suggested"]
    result, said = launch(f"--learning-rate={chosen!r}")
    assert (result["status"], result["steps"], result["train_tokens"]) == ("completed", 80, 80 * 2 * 2 * 32)
    assert said.count("step 80/80") == 1
    # bits per character: measured by the main process alone, before and after, the others waiting
    assert result["bpc_before"] > 0 and result["bpc_after"] > 0
    assert said.count("bits per character") == 2
    fixed = runstore.find_run(result["run_id"])
    assert fixed.status() == "completed" and step_rows(fixed) == list(range(1, 81))
    assert fixed.info().plan.processes == 2
    want, got = losses(fixed), losses(runstore.find_run(auto["run_id"]))
    assert len(set(want.values())) > 1
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4), step


def test_a_two_process_launch_always_has_an_owner_and_resumes(tiny_model_dir, corpus_jsonl, monkeypatch):
    """Launched as the workbench does, a two-process run exists from the start and is never without an
    owner; a cancel signals the launch's process group and stops both processes at the same step, the
    checkpoint holds both processes' random state, both resume from it, and the final model loads."""
    from mlm_tui import launcher, lifecycle
    from mlm_tui.models import load_model

    monkeypatch.setenv("MLM_TUI_THREADS", "1")
    config = TrainConfig(corpus=str(corpus_jsonl), model=str(tiny_model_dir), chunk_size=32, batch_size=4,
                         max_steps=100000, save_steps=2, logging_steps=1, test_size=8, processes=2)
    run = runstore.find_run(lifecycle.launch(config))
    seen = set()
    deadline = time.monotonic() + 240
    while not run.checkpoint_steps():
        seen.add(run.status())
        assert time.monotonic() < deadline and run.is_live(), (run.dir / "output.txt").read_text()
        time.sleep(0.1)
    assert "interrupted" not in seen and {"preparing", "running"} >= seen
    group = run.info().process_group
    launcher.cancel(run)
    while run.is_live():
        assert time.monotonic() < deadline, (run.dir / "output.txt").read_text()
        time.sleep(0.2)
    assert run.status() == "cancelled", (run.dir / "output.txt").read_text()
    deadline = time.monotonic() + 60
    with contextlib.suppress(ProcessLookupError):  # the whole launch is gone, workers included
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(0.2)
        pytest.fail("the launch's processes are still there after the cancel")
    stopped = run.info().step
    from safetensors.torch import load_file

    saved = load_file(run.latest_checkpoint() / "rng_state.safetensors")
    assert {"0.cpu", "1.cpu"} <= set(saved)
    proc = cli_process("train", "--resume", run.run_id, f"--max-steps={stopped + 2}", "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"resumed at step {stopped} of {stopped + 2}" in proc.stderr
    assert json.loads(proc.stdout)["steps"] == stopped + 2
    assert run.status() == "completed" and step_rows(run) == list(range(1, stopped + 3))
    assert load_model(run.run_id).fill("the [MASK] is here.", top_k=1).masks


def losses(run: runstore.Run) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in run.metrics() if "loss" in row}


def test_a_resumed_run_has_the_losses_of_an_uninterrupted_one(tiny_model_dir, corpus_jsonl):
    """Same seed, fp32 on the CPU: the data order, the masks and the dropout draws all carry over."""
    settings = {"max_steps": 6, "precision": "fp32", "device": "cpu", "save_steps": 100}
    straight = TrainingRun(config(corpus_jsonl, tiny_model_dir, **settings))
    straight.run()
    stop = []
    cut = TrainingRun(config(corpus_jsonl, tiny_model_dir, **settings), should_stop=lambda: bool(stop),
                   on_event=lambda e: stop.append(1) if e["event"] == "step" and e["step"] == 3 else None)
    with pytest.raises(RunCancelled, match="cancelled at step 3"):
        cut.run()
    TrainingRun.resuming(cut.run_record).run()
    want, got = losses(straight.run_record), losses(cut.run_record)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4), step
    assert len(set(want.values())) == 6  # the losses differ from step to step: the comparison means something


def test_resume_applies_some_flags_and_refuses_others_and_a_changed_corpus(cli, tiny_model_dir, corpus_jsonl):
    stop = []
    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir), should_stop=lambda: bool(stop),
                       on_event=lambda e: stop.append(1) if e["event"] == "step" and e["step"] == 2 else None)
    with pytest.raises(RunCancelled):
        trainer.run()
    run = trainer.run_record
    code, out, err = cli("train", "--resume", run.run_id, "--max-steps", "4", "--chunk-size", "64", "--json")
    assert code == 2 and json.loads(out)["error"] == (
        "--chunk-size cannot change when resuming a run: it would change its data order and masks (start a "
        "new run)")
    assert run.status() == "cancelled"  # a refused resume leaves the run as it was
    with open(corpus_jsonl, "a") as fh:
        fh.write(json.dumps({"text": "One more document, written after the run started."}) + "\n")
    code, _, err = cli("train", "--resume", run.run_id)
    assert code == 2 and f"the corpus {corpus_jsonl} changed since run {run.run_id} read it" in err
    assert err.rstrip().endswith("resume on it anyway with --accept-changed-corpus")
    assert run.status() == "cancelled"
    code, out, err = cli("train", "--resume", run.run_id, "--max-steps", "4", "--eval-steps", "2",
                         "--batch-size", "4", "--accept-changed-corpus", "--json")  # batch 4: as recorded
    assert code == 0, err
    assert json.loads(out)["steps"] == 4 and step_rows(run) == [1, 2, 3, 4]
    info = run.info()
    assert (info.config.max_steps, info.config.eval_steps, info.total_steps) == (4, 2, 4)
    (resume,) = info.resumes
    assert resume["changes"] == {"max_steps": 4, "eval_steps": 2} and resume["corpus_changed"]["to"]


def test_a_run_is_preparing_with_its_tokenizing_progress_before_it_trains(tiny_model_dir, corpus_jsonl):
    seen = []

    def on_event(event: dict) -> None:
        if event.get("message", "").startswith("tokenized"):
            seen.append(trainer.run_record.info())

    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir, max_steps=1), on_event=on_event)
    trainer.run()
    (info,) = seen
    size = corpus_jsonl.stat().st_size
    assert (info.status, info.step, info.tokenize_done, info.tokenize_total) == ("preparing", 0, size, size)
    assert trainer.run_record.info().tokenize_done is None  # gone once it trains


def test_a_corpus_that_cannot_be_read_leaves_a_failed_run_that_says_why(cli, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": oops}\n')
    before = {r.run_id for r in runstore.list_runs()[0]}
    code, _, err = cli(*train_argv(broken, tiny_model_dir))
    assert code == 2 and "line 2 is not valid JSON" in err
    (run,) = [r for r in runstore.list_runs()[0] if r.run_id not in before]
    info = run.info()
    assert info.status == "failed" and "line 2 is not valid JSON" in info.message


def wait_until_done(run_id: str, timeout: float = 240) -> runstore.RunInfo:
    """Follow a launched run to its end; it must never look `interrupted` on the way."""
    deadline = time.monotonic() + timeout
    while (info := runstore.find_run(run_id).info()).status in ("preparing", "running"):
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    return info


def test_a_launched_run_exists_at_once_and_its_values_stay_values(tiny_model_dir, tmp_path, monkeypatch):
    """The launcher names the run before its process starts; a corpus called `-notes.jsonl` and a text
    field called `--resume=x` reach the process as values, never as options."""
    from mlm_tui import lifecycle

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLM_TUI_THREADS", "1")
    docs = [f"Rain fell over the valley while the farmers worked, day {i}." for i in range(120)]
    Path("-notes.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    settings = {"model": str(tiny_model_dir), "chunk_size": 16, "batch_size": 4, "max_steps": 2,
                "test_size": 4}
    run_id = lifecycle.launch(TrainConfig(corpus="-notes.jsonl", **settings))
    assert runstore.find_run(run_id).info().status == "preparing"
    info = wait_until_done(run_id)
    assert (info.status, info.step, info.corpus) == ("completed", 2, "-notes.jsonl"), info.message

    run_id = lifecycle.launch(TrainConfig(corpus="-notes.jsonl", text_field="--resume=x", **settings))
    info = wait_until_done(run_id)
    assert info.status == "failed" and "no text field '--resume=x'" in info.message
# -- safety ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pickle_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights in the legacy pickle format (transformers 5 no longer writes it)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    path = tmp_path_factory.mktemp("pickle-model")
    shutil.copytree(tiny_model_dir, path, dirs_exist_ok=True)
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    return path


@pytest.mark.parametrize("command", ["fill", "train"])
def test_pickle_weights_are_refused_without_the_flag(cli, pickle_model_dir, corpus_jsonl, command):
    argv = ["fill", "a [MASK] day"] if command == "fill" else ["train", str(corpus_jsonl), *FAST]
    code, _, err = cli(*argv, "--model", pickle_model_dir)
    assert code == 2 and "--allow-pickle" in err and "Traceback" not in err


def test_pickle_weights_load_with_the_flag(cli, pickle_model_dir):
    code, out, err = cli("fill", "a [MASK] day", "--model", pickle_model_dir, "--allow-pickle", "--json")
    assert code == 0, err
    assert json.loads(out)["masks"][0]["fills"]


def test_remote_code_in_a_model_folder_is_never_run(cli, tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    marker = tmp_path / "code-ran"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                   "from transformers import BertForMaskedLM as EvilModel\n")
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForMaskedLM": "evil.EvilModel", "AutoConfig": "evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(cfg))
    cli("fill", "a [MASK] day", "--model", model)
    assert not marker.exists()


def test_a_tampered_checkpoint_cannot_run_code_on_resume(cli, tiny_model_dir, corpus_jsonl, tmp_path):
    import torch

    stop = []
    trainer = TrainingRun(config(corpus_jsonl, tiny_model_dir, max_steps=4), should_stop=lambda: bool(stop),
                      on_event=lambda event: stop.append(1) if event["event"] == "step" else None)
    with pytest.raises(RunCancelled):
        trainer.run()
    run = trainer.run_record
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state": Payload()}, run.latest_checkpoint() / "optimizer.pt")
    code, _, err = cli("train", "--resume", run.run_id)
    assert code == 1 and "cannot be restored" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_launched_run_whose_process_dies_while_preparing_is_interrupted(tiny_model_dir, corpus_jsonl):
    from mlm_tui import lifecycle

    run_id = lifecycle.launch(TrainConfig(corpus=str(corpus_jsonl), model=str(tiny_model_dir)))
    run = runstore.find_run(run_id)
    assert run.info().status == "preparing"
    pid = run.state()["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while run.status() != "interrupted":
        assert time.monotonic() < deadline, run.status()
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # the launcher's child: reap it


def test_a_killed_launcher_takes_its_workers_with_it(tiny_model_dir, corpus_jsonl):
    """kill -9 of the `mlm-tui` that launched two processes: while its workers still train the run is live
    (no resume or delete can take it); the main worker then stops them all at a step with a checkpoint,
    records the run `interrupted` with why, the launch's processes are gone, and it resumes."""
    run_id = runstore.new_run_id()
    proc = spawn(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "100000", "--logging-steps", "1",
                             "--test-size", "8", "--processes", "2", f"--run-id={run_id}"))
    read_stderr_until(proc, "step 2/100000")
    run = runstore.find_run(run_id)
    group = run.info().process_group
    proc.kill()
    proc.wait()
    assert run.status() == "running" and run.is_live()  # its workers are still there
    with pytest.raises(UsageError):
        runstore.delete_run(run)
    deadline = time.monotonic() + 120
    while run.is_live():
        assert time.monotonic() < deadline, "the workers went on training after their launcher died"
        time.sleep(0.2)
    info = run.info()
    assert info.status == "interrupted", info.message
    assert "launched it died" in info.message and f"mlm-tui train --resume {run_id}" in info.message
    assert run.latest_checkpoint().name.endswith(f"{info.step:07d}")
    with contextlib.suppress(ProcessLookupError):  # torchrun and both workers are gone
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(0.2)
        pytest.fail("the launch's processes are still there after their launcher died")
    resumed = cli_process("train", "--resume", run_id, f"--max-steps={info.step + 1}", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert run.status() == "completed"


def test_a_deleted_run_is_never_written_again_and_a_stub_can_be_deleted(tiny_model_dir, corpus_jsonl, cli):
    run = runstore.create_run({"corpus": str(corpus_jsonl)})
    run.release()
    runstore.delete_run(run)
    with pytest.raises(FileNotFoundError):  # a process that lost its run does not bring it back
        run.update_state(step=5)
    assert not run.dir.exists()
    stub = runstore.runs_dir() / runstore.new_run_id()  # what a dead process of an old version left behind
    stub.mkdir()
    (stub / "log.txt").write_text("12:00:00 training\n")
    code, out, _ = cli("runs")
    assert f"mlm-tui runs delete {stub.name}" in out + _
    code, out, err = cli("runs", "delete", stub.name)
    assert code == 0, err
    assert not stub.exists()


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (the workers under a launch's agent)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "worker killed"])
def test_a_two_process_run_ends_in_one_line_with_a_single_process_exit_status(tiny_model_dir, corpus_jsonl,
                                                                              how):
    """Ctrl+C or SIGTERM to a launch of two processes stops both at one step, 130 / 143 as a single
    process does; a worker killed with SIGKILL is named in the run's message. No launcher traceback or
    failure banner reaches the terminal, and stdout holds one JSON document saying the same as the run."""
    run_id = runstore.new_run_id()
    proc = spawn(*train_argv(corpus_jsonl, tiny_model_dir, "--max-steps", "100000", "--logging-steps", "1",
                             "--test-size", "8", "--processes", "2", f"--run-id={run_id}", "--json"))
    read_stderr_until(proc, "step 2/100000")
    if how == "worker killed":
        workers = children(runstore.find_run(run_id).info().process_group)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    info = runstore.find_run(run_id).info()
    assert "Traceback" not in err.decode() and "ChildFailedError" not in err.decode(), err.decode()
    assert json.loads(out) == {"error": info.message}
    if how == "worker killed":
        assert proc.returncode == 1 and info.status == "failed"
        assert re.fullmatch(rf"worker 1 died \(SIGKILL\) at step {info.step}; resume with: mlm-tui train "
                            rf"--resume {run_id}", info.message)
    else:
        assert proc.returncode == (130 if how == "ctrl-c" else 143) and info.status == "cancelled"
        assert info.message == f"cancelled at step {info.step}; resume with: mlm-tui train --resume {run_id}"
    assert err.decode().count(info.message) == 1
