"""A model made to keep less for its backward pass when it trains on the CPU: one call for a run's steps
and its range test.

Each switch computes what PyTorch's own path computes (the tests compare), and keeps less of it until the
backward pass, which is what sets a CPU run's peak RSS (README, "Memory of a training run"):
- attention that keeps a bool dropout mask, not the probabilities (`attention.py`);
- dropout that keeps a bool mask (`dropout.py`);
- the vocabulary matrix's gradient made once, without vocabulary-sized temporaries (`vocab_grad.py`),
  in a run of one process (DDP reduces a gradient before the lookup's rows would arrive);
- and, for the process, blocks of 16 MB and more each mapped on their own (`heap.map_large_blocks`).
A GPU keeps its own paths (flash attention, `native_dropout`'s bool mask, a deterministic embedding
backward), so nothing is switched there. The switches live in the model's modules only: a saved model's
files are what they were.
"""

from __future__ import annotations

import torch
from torch import nn


def for_cpu_training(model: nn.Module, device: torch.device | str, processes: int = 1) -> None:
    """Switch what pays for training `model` on `device` with `processes` processes."""
    from mlm_tui import heap
    from mlm_tui.attention import use_for_training
    from mlm_tui.dropout import keep_bool_masks
    from mlm_tui.vocab_grad import add_in_place

    if torch.device(device).type != "cpu":
        return
    heap.map_large_blocks()
    use_for_training(model, device)
    keep_bool_masks(model)
    if processes == 1:
        add_in_place(model)
