"""The offline `starter`: assembled once from the base encoder plus shipped weights, guarded by a checksum."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mlm_tui import starter
from mlm_tui.errors import MlmError


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Point the starter at weights written by the test instead of the package's own."""
    weights, checksum = tmp_path / "weights.safetensors", tmp_path / "weights.sha256"
    monkeypatch.setattr(starter, "WEIGHTS", weights)
    monkeypatch.setattr(starter, "CHECKSUM", checksum)
    return weights, checksum


def _ship(weights: Path, checksum: Path, tensors: dict[str, torch.Tensor]) -> str:
    save_file(tensors, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    checksum.write_text(f"{digest}  weights.safetensors\n")
    return digest


def test_shipped_tensors_replace_the_base_ones(shipped, tmp_path):
    bias = torch.full((30522,), 0.5, dtype=torch.float16)
    _ship(*shipped, {"cls.predictions.bias": bias})
    path = starter.starter_path()
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(path)
    assert torch.allclose(model.cls.predictions.bias, torch.full((30522,), 0.5))
    # the decoder stays tied to the (base) word embeddings
    assert torch.equal(model.cls.predictions.decoder.weight, model.bert.embeddings.word_embeddings.weight)


def test_a_corrupt_weights_file_is_refused(shipped):
    weights, checksum = shipped
    _ship(weights, checksum, {"cls.predictions.bias": torch.zeros(30522, dtype=torch.float16)})
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(MlmError, match="corrupt"):
        starter.starter_path()


def test_first_use_from_several_threads_assembles_once(shipped):
    _ship(*shipped, {"cls.predictions.bias": torch.ones(30522, dtype=torch.float16)})
    paths, errors = [], []

    def use() -> None:
        try:
            paths.append(starter.starter_path())
        except Exception as exc:  # collected so the assertion below can show it
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(paths)) == 1 and (paths[0] / "model.safetensors").is_file()
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".")]  # no temp folder left
