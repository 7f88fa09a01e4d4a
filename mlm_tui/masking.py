"""The masked-LM collator: pick 15% of tokens (or of whole words), then 80% [MASK], 10% random, 10% kept.

Same rule as transformers' `DataCollatorForLanguageModeling` and the course's whole-word collator, but
vectorised over a batch of token-id tensors with an explicit generator, so a (seed, step) pair always
gives the same masks: training resumes exactly, evaluation is reproducible, and the Chunks pane can show
what the collator would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlm_tui.vocab import word_starts

IGNORE = -100


@dataclass
class TokenTables:
    """Per-vocabulary facts the collator needs, computed once per tokenizer."""

    mask_id: int
    vocab_size: int
    special: torch.Tensor  # bool[vocab]: never masked
    word_start: torch.Tensor  # bool[vocab]: token begins a word

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenTables:
        vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
        special = torch.zeros(vocab_size, dtype=torch.bool)
        special[list(tokenizer.all_special_ids)] = True
        word_start = word_start_table(tokenizer, vocab_size) | special
        return cls(tokenizer.mask_token_id, vocab_size, special, word_start)


def word_start_table(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """Which tokens start a word (see `vocab.word_starts`, the rule the vocabulary view shares)."""
    return torch.from_numpy(word_starts(tokenizer, tokenizer.get_vocab(), vocab_size))


def generator_for(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def select_positions(ids: torch.Tensor, tables: TokenTables, probability: float, whole_word: bool,
                     gen: torch.Generator) -> torch.Tensor:
    """Boolean mask of positions to predict; special tokens are never chosen."""
    special = tables.special[ids]
    if not whole_word:
        chosen = torch.rand(ids.shape, generator=gen) < probability
        return chosen & ~special
    starts = tables.word_start[ids]
    word_index = starts.long().cumsum(dim=1)  # tokens of one word share an index within a row
    word_pick = torch.rand(ids.shape[0], ids.shape[1] + 1, generator=gen) < probability
    chosen = torch.gather(word_pick, 1, word_index)
    return chosen & ~special


def mask_batch(ids: torch.Tensor, tables: TokenTables, probability: float = 0.15, whole_word: bool = False,
               gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) for a batch of chunks; labels are -100 where nothing is predicted."""
    gen = gen or torch.Generator().manual_seed(0)
    ids = ids.long()
    chosen = select_positions(ids, tables, probability, whole_word, gen)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = tables.mask_id
    randomise = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[randomise] = torch.randint(tables.vocab_size, ids.shape, generator=gen)[randomise]
    return inputs, labels


EVAL_BLOCK = 256  # chunks masked together with one generator: masks do not depend on the batch size


def fixed_masks(chunks: np.ndarray, tables: TokenTables, probability: float, seed: int,
                whole_word: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a set of chunks once with a fixed seed (the course's `insert_random_mask`), for evaluation."""
    ids = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.int64))
    inputs, labels = [], []
    for block, start in enumerate(range(0, len(ids), EVAL_BLOCK)):
        i, lab = mask_batch(ids[start : start + EVAL_BLOCK], tables, probability, whole_word,
                            generator_for(seed, block))
        inputs.append(i)
        labels.append(lab)
    if not inputs:
        return ids, ids
    return torch.cat(inputs), torch.cat(labels)
