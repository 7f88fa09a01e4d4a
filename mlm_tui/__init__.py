"""mlm-tui: a terminal workbench for masked-language-model domain adaptation.

The package root stays import-light (no torch, no transformers) so the workbench paints at once;
`load_model` pulls the heavy libraries in on first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlm_tui.models import ModelHandle


def load_model(ref: str = "starter", *, allow_pickle: bool = False) -> ModelHandle:
    """Resolve a model reference (directory, run id, `starter`, hub id) and load it, cached in memory."""
    from mlm_tui.models import load_model as _load

    return _load(ref, allow_pickle=allow_pickle)


__all__ = ["__version__", "load_model"]
