"""Vocabulary extension (issue 24): for WordPiece, byte-level BPE and Unigram tokenizers built here, the
words chosen on training text become single tokens natively, every other word encodes as before on held-out
text, decoding and word grouping are unchanged, new embeddings are their pieces' mean, and a run with
--extend-vocab trains, fills with a new token, exports and loads in plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_jsonl
from test_vocab import KINDS, _build, _text

from mlm_tui import vocab_extend
from mlm_tui.chunking import encode_documents
from mlm_tui.vocab import Vocabulary, count_words

SPECIALS = {"wordpiece": dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                              mask_token="[MASK]"),
            "bpe": dict(cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                        mask_token="<mask>"),
            "unigram": dict(cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                            mask_token="<mask>")}


def _fast(kind: str, backend):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=256, **SPECIALS[kind])


@pytest.fixture(scope="module", params=KINDS)
def extended(request):
    """(kind, base tokenizer, extended tokenizer, extension): 8 words chosen on training text."""
    kind = request.param
    base = _fast(kind, _build(kind)[0])
    train = encode_documents(base, _text(1, 600))
    new, ext = vocab_extend.extend(base, train, 8, min_count=3)
    return kind, base, new, ext


def _forms(ext) -> set[str]:
    return {t.token for t in ext.tokens}


def test_the_most_needed_words_become_single_native_tokens(extended):
    kind, base, new, ext = extended
    assert ext.family == {"wordpiece": "wordpiece", "bpe": "bpe", "unigram": "unigram"}[kind]
    assert len(ext.words) == 8 and not ext.fallback
    ranked = vocab_extend.candidates(encode_documents(base, _text(1, 600)), base, 3)
    assert [w.word for w in ext.words] == [w.word for w in ranked[:8]]  # the ranking's head, in order
    assert ext.words[0].need >= ext.words[-1].need
    added = new.backend_tokenizer.get_added_tokens_decoder()
    assert added.keys() == base.backend_tokenizer.get_added_tokens_decoder().keys()  # in the model itself
    for w in ext.words:
        assert len(base(w.word, add_special_tokens=False)["input_ids"]) > 1
        ids = new(w.word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] >= len(base)  # one new token, also at a text's start
        spaced = new(f"see {w.word} here", add_special_tokens=False)["input_ids"]
        assert len(spaced) == len(base("see here", add_special_tokens=False)["input_ids"]) + 1
    if kind == "bpe":
        assert {t.token for t in ext.tokens} >= {"Ġ" + w.word for w in ext.words}  # the leading-space form


def test_other_text_encodes_as_before_and_decodes_the_same(extended):
    """Held-out text (another seed): every pre-token not containing a new word keeps its tokens; decoding
    and the words whole-word masking groups are unchanged."""
    _, base, new, ext = extended
    held_out = _text(7, 300) + [f"{w.word}s and pre{w.word} and {w.word} or {w.word}, {w.word.upper()}"
                                for w in ext.words]
    forms = _forms(ext)
    b, n = base.backend_tokenizer, new.backend_tokenizer
    changed = same = 0
    for doc in held_out:
        old_enc, new_enc = b.encode(doc), n.encode(doc)
        assert n.decode(new_enc.ids) == b.decode(old_enc.ids)
        for pre in vocab_extend._pre_tokens(b, doc):
            old = [t.value for t in b.model.tokenize(pre)]
            now = [t.value for t in n.model.tokenize(pre)]
            if pre in forms:
                assert now == [pre]
                changed += 1
            elif not any(f.lstrip("Ġ▁") in pre for f in forms):
                assert now == old, pre
                same += 1
        if not any(w.word in doc.lower() for w in ext.words):
            assert new_enc.ids == old_enc.ids
    assert changed and same > 1000
    old_words = count_words({"t": encode_documents(base, held_out)}, Vocabulary.of(base)).running_words
    new_words = count_words({"t": encode_documents(new, held_out)}, Vocabulary.of(new)).running_words
    assert new_words == old_words
    # transformers' word ids (whole-word masking in the HF collator) agree on the number of words too
    doc = held_out[-1]
    assert max(i for i in new(doc).word_ids() if i is not None) == max(
        i for i in base(doc).word_ids() if i is not None)


def test_new_embeddings_are_the_mean_of_their_pieces_tied_and_untied(extended):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    _, base, _, ext = extended
    for tied in (True, False):
        torch.manual_seed(0)
        model = BertForMaskedLM(BertConfig(vocab_size=len(base), hidden_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=32,
                                           tie_word_embeddings=tied))
        with torch.no_grad():
            model.cls.predictions.bias.normal_()
            if not tied:
                model.get_output_embeddings().weight.normal_()
        emb_before = model.get_input_embeddings().weight.detach().clone()
        out_before = model.get_output_embeddings().weight.detach().clone()
        bias_before = model.cls.predictions.bias.detach().clone()
        vocab_extend.extend_model(model, ext)
        emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert emb.shape[0] == max(t.id for t in ext.tokens) + 1 == model.config.vocab_size
        assert (out.data_ptr() == emb.data_ptr()) is tied
        assert torch.equal(emb[: len(emb_before)], emb_before)
        for t in ext.tokens:
            assert torch.allclose(emb[t.id], emb_before[t.pieces].mean(0))
            assert torch.allclose(out[t.id], out_before[t.pieces].mean(0))
        # the output side, bias included: a new token's logit is the mean of its pieces' logits
        with torch.no_grad():
            logits = model(torch.tensor([[2, ext.tokens[0].id, 5, 7]])).logits[0]
        assert logits.shape[-1] == emb.shape[0]
        for t in ext.tokens:
            assert torch.allclose(logits[:, t.id], logits[:, t.pieces].mean(-1), atol=1e-5)
        assert not torch.allclose(logits[:, ext.tokens[0].pieces].mean(-1), torch.zeros(4), atol=1e-3)
        assert bias_before.abs().sum() > 0


def test_fewer_qualifying_words_than_asked_and_an_unknown_family():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    kind = "wordpiece"
    base = _fast(kind, _build(kind)[0])
    train = encode_documents(base, _text(1, 600))
    qualifying = len(vocab_extend.candidates(train, base, 3))
    _, ext = vocab_extend.extend(base, train, qualifying + 50, min_count=3)
    assert len(ext.words) == qualifying
    assert f"only {qualifying} of the {qualifying + 50} words" in ext.shortfall(3)
    # a BPE that is not byte-level (`##` continuations): no native way, so added tokens matching whole words
    bpe = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.decoder = decoders.WordPiece()
    bpe.train_from_iterator(_text(0, 3000), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        continuing_subword_prefix="##"))
    base = _fast(kind, bpe)
    new, ext = vocab_extend.extend(base, encode_documents(base, _text(1, 600)), 3, min_count=3)
    assert ext.family == "added" and ext.fallback and "no native way" in ext.how and len(ext.words) == 3
    word = ext.words[0].word
    assert new.tokenize(f"{word} {word.upper()}") == [word, word]  # casing follows the normaliser
    assert new.tokenize(f"{word}s pre{word}") == base.tokenize(f"{word}s pre{word}")  # not inside words


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT masked LM for each tokenizer family, saved as a model folder."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    out = {}
    for kind in KINDS:
        path = tmp_path_factory.mktemp(f"model-{kind}")
        tok = _fast(kind, _build(kind)[0])
        torch.manual_seed(0)
        BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=256)).save_pretrained(path)
        tok.save_pretrained(path)
        out[kind] = path
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_with_extend_vocab_fills_with_the_new_tokens_and_exports(kind, cli, model_dirs,
                                                                      tmp_path):
    """Documents made of two long words: after a short run the new tokens are the model's fills."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_tui.models import load_model
    from mlm_tui.runstore import find_run

    docs = [" ".join(["hyperphosphorylation", "glomerulonephritis"][(i + k) % 2] for k in range(5))
            for i in range(300)]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs)
    code, out, err = cli("train", corpus, "--model", model_dirs[kind], "--extend-vocab", "2", "--max-steps",
                         "40", "--batch-size", "8", "--chunk-size", "16", "--learning-rate", "3e-3",
                         "--no-general", "--precision", "fp32", "--json")
    assert code == 0, err
    result = json.loads(out)
    run = find_run(result["run_id"])
    recorded = run.config()["vocab_extension"]
    assert {w["word"] for w in recorded["words"]} == {"hyperphosphorylation", "glomerulonephritis"}
    assert "extended the vocabulary with 2 words" in (run.dir / "log.txt").read_text()
    code, out, _ = cli("runs", "show", result["run_id"])
    assert code == 0 and "vocabulary +2 words" in out and "hyperphosphorylation" in out
    code, out, _ = cli("vocab", corpus, "--model", model_dirs[kind], "--extend", "2", "--json")
    assert [w["word"] for w in json.loads(out)["extend"]["words"]] == [w["word"] for w in recorded["words"]]
    handle = load_model(result["run_id"])
    fills = handle.fill(f"glomerulonephritis {handle.tokenizer.mask_token}", top_k=2).masks[0].fills
    assert {f.token.strip() for f in fills} == {"hyperphosphorylation", "glomerulonephritis"}
    # export: the folder loads in plain transformers and encodes as the run's tokenizer does
    dest = tmp_path / "export"
    code, _, err = cli("runs", "export", result["run_id"], dest)
    assert code == 0, err
    plain = AutoTokenizer.from_pretrained(dest)
    text = "the glomerulonephritis and hyperphosphorylation ."
    assert plain(text)["input_ids"] == handle.tokenizer(text)["input_ids"]
    assert len(plain(text)["input_ids"]) == len(plain("the and .")["input_ids"]) + 2
    assert AutoModelForMaskedLM.from_pretrained(dest).config.vocab_size >= len(plain)


def test_resume_with_another_n_is_refused():
    from mlm_tui.errors import FieldError
    from mlm_tui.run_settings import TrainConfig

    recorded = TrainConfig(corpus="c.jsonl", extend_vocab=100)
    with pytest.raises(FieldError, match="cannot change when resuming"):
        recorded.resumed_with({"extend_vocab": 500})
    with pytest.raises(FieldError, match="cannot change when resuming"):
        recorded.resumed_with({"min_count": 2})
    assert recorded.resumed_with({"extend_vocab": 100})[1] == {}


def test_cli_vocab_extend_previews_the_training_splits_words(cli, tiny_model_dir, tmp_path):
    """`vocab --extend N --json`: the words train --extend-vocab would add, chosen on the train split only
    (a word frequent only in the test split is never chosen), with a shortfall said in words."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [f"the microprocessor and the jargon of item {i}" for i in range(40)])
    write_jsonl(folder / "test.jsonl", [f"glomerulonephritis glomerulonephritis {i}" for i in range(40)])
    code, out, err = cli("vocab", folder, "--model", tiny_model_dir, "--extend", "5", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert "glomerulonephritis" in [w["word"] for w in data["top"]]  # the view itself counts every split
    ext = data["extend"]
    assert [w["word"] for w in ext["words"]] == ["microprocessor", "jargon"]
    assert ext["family"] == "wordpiece" and ext["tokens_added"] == 2 and ext["requested"] == 5
    assert ext["words"][0]["pieces"] == ["micro", "##pro", "##ces", "##sor"]
    code, out, _ = cli("vocab", folder, "--model", tiny_model_dir, "--extend", "5")
    assert code == 0 and "only 2 of the 5 words asked for qualify" in out


def test_an_extended_run_resumes_as_if_uninterrupted_and_its_learned_view_works(tiny_model_dir, corpus_jsonl):
    """The checkpoint holds the extended tokenizer and model: a resumed run has the losses of a straight
    one, and `runs learned` (the base measured with its own tokenizer) reads the finished run."""
    from mlm_tui.errors import RunCancelled
    from mlm_tui.learned import run_learned
    from mlm_tui.lifecycle import TrainingRun
    from mlm_tui.run_settings import TrainConfig

    settings = {"corpus": str(corpus_jsonl), "model": str(tiny_model_dir), "chunk_size": 32, "batch_size": 4,
                "max_steps": 6, "logging_steps": 1, "test_size": 8, "precision": "fp32", "device": "cpu",
                "save_steps": 100, "extend_vocab": 3, "no_general": True}
    straight = TrainingRun(TrainConfig(**settings))
    straight.run()
    stop: list[int] = []
    cut = TrainingRun(TrainConfig(**settings), should_stop=lambda: bool(stop),
                   on_event=lambda e: stop.append(1) if e["event"] == "step" and e["step"] == 3 else None)
    with pytest.raises(RunCancelled):
        cut.run()
    resumed = TrainingRun.resuming(cut.run_record)
    resumed.run()
    # nothing added again: the checkpoint's tokenizer has the words
    assert cut.run_record.log_path.read_text().count("words to add to the vocabulary") == 1

    def losses(run) -> dict[int, float]:
        return {row["step"]: row["loss"] for row in run.metrics() if "loss" in row}

    want, got = losses(straight.run_record), losses(cut.run_record)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert all(got[s] == pytest.approx(want[s], rel=1e-4) for s in want)
    from transformers import AutoTokenizer

    words = [w["word"] for w in cut.run_record.config()["vocab_extension"]["words"]]
    final = AutoTokenizer.from_pretrained(cut.run_record.model_path)
    assert all(len(final.tokenize(w)) == 1 for w in words) and len(words) == 3
    report = run_learned(cut.run_record.run_id, min_count=1)
    assert report.better or report.worse
