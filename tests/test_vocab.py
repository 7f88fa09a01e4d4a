"""The vocabulary view: words as whole-word masking groups them, counted over the whole corpus, for
WordPiece, byte-level BPE and SentencePiece-style (Unigram + Metaspace) vocabularies built here."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SENTENCES, write_jsonl

from mlm_tui import vocab
from mlm_tui.chunking import ChunkTokenizer, encode_documents, tokenize_corpus
from mlm_tui.vocab import Vocabulary, count_words, occurrences, vocab_report


def _text(seed: int, n: int) -> list[str]:
    """Sentences of everyday words and made-up technical ones, so each vocabulary splits some words."""
    rng = random.Random(seed)
    syllables = ["hy", "per", "phos", "pho", "ry", "la", "tion", "im", "mu", "no", "his", "to", "che", "mis",
                 "try", "cam", "pal", "neu", "ron", "glo", "bin", "kin", "ase", "lip", "id", "ox", "ide"]
    jargon = ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 6))) for _ in range(60)]
    words = [*" ".join(SENTENCES).replace(".", "").lower().split(), "per", "to", "no", "kin", "ox", "hy"]
    docs = []
    for _ in range(n):
        sentence = [rng.choice(jargon if rng.random() < 0.3 else words) for _ in range(rng.randint(4, 18))]
        docs.append(" ".join(sentence).capitalize() + rng.choice([".", ",", "!", "; and so on."]))
    return docs


def _build(kind: str) -> tuple[object, str]:
    """(tokenizer, its word-start marker); special tokens framing each document as real models do."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    training = _text(0, 3000) + SENTENCES
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials, limit_alphabet=40)
        frame = ("[CLS]", "[SEP]")
    elif kind == "bpe":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        frame = ("<s>", "</s>")
    else:
        specials = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=specials, unk_token="<unk>")
        frame = ("<s>", "</s>")
    tok.train_from_iterator(training, trainer)
    ids = [tok.token_to_id(t) for t in frame]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{frame[0]} $A {frame[1]}", special_tokens=list(zip(frame, ids, strict=True)))
    marker = {"wordpiece": "##", "bpe": "Ġ", "unigram": "▁"}[kind]
    return tok, marker


KINDS = ["wordpiece", "bpe", "unigram"]


@pytest.fixture(scope="module", params=KINDS)
def built(request):
    tok, marker = _build(request.param)
    return request.param, tok, marker


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Each tiny tokenizer saved as a model directory (`tokenizer.json`), as `--model DIR` reads it."""
    out = {}
    for kind in KINDS:
        path = tmp_path_factory.mktemp(f"tok-{kind}")
        _build(kind)[0].save(str(path / "tokenizer.json"))
        out[kind] = path
    return out


def _walk(tok, marker: str, docs_ids: list[list[int]]) -> list[tuple[int, tuple[int, ...]]]:
    """(position in the concatenated ids, pieces) of every word, the plain way: token by token."""
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    unk = _unk(tok)
    special.discard(unk)
    words: list[tuple[int, tuple[int, ...]]] = []
    offset = 0
    for ids in docs_ids:
        current: list[int] = []
        previous_special = True
        for pos, i in enumerate(ids, offset):
            if current and (i in special or previous_special or i == unk
                            or tok.id_to_token(i).startswith(marker) != (marker == "##")):
                words.append((pos - len(current), tuple(current)))
                current = []
            previous_special = i in special
            if not previous_special:
                current.append(i)
        if current:
            words.append((offset + len(ids) - len(current), tuple(current)))
        offset += len(ids)
    return words


def _unk(tok) -> int | None:
    return next((i for i in (tok.token_to_id("[UNK]"), tok.token_to_id("<unk>")) if i is not None), None)


def _direct(tok, marker: str, docs: list[str]) -> dict:
    """The view's figures computed the plain way, with Python's Counter."""
    words = [w for _, w in _walk(tok, marker, [tok.encode(d).ids for d in docs])]
    counts = Counter(words)
    tokens = sum(map(len, words))
    unk = _unk(tok)
    return {"running_words": len(words), "distinct_words": len(counts), "tokens": tokens,
            "fertility": tokens / len(words), "split_2plus": sum(len(w) >= 2 for w in words) / len(words),
            "split_3plus": sum(len(w) >= 3 for w in words) / len(words),
            "unknown_share": sum(w.count(unk) for w in words) / tokens if unk is not None else 0.0,
            "counts": counts}


def _docs() -> list[str]:
    # A character none of the vocabularies learned, so WordPiece and Unigram produce unknown tokens.
    return [*_text(1, 400), "The ☃ snowman and the ✈ plane.", "Übergrößen café naïve"]


def test_figures_and_counts_match_a_direct_computation(built, monkeypatch):
    kind, tok, marker = built
    docs = _docs()
    expected = _direct(tok, marker, docs)
    tokenizer = ChunkTokenizer(tok, None)
    split = encode_documents(tokenizer, docs)
    vocabulary = Vocabulary.of(tokenizer)
    assert not vocabulary.word_start.all()  # the vocabulary's marker is recognised: words have pieces
    for block in (vocab.BLOCK_TOKENS, 97):  # one block, and many (counts merged across blocks)
        monkeypatch.setattr(vocab, "BLOCK_TOKENS", block)
        counts = count_words({"train": split}, vocabulary)
        figures = counts.figures().to_dict()
        for key, value in figures.items():
            assert value == pytest.approx(expected[key]), (kind, key)
        words = counts.words(min_count=1)
        assert {w.ids: w.count for w in words} == dict(expected["counts"])
    assert figures["split_2plus"] > 0.1 and figures["split_3plus"] > 0
    if kind != "bpe":  # byte-level BPE spells every byte: nothing is unknown
        assert figures["unknown_share"] > 0


def test_ranking_pieces_and_min_count(built):
    _, tok, marker = built
    docs = _docs()
    expected = _direct(tok, marker, docs)["counts"]
    tokenizer = ChunkTokenizer(tok, None)
    split = encode_documents(tokenizer, docs)
    report = vocab_report({"train": split}, tokenizer, "c", "m", min_count=5, top=10, reference=False)
    ranked = sorted(((c * (len(w) - 1), c, w) for w, c in expected.items() if c >= 5 and len(w) > 1),
                    key=lambda x: (-x[0], -x[1]))
    assert [(w.need, w.count) for w in report.top] == [(n, c) for n, c, _ in ranked[:10]]
    assert all(w.count >= 5 for w in report.words())
    assert len(report.words()) == sum(c >= 5 for c in expected.values())
    assert report.top == [w for w in report.words() if len(w.ids) > 1][:10]  # the head, made alone
    for w in report.top:
        assert w.pieces == [tok.id_to_token(i) for i in w.ids]
        assert w.word == tok.decode(list(w.ids)).strip()
        assert len(w.pieces) > 1


def test_words_are_what_whole_word_masking_masks_together(built):
    """Each word of the view is masked whole or not at all by the collator, and never with another."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from mlm_tui.masking import TokenTables, mask_batch

    kind, tok, _ = built
    specials = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
    names = dict(zip(["pad", "unk", "cls", "sep", "mask"] if kind == "wordpiece" else
                     ["pad", "unk", "bos", "eos", "mask"],
                     [specials[tok.token_to_id(t)] for t in
                      (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if kind == "wordpiece" else
                       ["<pad>", "<unk>", "<s>", "</s>", "<mask>"])], strict=True))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{k}_token": v for k, v in names.items()})
    tables = TokenTables.from_tokenizer(hf)
    vocabulary = Vocabulary.of(hf)
    assert np.array_equal(tables.word_start.numpy()[: len(vocabulary.word_start)], vocabulary.word_start)
    ids = np.concatenate([np.asarray(tok.encode(d).ids, dtype=np.int32) for d in _docs()[:60]])
    row = ids[: (len(ids) // 64) * 64].reshape(-1, 64)
    _, labels = mask_batch(torch.from_numpy(row.astype(np.int64)), tables, 0.3, whole_word=True,
                           gen=torch.Generator().manual_seed(3))
    masked = (labels != -100).numpy()
    for r in range(len(row)):
        keep, begins = vocab.word_bounds(row[r], np.array([0]), vocabulary)
        word = np.cumsum(begins)  # word number of every kept token
        for w in np.unique(word[keep]):
            assert len(set(masked[r][keep & (word == w)])) == 1
    assert masked.any()


def test_occurrences_are_of_whole_words_only(built, tmp_path):
    _, tok, marker = built
    tokenizer = ChunkTokenizer(tok, None)
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs = _docs()
    write_jsonl(folder / "train.jsonl", docs[:300])
    write_jsonl(folder / "test.jsonl", docs[300:])
    splits = tokenize_corpus(str(folder), tokenizer)
    assert set(splits) == {"train", "test"}
    vocabulary = Vocabulary.of(tokenizer)
    words = count_words(splits, vocabulary).words(1)
    word = next(w for w in words if len(w.ids) > 1 and w.count >= 3)
    # a one-piece word whose token also begins longer words: only its own occurrences count
    firsts = {w.ids[0] for w in words if len(w.ids) > 1}
    piece = next(w for w in words if len(w.ids) == 1 and w.ids[0] in firsts)
    for target in (word, piece):
        found = occurrences(splits, target.ids, vocabulary, chunk_size=32)
        for name, split in splits.items():
            bounds = np.cumsum(split.doc_lengths)
            docs_ids = np.split(np.asarray(split.ids), bounds[:-1])
            limit = len(split.chunks(32)) * 32
            expected = {pos for pos, w in _walk(tok, marker, [d.tolist() for d in docs_ids])
                        if w == target.ids and pos < limit}
            assert set(found[name].tolist()) == expected, (name, target.word)  # each chunk: position // 32
        assert sum(len(v) for v in found.values()) > 0


def test_reference_sample_ships_and_is_general_english(built):
    _, tok, marker = built
    docs = vocab.reference_documents()
    assert len(docs) > 500 and sum(map(len, docs)) > 200_000
    expected = _direct(tok, marker, docs)
    figures = vocab.reference_figures(ChunkTokenizer(tok, None)).to_dict()
    for key, value in figures.items():
        assert value == pytest.approx(expected[key])


def test_cli_vocab_json_shape_and_text(cli, model_dirs, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", _docs())
    code, out, _ = cli("vocab", corpus, "--model", model_dirs["wordpiece"], "--top", "3", "--min-count", "4",
                       "--json")
    assert code == 0
    data = json.loads(out)
    figure_keys = ["running_words", "distinct_words", "tokens", "fertility", "split_2plus", "split_3plus",
                   "unknown_share"]
    assert list(data) == ["corpus", "model", *figure_keys, "top", "reference"]
    assert list(data["reference"]) == figure_keys
    assert len(data["top"]) == 3 and all(set(w) == {"word", "count", "pieces"} for w in data["top"])
    assert all(w["count"] >= 4 and len(w["pieces"]) > 1 for w in data["top"])
    needs = [w["count"] * (len(w["pieces"]) - 1) for w in data["top"]]
    assert needs == sorted(needs, reverse=True)
    code, out, _ = cli("vocab", corpus, "--model", model_dirs["wordpiece"], "--top", "3")
    assert code == 0
    assert f"{data['running_words']:,} running words" in out
    assert data["top"][0]["word"] in out and " ".join(data["top"][0]["pieces"]) in out


@pytest.mark.parametrize("args", [["/no/such/corpus.jsonl"], ["{corpus}", "--top", "0"],
                                  ["{corpus}", "--min-count", "x"], ["{corpus}", "--text-field", "body"]])
def test_cli_vocab_bad_input_is_one_line(cli, tmp_path, args):
    corpus = write_jsonl(tmp_path / "c.jsonl", SENTENCES)
    code, out, err = cli("vocab", *[a.format(corpus=corpus) for a in args], "--json")
    assert code == 2
    assert "error" in json.loads(out)
    assert len(err.strip().splitlines()) == 1


def test_cli_vocab_imports_neither_torch_nor_transformers(model_dirs, tmp_path):
    """The view needs the tokenizer only: no model weights, no torch (seconds of start-up)."""
    import subprocess
    import sys

    corpus = write_jsonl(tmp_path / "c.jsonl", _docs()[:50])
    script = ("import sys; from mlm_tui.cli import main; code = main(sys.argv[1:]); "
              "print(code, 'torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script, "vocab", str(corpus), "--model",
                           str(model_dirs["bpe"]), "--json"], capture_output=True, text=True, check=False)
    assert proc.stderr.strip().splitlines()[-1] == "0 False False", proc.stderr
    assert json.loads(proc.stdout)["running_words"] > 0


def test_reference_sample_is_tokenized_once_per_tokenizer(built, tmp_path, monkeypatch):
    """The sample goes through the token cache: a second view with the same tokenizer does not
    tokenize it again, and a tokenizer that only truncates differently shares the cache."""
    from mlm_tui import chunking

    _, tok, _ = built
    monkeypatch.setenv("MLM_TUI_HOME", str(tmp_path))
    calls = []
    encode = chunking.encode_batches
    monkeypatch.setattr(chunking, "encode_batches", lambda *a, **k: calls.append(1) or encode(*a, **k))
    first = vocab.reference_figures(ChunkTokenizer(tok, None))
    tok.enable_truncation(64)
    try:
        second = vocab.reference_figures(ChunkTokenizer(tok, None))
    finally:
        tok.no_truncation()
    assert calls == [1]
    assert first == second
