"""Shared fixtures: an isolated state root, a tiny real model and small corpora, all offline."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlm_tui.runstore import Run

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One CPU thread a process. The tests' models are tiny, and the test processes (pytest-xdist) and the runs
# they launch share the cores: more threads than cores spin and wait on each other (an 80-step run of the
# tiny model took 4.7x the CPU time at 2 threads as at 1 on a busy 2-core machine). A launched training
# process reads MLM_TUI_THREADS (the launcher keeps one that is set), torch the OMP one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLM_TUI_THREADS", "1")

SENTENCES = [
    "The enzyme catalyses the hydrolysis of the peptide bond in the substrate.",
    "Patients received a daily dose of the compound for twelve weeks.",
    "The court held that the contract was void for lack of consideration.",
    "Our support team answers tickets about billing and login problems.",
    "The function returns a list of tokens and their offsets in the text.",
    "Rain fell over the valley while the farmers brought in the harvest.",
]


@pytest.fixture(scope="session", autouse=True)
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session gets its own MLM_TUI_HOME: nothing touches the user's real state."""
    root = tmp_path_factory.mktemp("mlm-home")
    os.environ["MLM_TUI_HOME"] = str(root)
    return root


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state root of the test's own: no runs, history or settings of another test (the workbench's
    tests and snapshots need that; a file of them takes it with `pytest.mark.usefixtures("home")`)."""
    path = tmp_path / "home"
    monkeypatch.setenv("MLM_TUI_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, seeded BERT masked LM with the real uncased WordPiece tokenizer: fast and deterministic."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from mlm_tui.starter import base_encoder_dir

    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    model = BertForMaskedLM(config)
    model.save_pretrained(path)
    tokenizer.model_max_length = 256
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps({field: doc}) + "\n")
    return path


CORPUS_DOCS = [f"{SENTENCES[i % len(SENTENCES)]} Item {i} of the corpus." for i in range(200)]


@pytest.fixture
def corpus_jsonl(tmp_path: Path) -> Path:
    """A 200-document corpus, enough for a few chunks of 32 and a held-out test split."""
    return write_jsonl(tmp_path / "corpus.jsonl", CORPUS_DOCS)


def cancelled_run(model: Path, corpus: Path) -> Run:
    """A real run of `model` on `corpus`, cancelled after its first step: a `runstore.Run` with a checkpoint
    and no final model."""
    from mlm_tui.errors import RunCancelled
    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    stop: list[int] = []
    config = TrainConfig(corpus=str(corpus), model=str(model), chunk_size=32, batch_size=4, max_steps=4,
                         logging_steps=1, test_size=8)
    trainer = TrainingRun(config, should_stop=lambda: bool(stop),
                          on_event=lambda event: stop.append(1) if event["event"] == "step" else None)
    with pytest.raises(RunCancelled):
        trainer.run()
    return trainer.run_record


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """One real 2-step run of the tiny model on that corpus, trained once for every test that only needs a
    finished run to look at (`finished_run`); the folder of the run."""
    import contextlib
    import io

    from accelerate.state import AcceleratorState

    from mlm_tui.cli import main

    root = tmp_path_factory.mktemp("trained")
    corpus = write_jsonl(root / "corpus.jsonl", CORPUS_DOCS)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setenv("MLM_TUI_HOME", str(root / "home"))
        code = main(["train", str(corpus), "--model", str(tiny_model_dir), "--chunk-size", "32",
                     "--batch-size", "4", "--test-size", "4", "--max-steps", "2", "--json"])
    AcceleratorState._reset_state()
    assert code == 0
    return root / "home" / "runs" / json.loads(out.getvalue())["run_id"]


@pytest.fixture
def finished_run(home: Path, trained_run: Path) -> str:
    """A copy of the session's one real finished run in the test's own home (the test may change it); its
    id."""
    shutil.copytree(trained_run, home / "runs" / trained_run.name)
    return trained_run.name


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from mlm_tui.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one mixed-precision setting per process; in-process runs of different precisions
    (one test asks for fp32, the others take `auto`) each start from a clean slate, as a new process would."""
    yield
    import sys

    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio: the pilot tests' `anyio` marker runs on it
