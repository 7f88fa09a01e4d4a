"""What a run learned: per-word masked-LM loss before and after, and fills on the user's own sentences.

Perplexity says by how much a run improved; this says on which words. Both models see the run's own
test chunks with the masks its perplexity used (`evaluate.EvalSet`), so the per-word figures add up to
that perplexity: a word's loss is the mean cross-entropy over its masked pieces (every occurrence pooled,
token-weighted, as perplexity is), and its count is how many of its occurrences had a piece masked. Words
are the vocabulary view's (`vocab.word_bounds`: what whole-word masking masks together).

Probes are the course's "before and after fills", chosen from the test split instead of typed: a
sentence where a domain word occurs, all of its pieces masked, each model's top joint fills, and the rank
of the true word among the joint fills (pieces scored independently, summed log-probabilities, as a
fill-mask call scores several masks; exact up to `RANK_LIMIT`, None beyond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlm_tui.chunking import TokenizedSplit
from mlm_tui.errors import MlmError, RunCancelled, UsageError
from mlm_tui.evaluate import EvalSet
from mlm_tui.heads import encoder_hidden, mlm_head
from mlm_tui.masking import IGNORE
from mlm_tui.vocab import Vocabulary, WordStat, word_bounds, word_positions

RANK_LIMIT = 1000  # joint fills ranked exactly up to here
FILLS = 5
SENTENCE_ENDS = frozenset({".", "!", "?"})
PROBE_WINDOW = 48  # tokens either side of the word, at most, before cutting at sentence ends
PROBE_WORDS = 100  # domain words tried, most in need of adapting first, until enough occur in the test split


@dataclass
class WordChange:
    word: str
    count: int  # occurrences with at least one masked piece
    loss_before: float
    loss_after: float
    pieces: list[str] = field(default_factory=list)

    @property
    def change(self) -> float:
        return self.loss_after - self.loss_before

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "count": self.count, "loss_before": self.loss_before,
                "loss_after": self.loss_after}


@dataclass
class Probe:
    text: str  # the sentence with the word's pieces masked
    word: str
    rank_before: int | None  # 1 = the model's top fill; None: beyond RANK_LIMIT
    rank_after: int | None
    fills_before: list[str]
    fills_after: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "word": self.word, "rank_before": self.rank_before,
                "rank_after": self.rank_after, "fills_before": self.fills_before,
                "fills_after": self.fills_after}


@dataclass
class LearnedReport:
    run_id: str
    base: str
    better: list[WordChange]
    worse: list[WordChange]
    probes: list[Probe]
    words: list[WordChange] = field(repr=False, default_factory=list)  # every word masked min_count+ times

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "base": self.base, "better": [w.to_dict() for w in self.better],
                "worse": [w.to_dict() for w in self.worse], "probes": [p.to_dict() for p in self.probes]}


def masked_token_losses(model: Any, evalset: EvalSet, batch_size: int = 32, device: Any = "cpu",
                        cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """Cross-entropy at every masked position of the eval set (row-major order of `labels != -100`):
    the terms whose mean is the perplexity's loss."""
    device = torch.device(device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(evalset), batch_size):
            if cancelled is not None and cancelled():
                raise RunCancelled("cancelled")
            ids = evalset.inputs[start : start + batch_size].to(device)
            labels = evalset.labels[start : start + batch_size].to(device)
            select = labels != IGNORE
            logits = masked_logits(model, ids, select)
            out.append(torch.nn.functional.cross_entropy(logits.float(), labels[select], reduction="none"))
    return torch.cat(out).cpu().numpy() if out else np.empty(0, dtype=np.float32)


def masked_logits(model: Any, ids: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits of a masked LM (in eval mode) at the selected positions, with the vocabulary
    head on those rows only when the family's head is known (see `heads`)."""
    head = mlm_head(model)
    if head is None:
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[select]
    return head(encoder_hidden(model, input_ids=ids, attention_mask=torch.ones_like(ids))[select])


def word_losses(evalset: EvalSet, losses: Sequence[np.ndarray], vocabulary: Vocabulary
                ) -> dict[tuple[int, ...], tuple[int, list[float]]]:
    """Per word (its piece ids): (occurrences with a masked piece, mean loss of its masked pieces under
    each model whose per-position `losses` are given)."""
    labels = evalset.labels.numpy()
    masked = labels != IGNORE
    original = np.where(masked, labels, evalset.inputs.numpy()).ravel()
    rows, width = labels.shape
    keep, begins = word_bounds(original, np.arange(0, rows * width, width), vocabulary)
    occurrence = np.cumsum(begins) - 1  # occurrence number of every kept token
    starts = np.flatnonzero(begins)
    lengths = np.bincount(occurrence[keep], minlength=len(starts))
    where = np.flatnonzero(masked.ravel())
    if len(where) and not keep[where].all():
        raise ValueError("a masked position holds a special token: the eval set does not fit the vocabulary")
    occ = occurrence[where]
    totals = np.stack([np.bincount(occ, weights=loss, minlength=len(starts)) for loss in losses])
    pieces = np.bincount(occ, minlength=len(starts))
    acc: dict[tuple[int, ...], list[Any]] = {}
    for o in np.flatnonzero(pieces).tolist():
        key = tuple(original[starts[o] : starts[o] + lengths[o]].tolist())
        entry = acc.setdefault(key, [0, 0, np.zeros(len(losses))])
        entry[0] += 1
        entry[1] += int(pieces[o])
        entry[2] += totals[:, o]
    return {k: (n, (sums / p).tolist()) for k, (n, p, sums) in acc.items()}


def changes(per_word: dict[tuple[int, ...], tuple[int, list[float]]], vocabulary: Vocabulary,
            min_count: int) -> list[WordChange]:
    """Words masked at least `min_count` times, with their loss before and after, largest fall first."""
    keys = [k for k, (n, _) in per_word.items() if n >= min_count]
    texts = vocabulary.decode(keys)
    out = [WordChange(text, per_word[k][0], per_word[k][1][0], per_word[k][1][1],
                      [vocabulary.pieces[i] for i in k]) for text, k in zip(texts, keys, strict=True)]
    out.sort(key=lambda w: (w.change, w.word))
    return out


def probe_sentences(split: TokenizedSplit, words: Sequence[WordStat], vocabulary: Vocabulary, mask_id: int,
                    limit: int) -> list[tuple[WordStat, np.ndarray, list[int]]]:
    """(word, input ids, masked positions) for the first occurrence in `split` of each word that occurs,
    up to `limit`: the sentence around it (cut at sentence ends, within PROBE_WINDOW tokens either side),
    framed by its document's own special tokens, the word's pieces masked."""
    ends = np.cumsum(split.doc_lengths)
    out: list[tuple[WordStat, np.ndarray, list[int]]] = []
    final = np.array([p.lstrip("Ġ▁").removeprefix("##") in SENTENCE_ENDS for p in vocabulary.pieces])
    for word in words:
        at = word_positions(split, word.ids, vocabulary)
        if not len(at):
            continue
        pos, n = int(at[0]), len(word.ids)
        doc = int(np.searchsorted(ends, pos, side="right"))
        doc_start, doc_end = (int(ends[doc - 1]) if doc else 0), int(ends[doc])
        ids = np.asarray(split.ids[doc_start:doc_end]).astype(np.int64)
        local = pos - doc_start
        text = ~vocabulary.ignored[ids]
        left = max(0, local - PROBE_WINDOW)
        stops = np.flatnonzero(final[ids[left:local]] & text[left:local])
        left = left + int(stops[-1]) + 1 if len(stops) else left
        right = min(len(ids), local + n + PROBE_WINDOW)
        stops = np.flatnonzero(final[ids[local + n : right]] & text[local + n : right])
        right = local + n + int(stops[0]) + 1 if len(stops) else right
        body = [int(i) for i in ids[left:right] if not vocabulary.ignored[i]]
        start = local - left - int(np.count_nonzero(~text[left:local]))
        head = [int(ids[0])] if vocabulary.ignored[ids[0]] else []
        tail = [int(ids[-1])] if vocabulary.ignored[ids[-1]] and len(ids) > 1 else []
        masked = [len(head) + start + k for k in range(n)]
        probe = np.array(head + body + tail, dtype=np.int64)
        probe[masked] = mask_id
        out.append((word, probe, masked))
        if len(out) == limit:
            break
    return out


def joint_fills(log_probs: torch.Tensor, true_ids: Sequence[int]) -> tuple[list[tuple[int, ...]], int | None]:
    """The top FILLS joint fills of k masks scored independently (sum of log-probabilities), and the true
    fill's rank among all joint fills: exact when it is within RANK_LIMIT (the top N sums over positions
    are always made of the top N prefixes and the top N tokens of the next position), else None."""
    scores = torch.zeros(1, dtype=torch.float64)
    seqs = torch.zeros(1, 0, dtype=torch.long)
    for row in log_probs.double():
        top = row.topk(min(RANK_LIMIT, len(row)))
        sums = (scores[:, None] + top.values[None, :]).flatten()
        best = sums.topk(min(RANK_LIMIT, len(sums)))
        prefix, token = best.indices // len(top.values), best.indices % len(top.values)
        seqs = torch.cat([seqs[prefix], top.indices[token][:, None]], dim=1)
        scores = best.values
    found = (seqs == torch.tensor(list(true_ids))).all(dim=1).nonzero()
    rank = int(found[0, 0]) + 1 if len(found) else None
    return [tuple(s) for s in seqs[:FILLS].tolist()], rank


def probe(models: Sequence[Any], tokenizer: Any, vocabulary: Vocabulary, split: TokenizedSplit,
          words: Sequence[WordStat], limit: int = 8, device: Any = "cpu") -> list[Probe]:
    """Before-and-after fills on sentences of the test split holding the given (domain) words."""
    mask_id = tokenizer.mask_token_id
    out = []
    for word, ids, masked in probe_sentences(split, words, vocabulary, mask_id, limit):
        results = []
        for model in models:
            x = torch.from_numpy(ids)[None].to(torch.device(device))
            select = torch.zeros_like(x, dtype=torch.bool)
            select[0, masked] = True
            with torch.inference_mode():
                log_probs = masked_logits(model, x, select).double().log_softmax(-1).cpu()
            results.append(joint_fills(log_probs, word.ids))
        shown = [int(i) for i in ids if not vocabulary.ignored[i] or i == mask_id]
        (fills_a, rank_a), (fills_b, rank_b) = results
        out.append(Probe(vocabulary.decode([shown])[0], word.word, rank_a, rank_b,
                         vocabulary.decode(fills_a), vocabulary.decode(fills_b)))
    return out


def learned(base_model: Any, run_model: Any, tokenizer: Any, evalset: EvalSet, test_split: TokenizedSplit,
            domain_words: Sequence[WordStat], run_id: str, base: str, *, top: int = 30, min_count: int = 5,
            probes: int = 8, batch_size: int = 32, device: Any = "cpu",
            cancelled: Callable[[], bool] | None = None) -> LearnedReport:
    """The whole "what a run learned" view: per-word losses on the run's eval set under both models (the
    largest falls and rises, each word masked at least `min_count` times) and probes on the test split
    for the domain words (e.g. `vocab.VocabReport.top`)."""
    for model in (base_model, run_model):
        model.eval()
    vocabulary = Vocabulary.of(tokenizer)
    losses = [masked_token_losses(m, evalset, batch_size, device, cancelled) for m in (base_model, run_model)]
    ranked = changes(word_losses(evalset, losses, vocabulary), vocabulary, min_count)
    better = [w for w in ranked if w.change < 0][:top]
    worse = [w for w in reversed(ranked) if w.change > 0][:top]
    found = probe([base_model, run_model], tokenizer, vocabulary, test_split, domain_words, probes, device)
    return LearnedReport(run_id, base, better, worse, found, ranked)


def run_learned(run_id: str, *, top: int = 30, min_count: int = 5, probes: int = 8, device: str = "auto",
                cancelled: Callable[[], bool] | None = None,
                status: Callable[[str], None] | None = None) -> LearnedReport:
    """What run `run_id` learned, from its files: its base model and final model on its own test chunks
    with the masks of its perplexity (`rundata`, as training chose and masked them), probes for the
    corpus's domain words (the vocabulary view's ranking). The CLI's `runs learned` and the workbench
    call this; both models stay loaded in `models`' cache for the next call."""
    from mlm_tui import runstore
    from mlm_tui.chunking import tokenize_corpus
    from mlm_tui.corpus import fingerprint
    from mlm_tui.masking import TokenTables
    from mlm_tui.models import load_model
    from mlm_tui.rundata import fixed_evalset, select_chunks
    from mlm_tui.training import pick_device
    from mlm_tui.vocab import vocab_report

    say = status or (lambda message: None)
    run = runstore.find_run(run_id)
    if run is None:
        raise UsageError(f"no run called {run_id!r} (see: mlm-tui runs)")
    info = run.info()
    if info.config is None:
        raise UsageError(f"run {run_id}: {info.config_problem}")
    if info.model_path is None or info.plan is None:
        raise UsageError(f"run {run_id} has no final model ({info.status}): only a completed run can be "
                         "compared with its base model")
    config = info.config
    if info.corpus_fingerprint is not None and fingerprint(config.corpus) != info.corpus_fingerprint:
        raise UsageError(f"the corpus {config.corpus} changed since run {run_id} read it: its test chunks "
                         "cannot be rebuilt")
    device = pick_device(device)
    base_ref = info.model_source if info.model_source and Path(info.model_source).is_dir() else config.model
    say(f"loading the base model {config.model} and the run's model")
    try:
        base = load_model(base_ref, allow_pickle=config.allow_pickle, device=device)
    except MlmError as exc:
        raise MlmError(f"the base model of run {run_id}, {config.model}, can't be loaded any more: "
                       f"{exc}") from None
    final = load_model(str(info.model_path), allow_pickle=config.allow_pickle, device=device)
    splits = tokenize_corpus(config.corpus, base.tokenizer, config.text_field, cancelled=cancelled,
                             status=say)
    # The plan's test size is the one the run resolved: a smaller sample when the split had more chunks,
    # else the whole split, which a test size of that many keeps whole too.
    chosen = select_chunks(splits, config, info.plan.test_chunks)
    evalset = fixed_evalset(chosen.test_chunks, TokenTables.from_tokenizer(base.tokenizer), config)
    domain = vocab_report(splits, base.tokenizer, config.corpus, config.model, min_count, PROBE_WORDS,
                          reference=False, cancelled=cancelled).top
    say(f"measuring both models on the run's {len(evalset)} test chunks")
    return learned(base.model, final.model, base.tokenizer, evalset, chosen.test, domain, run_id,
                   config.model, top=top, min_count=min_count, probes=probes, device=device,
                   cancelled=cancelled)
