"""What a run learned: the targeted word test on the run's test split, and fills on its own sentences.

Perplexity says by how much a run improved; this says on which words, in the domain's own words. The
word test (`word_test`) masks, one whole word at a time, the occurrences in the run's test split of the
words the vocabulary view ranks as most in need of adapting, of the corpus's most frequent content words,
and of its most frequent punctuation, markup and general words (listed apart unless `mixed`), and fills
them in with the base model and with the run's model (its final model, or the last checkpoint of a run
that did not finish). A word is easier or harder only when its change is beyond its interval; the lists are
ranked by the total change (occurrences x mean change), so frequent domain words come first.

Probes are the course's "before and after fills", chosen from the test split instead of typed: a
sentence where a domain word occurs, all of its pieces masked, each model's top joint fills, and the rank
of the true word among the joint fills (pieces scored independently, summed log-probabilities, as a
fill-mask call scores several masks; exact up to `RANK_LIMIT`, None beyond), with each piece's own rank
and probability, which move long before the joint rank of a word of several pieces enters the top 1000.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlm_tui import atomic, word_test
from mlm_tui.chunking import TokenizedSplit
from mlm_tui.errors import MlmError, UsageError
from mlm_tui.fill import MASK_ALIAS
from mlm_tui.heads import masked_logits
from mlm_tui.textsafe import printable
from mlm_tui.vocab import Vocabulary, WordStat, word_positions
from mlm_tui.word_test import BETTER, GENERAL, UNCHANGED, WORSE, Summary, Target, WordResult

if TYPE_CHECKING:
    from mlm_tui.models import ModelHandle
    from mlm_tui.run_settings import TrainConfig
    from mlm_tui.rundata import RunChunks
    from mlm_tui.runstore import Run

RANK_LIMIT = 1000  # joint fills ranked exactly up to here
FILLS = 5
SENTENCE_ENDS = frozenset({".", "!", "?"})
PROBE_WINDOW = 48  # tokens either side of the word, at most, before cutting at sentence ends
DOMAIN_WORDS = 200  # the vocabulary view's words measured (and tried as probes), most in need first
FINAL_MODEL = "final model"  # the report's `model` when it measured the run's final model
WORD_WIDTH = 24  # the word lists' word column at its widest: a longer word pushes its own row out


@dataclass
class Probe:
    text: str  # the sentence with the word's pieces masked
    word: str
    rank_before: int | None  # 1 = the model's top fill; None: beyond RANK_LIMIT
    rank_after: int | None
    fills_before: list[str]
    fills_after: list[str]
    pieces: list[str] = field(default_factory=list)
    piece_ranks_before: list[int] = field(default_factory=list)  # each true piece's rank at its mask
    piece_ranks_after: list[int] = field(default_factory=list)
    piece_probs_before: list[float] = field(default_factory=list)  # and its probability there
    piece_probs_after: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "word": self.word, "rank_before": self.rank_before,
                "rank_after": self.rank_after, "fills_before": self.fills_before,
                "fills_after": self.fills_after, "pieces": self.pieces,
                "piece_ranks_before": self.piece_ranks_before, "piece_ranks_after": self.piece_ranks_after,
                "piece_probs_before": self.piece_probs_before, "piece_probs_after": self.piece_probs_after}


@dataclass
class LearnedReport:
    """The word test's figures for every word measured, and the probes. The lists hold `top` words each;
    punctuation, markup and general words are in `general` unless `mixed` puts them in the lists."""

    run_id: str
    base: str
    model: str  # which of the run's models: FINAL_MODEL, or a checkpoint of an unfinished run
    summary: Summary
    words: list[WordResult] = field(repr=False)
    probes: list[Probe]
    top: int = 30
    mixed: bool = False
    per_word: int = word_test.PER_WORD  # occurrences measured per word, at most
    occurrences: int = 0  # measured, all words together
    rows: int = 0  # chunks of the test split the word test ran the models on
    mask_token: str = MASK_ALIAS  # the run's tokenizer's, as the probes' text writes its masks

    def _listed(self, verdict: str) -> list[WordResult]:
        return [w for w in self.words if w.verdict == verdict and (self.mixed or w.kind != GENERAL)]

    @property
    def better(self) -> list[WordResult]:
        """Easier beyond noise, the largest total fall first."""
        return sorted(self._listed(BETTER), key=lambda w: (w.total, w.word))[: self.top]

    @property
    def worse(self) -> list[WordResult]:
        """Harder beyond noise, the largest total rise first."""
        return sorted(self._listed(WORSE), key=lambda w: (-w.total, w.word))[: self.top]

    @property
    def unchanged(self) -> list[WordResult]:
        """Measured often enough, no change beyond noise; the most often measured first."""
        return sorted(self._listed(UNCHANGED), key=lambda w: (-w.occurrences, w.word))[: self.top]

    @property
    def general(self) -> list[WordResult]:
        """Punctuation, markup, numbers and general English, measured often enough (empty when mixed)."""
        if self.mixed:
            return []
        out = [w for w in self.words if w.kind == GENERAL and w.verdict != word_test.TOO_FEW]
        return sorted(out, key=lambda w: (w.total, w.word))[: self.top]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "base": self.base, "model": self.model,
                "summary": self.summary.to_dict(), "better": [w.to_dict() for w in self.better],
                "worse": [w.to_dict() for w in self.worse],
                "unchanged": [w.to_dict() for w in self.unchanged],
                "general": [w.to_dict() for w in self.general], "probes": [p.to_dict() for p in self.probes],
                "per_word": self.per_word, "occurrences": self.occurrences, "rows": self.rows}

    def fill_sentence(self, probe: Probe) -> str:
        """A probe's sentence as Fill and `mlm-tui fill` take it with any model: its masks, one a piece of
        the word as the probe masks it, written [MASK] (a RoBERTa run's probes show `<mask>`)."""
        return probe.text.replace(self.mask_token, MASK_ALIAS)


def _rank(rank: int | None) -> str:
    return str(rank) if rank is not None else f">{RANK_LIMIT}"


def head_lines(report: LearnedReport, mix: str = "--all") -> list[str]:
    """The report up to its probes, as `mlm-tui runs learned` prints it and the workbench shows it: the
    summary line first, what was measured, the words easier and harder beyond noise and the punctuation,
    markup and general words (a row each; the word column as wide as the longest word listed, up to
    WORD_WIDTH, so that the rows fit 80 columns), the words unchanged within noise, and the probes' title.
    `mix` names what mixes the general words into the lists: the CLI's flag, the view's key. Printable."""
    lines = [report.summary.line(), "",
             f"run {report.run_id} ({report.model}), base model {report.base}: each word's occurrences in "
             f"the run's test split masked whole, at most {report.per_word} a word ({report.occurrences:,} "
             f"in {report.rows:,} chunks); loss = mean over its occurrences of its pieces' summed "
             "cross-entropy (nats), before -> after, the change's 95% interval, occurrences x change"]
    general = "" if report.mixed else f" (punctuation, markup and general words apart; {mix} mixes them in)"
    sections = (("easier beyond noise" + general, report.better), ("harder beyond noise", report.worse),
                ("punctuation, markup and general English", report.general))
    width = min(WORD_WIDTH, max((len(w.word) for _, words in sections for w in words), default=0))
    for title, words in sections:
        if words or title != sections[2][0]:
            lines += ["", f"{title}:" if words else f"{title}: none"]
        lines += [f"  {w.word:<{width}} {w.occurrences:>4}x  {w.loss_before:6.2f} -> {w.loss_after:6.2f}  "
                  f"{w.change:+6.2f} [{w.ci[0]:+.2f}, {w.ci[1]:+.2f}]  {w.total:+8.1f}"
                  for w in words if w.ci is not None]
    if report.unchanged:
        names = ", ".join(w.word for w in report.unchanged)
        lines += ["", f"unchanged within noise ({report.summary.min_count}+ occurrences): {names}"]
    if report.probes:
        lines += ["", "probes from the test split: the true word's rank among the joint fills, before -> "
                  "after; each piece's own rank (probability)"]
    return [printable(line) for line in lines]


def probe_lines(probe: Probe) -> list[str]:
    """One probe as `mlm-tui runs learned` prints it: the word, its joint rank and each piece's rank and
    probability, before -> after; the sentence on a line of its own; each model's fills, ` | ` between
    them (a fill may be punctuation, or hold a comma). Printable."""
    pieces = ", ".join(f"{piece} {a} ({pa:.2g}) -> {b} ({pb:.2g})" for piece, a, b, pa, pb in zip(
        probe.pieces, probe.piece_ranks_before, probe.piece_ranks_after, probe.piece_probs_before,
        probe.piece_probs_after, strict=True))
    lines = [f"  {probe.word}: rank {_rank(probe.rank_before)} -> {_rank(probe.rank_after)}; pieces {pieces}",
             f"    {probe.text}", f"    before: {' | '.join(probe.fills_before)}",
             f"    after:  {' | '.join(probe.fills_after)}"]
    return [printable(line) for line in lines]


def report_lines(report: LearnedReport, mix: str = "--all") -> list[str]:
    """The whole report as text (`head_lines`, then every probe's `probe_lines`)."""
    return head_lines(report, mix) + [line for p in report.probes for line in probe_lines(p)]


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
            true = log_probs[torch.arange(len(word.ids)), torch.tensor(word.ids)]
            ranks = (log_probs > true[:, None]).sum(-1) + 1
            results.append((*joint_fills(log_probs, word.ids), ranks.tolist(), true.exp().tolist()))
        shown = [int(i) for i in ids if not vocabulary.ignored[i] or i == mask_id]
        (fills_a, rank_a, ranks_a, probs_a), (fills_b, rank_b, ranks_b, probs_b) = results
        out.append(Probe(vocabulary.decode([shown])[0], word.word, rank_a, rank_b,
                         vocabulary.decode(fills_a), vocabulary.decode(fills_b), word.pieces,
                         ranks_a, ranks_b, probs_a, probs_b))
    return out


def learned(base_model: Any, run_model: Any, tokenizer: Any, test_split: TokenizedSplit,
            targets: Sequence[Target], run_id: str, base: str, *, chunk_size: int, mlm_probability: float,
            model: str = FINAL_MODEL, top: int = 30, min_count: int = 5, per_word: int = word_test.PER_WORD,
            probes: int = 8, mixed: bool = False, batch_size: int = 32, device: Any = "cpu",
            cancelled: Callable[[], bool] | None = None) -> LearnedReport:
    """The whole "what a run learned" view: the word test of `targets` (`word_test.choose_targets`) on
    the test split under both models, and probes for its domain words."""
    for m in (base_model, run_model):
        m.eval()
    vocabulary = Vocabulary.of(tokenizer)
    testset = word_test.build(test_split, targets, vocabulary, chunk_size, tokenizer.mask_token_id,
                              mlm_probability, per_word)
    before, after = (word_test.occurrence_losses(m, testset, batch_size, device, cancelled)
                     for m in (base_model, run_model))
    words = word_test.results(targets, testset, before, after, min_count)
    domain = [t.word for t in targets if t.kind == word_test.DOMAIN]
    found = probe([base_model, run_model], tokenizer, vocabulary, test_split, domain, probes, device)
    return LearnedReport(run_id, base, model, Summary.of(targets, words, min_count), words, found, top, mixed,
                         per_word, testset.occurrences, len(testset.inputs), tokenizer.mask_token)


@dataclass
class RunModels:
    """A run opened for comparison: its settings, its base model and its model, its data as it chose it."""

    run: Run
    config: TrainConfig
    which: str  # FINAL_MODEL, or the last checkpoint of a run that did not finish
    base: ModelHandle
    model: ModelHandle
    device: Any
    splits: dict[str, TokenizedSplit]
    chosen: RunChunks  # its train and test split and chunks, as training chose them


def open_run(run_id: str, device: str = "auto", cancelled: Callable[[], bool] | None = None,
             status: Callable[[str], None] | None = None) -> RunModels:
    """Load run `run_id`'s base model and its final model (or, for a run that did not finish, its last
    checkpoint), and rebuild its data as training chose it (`rundata`)."""
    from mlm_tui import runstore
    from mlm_tui.corpus import fingerprint
    from mlm_tui.models import load_model
    from mlm_tui.rundata import run_splits, select_chunks
    from mlm_tui.training import pick_device

    say = status or (lambda message: None)
    refs = runstore.model_refs(run_id)
    run, info, config, which = refs.run, refs.info, refs.config, refs.which
    if info.plan is None:
        raise UsageError(f"run {run_id} recorded no plan: its test split cannot be rebuilt")
    if info.corpus_fingerprint is not None and fingerprint(config.corpus) != info.corpus_fingerprint:
        raise UsageError(f"the corpus {config.corpus} changed since run {run_id} read it: its test split "
                         "cannot be rebuilt")
    device = pick_device(device)
    say(f"loading the base model {config.model} and the run's {which}")
    try:
        base = load_model(refs.base, allow_pickle=config.allow_pickle, device=device)
    except MlmError as exc:
        raise MlmError(f"the base model of run {run_id}, {config.model}, can't be loaded any more: "
                       f"{exc}") from None
    final = load_model(str(refs.model), allow_pickle=config.allow_pickle, device=device)
    # The run's data, read as the run read it (`rundata.run_splits`: its hub options too), and the test
    # size it resolved: the one given, else its plan's, as a resume does.
    test_size = config.test_size if config.test_size is not None else info.plan.test_chunks
    splits = run_splits(config, base.tokenizer, test_size, cancelled=cancelled, status=say)
    chosen = select_chunks(splits, config, test_size)
    return RunModels(run, config, which, base, final, device, splits, chosen)


def word_targets(opened: RunModels, min_count: int = 5, domain_words: int = DOMAIN_WORDS,
                 cancelled: Callable[[], bool] | None = None) -> list[Target]:
    """The words a run's word test measures: the vocabulary view's ranking over the run's corpus, its
    frequent content words and its frequent general words (`word_test.choose_targets`)."""
    from mlm_tui.vocab import vocab_report

    config, tokenizer = opened.config, opened.base.tokenizer
    vocab = vocab_report(opened.splits, tokenizer, config.corpus, config.model, min_count, domain_words,
                         reference=False, cancelled=cancelled)
    return word_test.choose_targets(vocab, word_test.general_words(tokenizer, vocab.counts.vocabulary))


def run_learned(run_id: str, *, top: int = 30, min_count: int = 5, per_word: int = word_test.PER_WORD,
                domain_words: int = DOMAIN_WORDS, probes: int = 8, mixed: bool = False, device: str = "auto",
                cancelled: Callable[[], bool] | None = None,
                status: Callable[[str], None] | None = None) -> LearnedReport:
    """What run `run_id` learned, from its files (`open_run`): the word test of its test split, never its
    training text, and probes. The CLI's `runs learned` and the workbench call this; both models stay
    loaded in `models`' cache for the next call."""
    say = status or (lambda message: None)
    opened = open_run(run_id, device, cancelled, say)
    targets = word_targets(opened, min_count, domain_words, cancelled)
    config, test = opened.config, opened.chosen.test
    say(f"filling in {len(targets)} words at their occurrences in the run's test split "
        f"({test.documents:,} documents), at most {per_word} each")
    report = learned(opened.base.model, opened.model.model, opened.base.tokenizer, test, targets, run_id,
                     config.model, chunk_size=config.chunk_size, mlm_probability=config.mlm_probability,
                     model=opened.which, top=top, min_count=min_count, per_word=per_word, probes=probes,
                     mixed=mixed, device=opened.device, cancelled=cancelled)
    with contextlib.suppress(OSError):  # for `runs show`; a run folder it cannot write keeps none
        atomic.write_json(opened.run.learned_path, {
            "summary": report.summary.to_dict(), "model": opened.which, "per_word": per_word,
            "measured": datetime.datetime.now().isoformat(timespec="seconds")})
    return report
