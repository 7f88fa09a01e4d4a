"""Bits per character: a masked LM's fit to a text that compares across vocabularies.

Perplexity is per token, so two tokenizers of the same text (a base model and one whose vocabulary was
extended, `vocab_extend`) are measured over different events and their perplexities do not compare. Bits
per character do: the same text's total cost, divided by its characters, whatever it was cut into.

A masked LM has no left-to-right likelihood; its pseudo-log-likelihood (Salazar et al. 2020) sums
log p(token | the rest) with one token masked at a time. Masking one piece of a word while its other
pieces stay visible makes a split word nearly free (`jar [MASK]` -> `gon`), which would reward exactly the
vocabularies extension removes. So this is the word-aware form (PLL-word-l2r, Kauf & Ivanova 2023): each
token is predicted with itself and the rest of its word to its right masked, its word's earlier pieces
visible. A one-token word costs the same in either form; a word in k pieces costs the chain of its
pieces, left to right, as a left-to-right model would pay it.

Words are the groups whole-word masking uses (`masking.TokenTables.word_start`). A document longer than a
window is measured a window at a time (its context cut there, for every model alike in characters).
Cost: one forward pass of a window's length per token, `COPIES` of them at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from mlm_tui.errors import RunCancelled, UsageError

if TYPE_CHECKING:
    from mlm_tui.corpus import HubOptions

LN2 = math.log(2)
# A window's masked copies go through the model this many at a time: a whole window at once (up to 126
# copies of 128 tokens) held 3 to 4 times a training batch's activations, above a run's own peak.
COPIES = 32
WINDOW = 128  # tokens a window: a run measures in these whatever its chunk size, so that runs compare


@dataclass
class BpcResult:
    bits: float
    characters: int
    words: int  # whitespace-separated words of the text
    tokens: int
    focus_bits: float = 0.0  # over the occurrences of the `focus` words (e.g. the words a run added)
    focus_occurrences: int = 0
    per_focus: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def bpc(self) -> float:
        return self.bits / self.characters if self.characters else math.nan

    @property
    def bits_per_word(self) -> float:
        return self.bits / self.words if self.words else math.nan

    @property
    def focus_bits_per_occurrence(self) -> float | None:
        return self.focus_bits / self.focus_occurrences if self.focus_occurrences else None

    def to_dict(self) -> dict[str, Any]:
        return {"bpc": self.bpc, "bits_per_word": self.bits_per_word, "bits": self.bits,
                "characters": self.characters, "words": self.words, "tokens": self.tokens,
                "focus_bits_per_occurrence": self.focus_bits_per_occurrence,
                "focus_occurrences": self.focus_occurrences}


def word_ends(word_start: np.ndarray) -> np.ndarray:
    """For each token of a window, the index one past the end of its word (the next word's start)."""
    n = len(word_start)
    starts = np.flatnonzero(word_start)
    nxt = np.searchsorted(starts, np.arange(n), side="right")
    return np.where(nxt < len(starts), starts[np.minimum(nxt, len(starts) - 1)], n)


def pll_bits(model: Any, tokenizer: Any, texts: Iterable[str], *, window: int = WINDOW,
             device: Any = "cpu", focus: Sequence[str] = (),
             cancelled: Callable[[], bool] | None = None) -> BpcResult:
    """PLL-word-l2r of `texts` in bits, with the characters, words and tokens it was spread over; with
    `focus`, the bits of those words' own occurrences too (a word's bits: the sum over its tokens)."""
    import torch

    from mlm_tui.heads import mlm_head
    from mlm_tui.masking import TokenTables

    tables = TokenTables.from_tokenizer(tokenizer)
    word_start_table = tables.word_start.numpy()
    frame = _frame(tokenizer)
    room = window - len(frame[0]) - len(frame[1])
    if room < 1:
        raise UsageError(f"a window of {window} tokens has no room for text")
    head = mlm_head(model)
    focus_set = set(focus)
    result = BpcResult(0.0, 0, 0, 0)
    dev = torch.device(device)
    model.eval()
    for text in texts:
        result.characters += len(text)
        result.words += len(text.split())
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        result.tokens += len(ids)
        for start in range(0, len(ids), room):
            if cancelled is not None and cancelled():
                raise RunCancelled("cancelled")
            piece = ids[start : start + room]
            starts = word_start_table[piece].copy()
            starts[0] = True
            bits = _window_bits(model, head, frame, piece, word_ends(starts), tables.mask_id, dev)
            result.bits += float(bits.sum())
            if focus_set:
                _count_focus(result, tokenizer, piece, np.flatnonzero(starts), bits, focus_set)
    return result


def _window_bits(model: Any, head: Any, frame: tuple[list[int], list[int]], piece: list[int],
                 ends: np.ndarray, mask_id: int, device: Any) -> np.ndarray:
    """Each token's bits in one window: its copy masks the token and the rest of its word to its right."""
    import torch

    from mlm_tui.heads import encoder_hidden

    full = torch.tensor([*frame[0], *piece, *frame[1]], device=device)
    offset = len(frame[0])
    n = len(piece)
    copies = full.repeat(n, 1)
    pos = torch.arange(full.shape[0], device=device)
    first = torch.arange(n, device=device)[:, None] + offset
    last = torch.as_tensor(ends, device=device)[:, None] + offset
    copies[(pos[None, :] >= first) & (pos[None, :] < last)] = mask_id
    select = torch.zeros_like(copies, dtype=torch.bool)
    select[torch.arange(n), first[:, 0]] = True
    targets = torch.tensor(piece, device=device)
    bits = []
    with torch.inference_mode():
        for a in range(0, n, COPIES):
            rows, chosen = copies[a : a + COPIES], select[a : a + COPIES]
            if head is None:
                logits = model(input_ids=rows, attention_mask=torch.ones_like(rows)).logits[chosen]
            else:
                hidden = encoder_hidden(model, input_ids=rows, attention_mask=torch.ones_like(rows))
                logits = head(hidden[chosen])
            logp = logits.float().log_softmax(-1)[torch.arange(len(rows)), targets[a : a + COPIES]]
            bits.append(-logp / LN2)
    return torch.cat(bits).cpu().numpy()


def _frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    enc = tokenizer("x", return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    first = special.index(0)
    last = len(special) - special[::-1].index(0)
    return ids[:first], ids[last:]


def _count_focus(result: BpcResult, tokenizer: Any, piece: list[int], starts: np.ndarray, bits: np.ndarray,
                 focus: set[str]) -> None:
    bounds = [*starts.tolist(), len(piece)]
    for a, b in pairwise(bounds):
        word = tokenizer.decode(piece[a:b]).strip()
        if word in focus:
            cost = float(bits[a:b].sum())
            result.focus_bits += cost
            result.focus_occurrences += 1
            result.per_focus.setdefault(word, []).append(cost)


# -- the text measured ----------------------------------------------------------------------------------
HUB_REFUSED = "bits per character read a local corpus's text (files or a folder), not a hub dataset's"


def local_corpus(corpus: str, hub: HubOptions) -> bool:
    """Whether `measured_texts` can read the corpus: local files or a folder read as such (any hub option
    has `load_dataset` read it, whose test split is not read back as text here)."""
    from mlm_tui.corpus import corpus_files

    return corpus_files(corpus) is not None and not hub.given()


def measured_texts(corpus: str, text_field: str = "text", seed: int = 42, max_chars: int | None = None
                   ) -> list[str]:
    """The documents of a corpus's test split (or the documents a run holds out of its train split with
    this seed), in order, until `max_chars` characters (None: all of them; a run's and `eval --bpc`'s
    default is the `bpc_chars` setting): the same text for every model and tokenizer. The corpus is read
    as a stream, and only as far as those characters (a held-out split: its documents counted first)."""
    from mlm_tui.chunking import held_out_documents
    from mlm_tui.corpus import split_streams
    from mlm_tui.rundata import TEST_FRACTION

    streams = split_streams(corpus, text_field)
    name = "test" if "test" in streams else "validation" if "validation" in streams else None
    if name is not None:
        docs: Iterable[str] = (d for batch in streams[name]() for d in batch)
    else:
        train = streams.get("train") or next(iter(streams.values()))
        held = set(held_out_documents(sum(len(batch) for batch in train()), TEST_FRACTION, seed)[1].tolist())
        docs = (d for i, d in enumerate(d for batch in train() for d in batch) if i in held)
    out: list[str] = []
    total = 0
    for doc in docs:
        if max_chars is not None and total >= max_chars:
            break
        out.append(doc if max_chars is None else doc[: max_chars - total])
        total += len(out[-1])
    return out
