"""What a run learned: per-word losses and probes, checked against a direct computation on a tiny model
(full forward passes, the plain way, one chunk and one position at a time)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SENTENCES

from mlm_tui.chunking import encode_documents
from mlm_tui.evaluate import EvalSet, perplexity
from mlm_tui.learned import RANK_LIMIT, learned, masked_token_losses
from mlm_tui.masking import TokenTables
from mlm_tui.vocab import Vocabulary, count_words


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()
    after = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():  # "training": a seeded nudge to every weight, so the two models differ
        gen = torch.Generator().manual_seed(1)
        for p in after.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    docs = [f"{SENTENCES[i % len(SENTENCES)]} The hyperphosphorylation of substrate {i} was measured."
            for i in range(40)]
    split = encode_documents(tokenizer, docs)
    evalset = EvalSet.build(split.chunks(32), TokenTables.from_tokenizer(tokenizer), 0.3)
    return tokenizer, base, after, split, evalset


def _direct_losses(model, evalset: EvalSet) -> list[list[tuple[int, float]]]:
    """Per chunk row: (position, cross-entropy) of every masked position, from full forward passes."""
    out = []
    with torch.no_grad():
        for inputs, labels in zip(evalset.inputs, evalset.labels, strict=True):
            log_probs = model(input_ids=inputs[None]).logits[0].log_softmax(-1)
            masked = [p for p in range(len(labels)) if labels[p] != -100]
            out.append([(p, -float(log_probs[p, labels[p]])) for p in masked])
    return out


@pytest.fixture(scope="module", params=["wordpiece", "bpe", "unigram"])
def any_vocab(request):
    """(tokenizer, its Rust tokenizer, word-start marker, base, after, split, eval set) for a tiny BERT
    with the real WordPiece vocabulary, and tiny RoBERTas on the byte-level BPE and Unigram vocabularies
    built in test_vocab."""
    if request.param == "wordpiece":
        tokenizer, base, after, split, evalset = request.getfixturevalue("setup")
        return tokenizer, tokenizer.backend_tokenizer, "##", base, after, split, evalset
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
    base, after = RobertaForMaskedLM(config).eval(), RobertaForMaskedLM(config).eval()
    split = encode_documents(tokenizer, _text(2, 60))
    evalset = EvalSet.build(split.chunks(32), TokenTables.from_tokenizer(tokenizer), 0.3)
    return tokenizer, tok, marker, base, after, split, evalset


def test_per_word_losses_match_a_direct_computation(any_vocab):
    from test_vocab import _walk

    tokenizer, tok, marker, base, after, split, evalset = any_vocab
    words = count_words({"test": split}, Vocabulary.of(tokenizer)).words(3)
    domain = [w for w in words if len(w.ids) > 1][:3]
    report = learned(base, after, tokenizer, evalset, split, domain, "run-x", "tiny", top=10**6, min_count=1)
    expected: dict[tuple[int, ...], list] = {}
    per_model = [_direct_losses(m, evalset) for m in (base, after)]
    for r, (inputs, labels) in enumerate(zip(evalset.inputs, evalset.labels, strict=True)):
        original = [int(labels[p]) if labels[p] != -100 else int(inputs[p]) for p in range(len(labels))]
        losses = [dict(m[r]) for m in per_model]
        for start, word in _walk(tok, marker, [original]):  # each chunk row starts a word, as in the collator
            hit = [p for p in range(start, start + len(word)) if p in losses[0]]
            if hit:
                entry = expected.setdefault(word, [0, 0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += len(hit)
                entry[2] += sum(losses[0][p] for p in hit)
                entry[3] += sum(losses[1][p] for p in hit)
    got = {tuple(tokenizer.convert_tokens_to_ids(w.pieces)): w for w in report.words}
    assert set(got) == set(expected)
    for key, (n, pieces, before, after_sum) in expected.items():
        w = got[key]
        assert w.count == n
        assert w.loss_before == pytest.approx(before / pieces, rel=1e-4, abs=1e-4)
        assert w.loss_after == pytest.approx(after_sum / pieces, rel=1e-4, abs=1e-4)
    assert all(w.loss_after < w.loss_before for w in report.better)
    assert all(w.loss_after > w.loss_before for w in report.worse)
    assert len(report.better) + len(report.worse) == len(report.words)
    falls = [w.loss_after - w.loss_before for w in report.better]
    assert falls == sorted(falls)
    assert [p.word for p in report.probes] == [w.word for w in domain] and domain
    for probe, word in zip(report.probes, domain, strict=True):
        assert probe.text.count(tokenizer.mask_token) == len(word.ids)
        assert len(probe.fills_before) == len(probe.fills_after) == 5


def test_token_losses_average_to_the_perplexity(setup):
    _, base, _, _, evalset = setup
    losses = masked_token_losses(base, evalset)
    result = perplexity(base, evalset)
    assert not base.training  # a plain model comes back in eval mode, as it went in
    assert len(losses) == result.masked_tokens
    assert math.exp(float(np.mean(losses))) == pytest.approx(result.perplexity, rel=1e-4)


def test_probes_rank_the_true_word_as_a_direct_computation_does(setup):
    tokenizer, base, after, split, evalset = setup
    words = count_words({"test": split}, Vocabulary.of(tokenizer)).words(5)
    domain = [next(w for w in words if len(w.ids) == 2), next(w for w in words if len(w.ids) == 1)]
    report = learned(base, after, tokenizer, evalset, split, domain, "run-x", "tiny", probes=5)
    assert [p.word for p in report.probes] == [w.word for w in domain]
    data = report.to_dict()
    assert list(data) == ["run_id", "base", "better", "worse", "probes"]
    assert list(data["probes"][0]) == ["text", "word", "rank_before", "rank_after", "fills_before",
                                       "fills_after"]
    for probe, word in zip(report.probes, domain, strict=True):
        assert probe.text.count(tokenizer.mask_token) == len(word.ids)
        enc = tokenizer(probe.text, return_tensors="pt")["input_ids"]
        masked = (enc[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
        for model, rank, fills in ((base, probe.rank_before, probe.fills_before),
                                   (after, probe.rank_after, probe.fills_after)):
            with torch.no_grad():
                lp = model(input_ids=enc).logits[0, masked].double().log_softmax(-1)
            true = sum(float(lp[k, i]) for k, i in enumerate(word.ids))
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
