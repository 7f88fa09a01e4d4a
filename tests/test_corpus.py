"""Corpora are read and tokenized a block at a time: whatever the block size and format, the documents and
tokens are those of reading the file whole, and the token cache behaves as a user expects."""

from __future__ import annotations

import csv
import json

import pytest

from mlm_tui import chunking, corpus
from mlm_tui.chunking import open_tokenizer, tokenize_corpus
from mlm_tui.errors import UsageError

DOCS = [f'Line {i}: "quoted", commas, unicode café ñ {"x" * (i % 7)} and more words.' for i in range(60)]


def write(path, docs, kind):
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)))
    elif kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            w.writerows(enumerate(docs))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path, row_group_size=7)
    else:
        path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return open_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def expected(tiny_model_dir):
    """Each document as transformers' own tokenizer encodes it, one call per document."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [hf(d)["input_ids"] for d in DOCS]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "txt"])
def test_every_format_read_in_small_blocks_gives_the_whole_files_tokens(tmp_path, tok, expected, kind,
                                                                        monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 300)  # many blocks, documents split across none of them
    path = write(tmp_path / f"c.{kind}", DOCS, kind)
    assert sum(len(b) for b in corpus.iter_documents(path)) == len(DOCS)
    assert len(list(corpus.iter_documents(path))) > 5
    split = tokenize_corpus(str(path), tok)["train"]
    assert split.doc_lengths.tolist() == [len(e) for e in expected]
    assert split.ids.tolist() == [t for e in expected for t in e]


def test_a_json_line_longer_than_a_block_is_read_whole(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 300)
    docs = ["short one", "word " * 2000, "short three"]
    path = write(tmp_path / "long.jsonl", docs, "jsonl")
    assert [d for batch in corpus.iter_documents(path) for d in batch] == docs


def test_csv_values_may_span_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 300)
    docs = [f"Ticket {i}: the login page fails.\nSecond line, with a comma." for i in range(40)]
    path = write(tmp_path / "tickets.csv", docs, "csv")
    assert [d for batch in corpus.iter_documents(path) for d in batch] == docs


def test_rows_without_text_are_left_out_wherever_they_are(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 200)
    rows = [{"text": d} for d in DOCS[:20]] + [{"other": 1}, {"text": None}, {"text": "  "}]
    rows += [{"text": d, "late_field": [1, 2]} for d in DOCS[20:30]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = tokenize_corpus(str(path), tok)["train"]
    assert split.documents == 30


def test_the_cache_answers_a_second_open_and_a_changed_file_is_read_again(tmp_path, tok):
    path = write(tmp_path / "c.jsonl", DOCS[:30], "jsonl")
    first = tokenize_corpus(str(path), tok)["train"]
    again = tokenize_corpus(str(path), tok)["train"]
    assert again.ids.tolist() == first.ids.tolist() and again.documents == 30
    write(path, DOCS, "jsonl")
    assert tokenize_corpus(str(path), tok)["train"].documents == len(DOCS)


def test_a_cache_that_cannot_be_written_costs_nothing_but_speed(tmp_path, tok, expected, monkeypatch):
    path = write(tmp_path / "c.txt", DOCS, "txt")
    gone = tmp_path / "no-such-dir"
    monkeypatch.setattr(chunking, "_cache_paths", lambda key: (gone / f"{key}.ids", gone / f"{key}.docs"))
    split = tokenize_corpus(str(path), tok)["train"]
    assert split.ids.tolist() == [t for e in expected for t in e]


@pytest.mark.parametrize("content", ['{"text": "   "}\n{"text": ""}\n', "\n\n   \n"])
def test_a_corpus_with_no_text_is_an_error_every_time(tmp_path, tok, content):
    path = tmp_path / "blank.jsonl"
    path.write_text(content)
    for _ in range(2):  # the second time from the cache: still an error, not an empty corpus
        with pytest.raises(UsageError, match="empty"):
            tokenize_corpus(str(path), tok)
