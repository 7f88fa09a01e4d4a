"""The targeted word test of a run: the words that matter to a corpus, each occurrence masked whole, filled
in by the base model and by the run's model.

A run's own test chunks are masked at random (15% of tokens); in a sample of 100 chunks only markup and
function words are masked often enough to compare. This test chooses the words instead: the vocabulary
view's words most in need of adapting (its ranking, `vocab.VocabReport.top`), the corpus's most frequent
content words, and, for a section of their own, its most frequent punctuation, markup, numbers and general
English words (the general reference's most frequent words). Each word's whole-word occurrences in the
run's test split, never its training text, are masked, all of the word's pieces, up to a cap per word.

An occurrence's loss is the summed cross-entropy of the word's pieces (nats to spell the whole word); a
word's loss is the mean over its occurrences. Occurrences are masked inside the test split's own chunks
(cut at the run's chunk size, as training cuts text), several to a chunk up to the run's masking share and
never two side by side, so a word is filled in about the context the run's perplexity sees, and the test
costs a few times that perplexity. The change is paired (the same occurrences under both models); its
uncertainty is a bootstrap over the occurrences, and only a change whose interval excludes zero counts as
easier or harder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mlm_tui.chunking import TokenizedSplit
from mlm_tui.errors import RunCancelled
from mlm_tui.heads import masked_logits
from mlm_tui.masking import IGNORE
from mlm_tui.vocab import VocabReport, Vocabulary, WordStat, count_words, reference_split, word_positions

DOMAIN = "domain"  # among the vocabulary view's words most in need of adapting
CONTENT = "content"  # among the corpus's most frequent other words
GENERAL = "general"  # punctuation, markup, numbers, or among general English's most frequent words
BETTER, WORSE, UNCHANGED, TOO_FEW = "better", "worse", "unchanged", "too few"

PER_WORD = 20  # occurrences measured per word, at most
FREQUENT_WORDS = 30  # the corpus's most frequent content words measured beside the domain's
GENERAL_WORDS = 20  # and its most frequent punctuation, markup and general words, for their own section
GENERAL_TOP = 100  # the reference's this many most frequent words count as general English
RESAMPLES = 2000  # bootstrap resamples of a word's occurrences
LEVEL = 0.95  # of the change's interval
SEED = 0  # which occurrences are measured when a word has more than the cap, and the bootstrap's draws


@dataclass
class Target:
    word: WordStat
    kind: str  # DOMAIN, CONTENT or GENERAL


@dataclass
class WordTestSet:
    """Test-split chunks with the chosen occurrences masked, and which occurrence each masked token is of."""

    inputs: torch.Tensor  # (rows, chunk size): a test chunk, the occurrences measured in it masked
    labels: torch.Tensor  # the true ids at masked positions, IGNORE elsewhere
    chunk: np.ndarray  # per row: its chunk of the test split (`split.chunks(chunk_size)`)
    piece_of: np.ndarray  # per masked token (row-major order of `labels != IGNORE`): its occurrence
    target: np.ndarray  # per occurrence: its word (index into the targets)
    position: np.ndarray  # per occurrence: where it begins in the test split
    found: np.ndarray  # per target: its whole-word occurrences in the test chunks, before the cap

    @property
    def occurrences(self) -> int:
        return len(self.target)


@dataclass
class WordResult:
    """One word's figures: losses in nats, the mean over its occurrences of its pieces' summed loss."""

    word: str
    kind: str
    pieces: list[str]
    occurrences: int  # measured (at most the cap)
    found: int  # in the test split's chunks
    loss_before: float
    loss_after: float
    ci: tuple[float, float] | None  # of the mean change (LEVEL bootstrap interval); None below 2 occurrences
    top_before: float  # share of its occurrences where the word is the model's top fill
    top_after: float
    verdict: str  # BETTER, WORSE, UNCHANGED or TOO_FEW

    @property
    def change(self) -> float:
        return self.loss_after - self.loss_before

    @property
    def total(self) -> float:
        """The change summed over the occurrences measured: how much the word's fall (or rise) weighs."""
        return self.change * self.occurrences

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "count": self.occurrences, "loss_before": self.loss_before,
                "loss_after": self.loss_after, "occurrences": self.occurrences, "found": self.found,
                "change": self.change, "total_change": self.total,
                "ci": list(self.ci) if self.ci is not None else None, "domain": self.kind == DOMAIN,
                "kind": self.kind, "pieces": self.pieces, "top_fill_before": self.top_before,
                "top_fill_after": self.top_after}


def is_markup(word: str) -> bool:
    """Punctuation, markup or a number: a word without a letter."""
    return not any(c.isalpha() for c in word)


def general_words(tokenizer: Any, vocabulary: Vocabulary, limit: int = GENERAL_TOP) -> set[tuple[int, ...]]:
    """The piece ids of the general-English reference's `limit` most frequent words."""
    counts = count_words({"reference": reference_split(tokenizer)}, vocabulary).words(1)
    return {w.ids for w in sorted(counts, key=lambda w: -w.count)[:limit]}


def choose_targets(report: VocabReport, general: set[tuple[int, ...]], frequent: int = FREQUENT_WORDS,
                   general_count: int = GENERAL_WORDS) -> list[Target]:
    """The vocabulary view's top words (`report.top`, most in need first), then the corpus's most frequent
    content words, then its most frequent general words."""
    def kind_of(w: WordStat, usual: str) -> str:
        return GENERAL if w.ids in general or is_markup(w.word) else usual

    out = [Target(w, kind_of(w, DOMAIN)) for w in report.top]
    seen = {w.ids for w in report.top}
    wanted = {CONTENT: frequent, GENERAL: general_count}
    for w in sorted(report.words(), key=lambda w: (-w.count, w.word)):
        kind = kind_of(w, CONTENT)
        if w.ids not in seen and wanted[kind] > 0:
            out.append(Target(w, kind))
            wanted[kind] -= 1
        if not any(wanted.values()):
            break
    return out


def build(split: TokenizedSplit, targets: Sequence[Target], vocabulary: Vocabulary, chunk_size: int,
          mask_id: int, probability: float, per_word: int = PER_WORD, seed: int = SEED) -> WordTestSet:
    """Mask up to `per_word` whole-word occurrences of each target in the split's chunks (when there are
    more, a seeded sample, taken first from chunks that earlier targets already use). A chunk takes
    occurrences until about `probability` of its tokens are masked and never two words side by side; the
    rest go to another copy of the chunk."""
    limit = split.tokens // chunk_size * chunk_size
    rng = np.random.default_rng(seed)
    found = np.zeros(len(targets), dtype=np.int64)
    chosen: list[tuple[int, int, int]] = []  # (position, pieces, target)
    used = np.zeros(limit // chunk_size, dtype=bool)
    for t, target in enumerate(targets):
        n = len(target.word.ids)
        at = word_positions(split, target.word.ids, vocabulary, limit)
        at = at[at % chunk_size + n <= chunk_size]  # a word cut by a chunk's end is no whole word there
        found[t] = len(at)
        if len(at) > per_word:  # a sample, from chunks already in the test first: fewer chunks to run
            inside = used[at // chunk_size]
            order = np.concatenate([rng.permutation(np.flatnonzero(inside)),
                                    rng.permutation(np.flatnonzero(~inside))])
            at = np.sort(at[order[:per_word]])
        used[at // chunk_size] = True
        chosen += [(int(p), n, t) for p in at]
    chosen.sort()
    budget = max(1, round(probability * chunk_size))
    rows: list[list[tuple[int, int, int]]] = []  # per row: (offset, pieces, occurrence)
    row_chunk: list[int] = []
    rows_of: dict[int, list[int]] = {}
    for occ, (pos, n, _) in enumerate(chosen):
        c, off = divmod(pos, chunk_size)
        row = next((r for r in rows_of.get(c, [])
                    if sum(m for _, m, _ in rows[r]) + n <= budget and rows[r][-1][0] + rows[r][-1][1] < off),
                   None)  # occurrences come in order: only the row's last one can be next to this one
        if row is None:
            row = len(rows)
            rows.append([])
            row_chunk.append(c)
            rows_of.setdefault(c, []).append(row)
        rows[row].append((off, n, occ))
    chunks = split.chunks(chunk_size)
    inputs = np.array(chunks[row_chunk], dtype=np.int64).reshape(len(rows), chunk_size)
    labels = np.full_like(inputs, IGNORE)
    owner = np.full_like(inputs, -1)
    for r, row in enumerate(rows):
        for off, n, occ in row:
            labels[r, off : off + n] = inputs[r, off : off + n]
            inputs[r, off : off + n] = mask_id
            owner[r, off : off + n] = occ
    targets_of = np.array([t for _, _, t in chosen], dtype=np.int64)
    positions = np.array([p for p, _, _ in chosen], dtype=np.int64)
    return WordTestSet(torch.from_numpy(inputs), torch.from_numpy(labels), np.asarray(row_chunk, np.int64),
                       owner[labels != IGNORE], targets_of, positions, found)


def occurrence_losses(model: Any, testset: WordTestSet, batch_size: int = 32, device: Any = "cpu",
                      cancelled: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per occurrence: the summed cross-entropy of its pieces, and whether the model's top fill of every
    piece is the true one (the word is its top joint fill)."""
    device = torch.device(device)
    losses, right = [], []
    with torch.inference_mode():
        for start in range(0, len(testset.inputs), batch_size):
            if cancelled is not None and cancelled():
                raise RunCancelled("cancelled")
            ids = testset.inputs[start : start + batch_size].to(device)
            labels = testset.labels[start : start + batch_size].to(device)
            select = labels != IGNORE
            logits = masked_logits(model, ids, select).float()
            truth = labels[select]
            losses.append(torch.nn.functional.cross_entropy(logits, truth, reduction="none").cpu())
            right.append((logits.argmax(-1) == truth).cpu())
    n = testset.occurrences
    if not losses:
        return np.zeros(0), np.zeros(0, dtype=bool)
    total = np.bincount(testset.piece_of, weights=torch.cat(losses).double().numpy(), minlength=n)
    wrong = np.bincount(testset.piece_of, weights=(~torch.cat(right)).numpy().astype(float), minlength=n)
    return total, wrong == 0


def paired_interval(change: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES,
                    level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean of paired changes; None below two changes."""
    if len(change) < 2:
        return None
    means = change[rng.integers(0, len(change), (resamples, len(change)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def results(targets: Sequence[Target], testset: WordTestSet, before: tuple[np.ndarray, np.ndarray],
            after: tuple[np.ndarray, np.ndarray], min_count: int) -> list[WordResult]:
    """Every target measured at least once, with its verdict: easier or harder when its interval lies
    beyond zero, on `min_count` occurrences at least (fewer: TOO_FEW, whatever the figures)."""
    rng = np.random.default_rng(SEED)
    out = []
    for t, target in enumerate(targets):
        occ = np.flatnonzero(testset.target == t)
        if not len(occ):
            continue
        ci = paired_interval(after[0][occ] - before[0][occ], rng)
        if len(occ) < min_count or ci is None:
            verdict = TOO_FEW
        else:
            verdict = BETTER if ci[1] < 0 else WORSE if ci[0] > 0 else UNCHANGED
        losses = [float(before[0][occ].mean()), float(after[0][occ].mean())]
        tops = [float(before[1][occ].mean()), float(after[1][occ].mean())]
        out.append(WordResult(target.word.word, target.kind, target.word.pieces, len(occ),
                              int(testset.found[t]), *losses, ci, *tops, verdict))
    return out


@dataclass
class Summary:
    """The word test in one line: the vocabulary view's words, how many got easier, harder or neither."""

    domain_words: int  # the vocabulary view's words tried (punctuation and markup among them left out)
    min_count: int
    measured: int  # of those, measured on `min_count` occurrences or more
    better: int
    worse: int
    unchanged: int
    median_before: float | None  # median over the measured words of their loss
    median_after: float | None
    top_fill_before: int  # measured words that are the top fill in most of their occurrences
    top_fill_after: int

    @classmethod
    def of(cls, targets: Sequence[Target], words: Sequence[WordResult], min_count: int) -> Summary:
        domain = [w for w in words if w.kind == DOMAIN and w.verdict != TOO_FEW]
        before = float(np.median([w.loss_before for w in domain])) if domain else None
        after = float(np.median([w.loss_after for w in domain])) if domain else None
        return cls(sum(t.kind == DOMAIN for t in targets), min_count, len(domain),
                   sum(w.verdict == BETTER for w in domain), sum(w.verdict == WORSE for w in domain),
                   sum(w.verdict == UNCHANGED for w in domain), before, after,
                   sum(w.top_before > 0.5 for w in domain), sum(w.top_after > 0.5 for w in domain))

    def line(self) -> str:
        head = (f"of the corpus's {self.domain_words} words most cut into pieces, {self.measured} occur "
                f"{self.min_count}+ times in the test split")
        if not self.measured or self.median_before is None or self.median_after is None:
            return head + ": too few to tell what the run learned"
        return (f"{head} (median loss {self.median_before:.2f} -> {self.median_after:.2f} nats): "
                f"{self.better} got easier, {self.worse} got harder, {self.unchanged} unchanged within "
                f"noise; {self.top_fill_after} are now the top fill where they occur "
                f"({self.top_fill_before} before)")

    def to_dict(self) -> dict[str, Any]:
        return {"domain_words": self.domain_words, "min_count": self.min_count, "measured": self.measured,
                "better": self.better, "worse": self.worse, "unchanged": self.unchanged,
                "median_loss_before": self.median_before, "median_loss_after": self.median_after,
                "top_fill_before": self.top_fill_before, "top_fill_after": self.top_fill_after,
                "text": self.line()}
