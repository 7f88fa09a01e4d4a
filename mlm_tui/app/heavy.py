"""Model and tokenizer loading for the app's workers: torch/transformers imported off the event loop, and
one load at a time.

transformers is not safe to import or load from several threads at once: two workers importing it
together can see `cannot import name 'AutoTokenizer'`, and two `from_pretrained` calls (the model for
Fill and the tokenizer for Chunks, both assembling the starter on first use) can fail with `Cannot copy
out of meta tensor`. A load takes seconds and happens rarely, so serialising them costs nothing visible.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlm_tui.models import ModelHandle

_lock = threading.Lock()


def load_model(ref: str) -> ModelHandle:
    from mlm_tui import models

    with _lock:
        return models.load_model(ref)


def load_tokenizer(ref: str) -> Any:
    from mlm_tui import models

    with _lock:
        return models.load_tokenizer(ref)


def import_torch() -> Any:
    with _lock:
        import torch

        return torch
