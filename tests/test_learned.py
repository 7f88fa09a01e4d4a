"""What a run learned: the word test's per-word figures and the probes, checked against a direct
computation on tiny models (full forward passes, the plain way, one chunk and one word at a time)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SENTENCES

from mlm_tui import word_test
from mlm_tui.chunking import encode_documents
from mlm_tui.learned import RANK_LIMIT, learned
from mlm_tui.vocab import Vocabulary, count_words, vocab_report
from mlm_tui.word_test import BETTER, CONTENT, DOMAIN, GENERAL, TOO_FEW, UNCHANGED, WORSE, Target

CHUNK = 32


def _nudged(model):
    """A copy of `model` with a seeded nudge to every weight: "training" that changes every word a little."""
    import copy

    after = copy.deepcopy(model)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in after.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return after.eval()


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()
    docs = [f"{SENTENCES[i % len(SENTENCES)]} The hyperphosphorylation of substrate {i} was measured."
            for i in range(40)]
    return tokenizer, base, _nudged(base), encode_documents(tokenizer, docs)


@pytest.fixture(scope="module", params=["wordpiece", "bpe", "unigram"])
def any_vocab(request):
    """(tokenizer, its Rust tokenizer, word-start marker, base, after, split) for a tiny BERT with the real
    WordPiece vocabulary, and tiny RoBERTas on the byte-level BPE and Unigram vocabularies built in
    test_vocab."""
    if request.param == "wordpiece":
        tokenizer, base, after, split = request.getfixturevalue("setup")
        return tokenizer, tokenizer.backend_tokenizer, "##", base, after, split
    from test_vocab import _build, _text
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

    tok, marker = _build(request.param)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    base = RobertaForMaskedLM(config).eval()
    return tokenizer, tok, marker, base, _nudged(base), encode_documents(tokenizer, _text(2, 60))


def _whole_words(tok, marker: str, split, word: tuple[int, ...]) -> list[int]:
    """Where `word` occurs as a whole word inside one chunk of the split, found token by token."""
    from test_vocab import _walk

    ends = np.cumsum(split.doc_lengths)
    docs = [split.ids[e - n : e].tolist() for e, n in zip(ends, split.doc_lengths, strict=True)]
    limit = split.tokens // CHUNK * CHUNK
    return [p for p, w in _walk(tok, marker, docs)
            if w == word and p // CHUNK == (p + len(w) - 1) // CHUNK and p + len(w) <= limit]


def test_word_losses_match_a_direct_computation(any_vocab):
    tokenizer, tok, marker, base, after, split = any_vocab
    vocabulary = Vocabulary.of(tokenizer)
    words = count_words({"test": split}, vocabulary).words(3)
    targets = ([Target(w, DOMAIN) for w in words if len(w.ids) > 1][:4]
               + [Target(w, CONTENT) for w in words if len(w.ids) == 1][:3])
    per_word, mask_id = 6, tokenizer.mask_token_id
    testset = word_test.build(split, targets, vocabulary, CHUNK, mask_id, 0.15, per_word)
    chunks = split.chunks(CHUNK)
    owners = np.split(testset.piece_of, np.cumsum((testset.labels != -100).sum(1).numpy())[:-1])
    for row, labels, chunk, owner in zip(testset.inputs, testset.labels, testset.chunk, owners, strict=True):
        masked = labels != -100  # a test chunk with only the measured occurrences masked, never two adjacent
        assert torch.equal(labels[masked], torch.from_numpy(chunks[chunk][masked.numpy()]).long())
        assert torch.equal(row[~masked], torch.from_numpy(chunks[chunk][~masked.numpy()]).long())
        assert bool((row[masked] == mask_id).all())
        runs = int((np.diff(np.concatenate([[0], masked.int().numpy()])) == 1).sum())
        assert runs == len(set(owner.tolist()))
        assert runs == 1 or masked.sum() <= round(0.15 * CHUNK)
    direct: dict[int, list[tuple[float, float]]] = {}
    for t, target in enumerate(targets):
        everywhere = _whole_words(tok, marker, split, target.word.ids)
        measured = testset.position[testset.target == t].tolist()
        assert testset.found[t] == len(everywhere) and set(measured) <= set(everywhere)
        assert len(measured) == min(per_word, len(everywhere))
        for p in measured:
            c, off = divmod(p, CHUNK)
            rows = [r for r in np.flatnonzero(testset.chunk == c) if testset.labels[r, off] != -100]
            assert len(rows) == 1
            row = testset.inputs[rows[0]]
            figures = []
            for model in (base, after):
                with torch.no_grad():
                    lp = model(input_ids=row[None]).logits[0].log_softmax(-1)
                figures.append(-sum(float(lp[off + k, i]) for k, i in enumerate(target.word.ids)))
            direct.setdefault(t, []).append((figures[0], figures[1]))
    report = learned(base, after, tokenizer, split, targets, "run-x", "tiny", chunk_size=CHUNK,
                     mlm_probability=0.15, min_count=1, per_word=per_word, top=10**6)
    got = {w.word: w for w in report.words}
    assert len(got) == len(direct) > 3
    for t, pairs in direct.items():
        w = got[targets[t].word.word]
        assert w.occurrences == len(pairs)
        assert w.loss_before == pytest.approx(np.mean([b for b, _ in pairs]), rel=1e-4)
        assert w.loss_after == pytest.approx(np.mean([a for _, a in pairs]), rel=1e-4)
        assert w.ci is None or w.ci[0] <= w.change <= w.ci[1]
    assert report.probes
    for probe in report.probes:  # to Fill as any model takes it (RoBERTa's `<mask>` too): [MASK], one a piece
        sentence = report.fill_sentence(probe)
        assert sentence.count("[MASK]") == probe.text.count(tokenizer.mask_token) == len(probe.pieces)


def test_a_model_compared_with_itself_changed_nothing(setup):
    tokenizer, base, _, split = setup
    words = count_words({"test": split}, Vocabulary.of(tokenizer)).words(5)
    targets = [Target(w, DOMAIN) for w in words[:8]]
    report = learned(base, base, tokenizer, split, targets, "run-x", "tiny", chunk_size=CHUNK,
                     mlm_probability=0.15, min_count=3)
    assert report.better == report.worse == []
    assert report.summary.measured == report.summary.unchanged == len(report.unchanged) > 0
    assert all(w.ci == (0.0, 0.0) for w in report.unchanged)
    summary = report.summary
    assert summary.line().endswith(f"0 got easier, 0 got harder, {summary.unchanged} unchanged within noise; "
                                   f"{summary.top_fill_after} are now the top fill where they occur "
                                   f"({summary.top_fill_before} before)")


def test_words_with_too_few_occurrences_are_not_called_better_or_worse(setup):
    tokenizer, base, after, split = setup
    words = count_words({"test": split}, Vocabulary.of(tokenizer)).words(1)
    rare = [w for w in words if 2 <= w.count <= 4][:5]
    common = [w for w in words if w.count >= 20][:5]
    targets = [Target(w, DOMAIN) for w in rare + common]
    report = learned(base, after, tokenizer, split, targets, "run-x", "tiny", chunk_size=CHUNK,
                     mlm_probability=0.15, min_count=5)
    by_word = {w.word: w for w in report.words}
    listed = {w.word for w in report.better + report.worse + report.unchanged + report.general}
    for w in rare:
        result = by_word[w.word]
        assert result.verdict == TOO_FEW and result.change != 0 and w.word not in listed
    for w in common:
        result = by_word[w.word]
        assert result.occurrences == word_test.PER_WORD and w.word in listed
        assert result.verdict == (BETTER if result.ci[1] < 0 else WORSE if result.ci[0] > 0 else UNCHANGED)
    assert report.summary.measured == len(common)
    ranked = [w.total for w in report.better]
    assert ranked == sorted(ranked)


def test_punctuation_and_general_words_have_their_own_section(setup):
    tokenizer, base, after, split = setup
    vocabulary = Vocabulary.of(tokenizer)
    view = vocab_report({"test": split}, tokenizer, "c", "tiny", min_count=5, top=3, reference=False)
    targets = word_test.choose_targets(view, word_test.general_words(tokenizer, vocabulary), frequent=5,
                                       general_count=5)
    kinds = {t.word.word: t.kind for t in targets}
    assert [t.word.word for t in targets[:3]] == [w.word for w in view.top]
    assert kinds["hyperphosphorylation"] == DOMAIN and kinds["."] == kinds["the"] == GENERAL
    assert kinds["measured"] == CONTENT and list(kinds.values()).count(CONTENT) == 5
    apart = learned(base, after, tokenizer, split, targets, "run-x", "tiny", chunk_size=CHUNK,
                    mlm_probability=0.15, min_count=5, top=100)
    general = {w.word for w in apart.general}
    assert {".", "the"} <= general
    assert all(w.kind != GENERAL for w in apart.better + apart.worse + apart.unchanged)
    mixed = learned(base, after, tokenizer, split, targets, "run-x", "tiny", chunk_size=CHUNK,
                    mlm_probability=0.15, min_count=5, top=100, mixed=True)
    assert mixed.general == []
    assert general <= {w.word for w in mixed.better + mixed.worse + mixed.unchanged}
    assert apart.summary == mixed.summary  # the summary is the domain's words, either way


def test_probes_rank_the_true_word_as_a_direct_computation_does(setup):
    tokenizer, base, after, split = setup
    words = count_words({"test": split}, Vocabulary.of(tokenizer)).words(5)
    domain = [next(w for w in words if len(w.ids) == 2), next(w for w in words if len(w.ids) == 1)]
    report = learned(base, after, tokenizer, split, [Target(w, DOMAIN) for w in domain], "run-x", "tiny",
                     chunk_size=CHUNK, mlm_probability=0.15, probes=5)
    assert [p.word for p in report.probes] == [w.word for w in domain]
    data = report.to_dict()
    assert list(data["probes"][0]) == ["text", "word", "rank_before", "rank_after", "fills_before",
                                       "fills_after", "pieces", "piece_ranks_before", "piece_ranks_after",
                                       "piece_probs_before", "piece_probs_after"]
    for probe, word in zip(report.probes, domain, strict=True):
        assert probe.text.count(tokenizer.mask_token) == len(word.ids)
        enc = tokenizer(probe.text, return_tensors="pt")["input_ids"]
        masked = (enc[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        for model, rank, fills in ((base, probe.rank_before, probe.fills_before),
                                   (after, probe.rank_after, probe.fills_after)):
            with torch.no_grad():
                lp = model(input_ids=enc).logits[0, masked].double().log_softmax(-1)
            true = sum(float(lp[k, i]) for k, i in enumerate(word.ids))
            ranks, probs = ((probe.piece_ranks_before, probe.piece_probs_before) if model is base
                            else (probe.piece_ranks_after, probe.piece_probs_after))
            assert ranks == [int((lp[k] > lp[k, i]).sum()) + 1 for k, i in enumerate(word.ids)]
            assert probs == pytest.approx([math.exp(float(lp[k, i])) for k, i in enumerate(word.ids)],
                                          rel=1e-6)
            first = lp[0].numpy()
            top = np.argsort(-first)[:20]
            if len(masked) == 1:
                beaten = int((first > true).sum())
                candidates = [(float(first[i]), (int(i),)) for i in top]
            else:  # pairs (a, b) with a's log-prob + b's > the true pair's: counted with a sorted column
                second = np.sort(lp[1].numpy())
                beaten = int((len(second) - np.searchsorted(second, true - first, side="right")).sum())
                candidates = [(float(first[i] + lp[1][j]), (int(i), int(j)))
                              for i in top for j in np.argsort(-lp[1].numpy())[:20]]
            assert rank == (beaten + 1 if beaten < RANK_LIMIT else None)
            # a tiny untrained model's fills are near ties: compare the fills' scores, not their order
            score = {}
            for value, ids in candidates:
                text = tokenizer.decode(list(ids)).strip()
                score[text] = max(score.get(text, -math.inf), value)
            best = sorted((v for v, _ in candidates), reverse=True)[: len(fills)]
            assert [score[f] for f in fills] == pytest.approx(best, abs=1e-5)
