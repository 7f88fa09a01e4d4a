"""Importing torch and transformers once, off the event loop, one thread at a time.

transformers resolves its names lazily and that is not thread-safe: two workers importing it at once
(the model loader and the tokenizer loader, say) can see `cannot import name 'AutoTokenizer'`. Every
worker that needs the heavy libraries calls `ensure_imported()` first.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_done = False


def ensure_imported() -> None:
    global _done
    with _lock:
        if _done:
            return
        from mlm_tui.home import configure_hf_environment

        configure_hf_environment()
        import torch  # noqa: F401
        from transformers import AutoModelForMaskedLM, AutoTokenizer  # noqa: F401

        _done = True
