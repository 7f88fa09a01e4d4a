"""Chunking and document hold-out, checked over generated inputs rather than a few hand-picked ones."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlm_tui.chunking import TokenizedSplit, encode_documents
from mlm_tui.errors import UsageError

token_docs = st.lists(st.lists(st.integers(0, 30_000), min_size=1, max_size=40), min_size=0, max_size=30)


def split_of(docs: list[list[int]]) -> TokenizedSplit:
    ids = np.array([t for d in docs for t in d], dtype=np.int32)
    return TokenizedSplit(ids, np.array([len(d) for d in docs], dtype=np.int64))


@given(docs=token_docs, chunk_size=st.integers(1, 64))
def test_chunks_are_the_stream_minus_the_final_remainder(docs, chunk_size):
    split = split_of(docs)
    stream = [t for d in docs for t in d]
    chunks = split.chunks(chunk_size)
    assert chunks.shape[1:] == (chunk_size,)
    kept = len(stream) - len(stream) % chunk_size
    assert chunks.reshape(-1).tolist() == stream[:kept]
    stats = split.stats(chunk_size)
    assert stats["chunks"] * chunk_size + stats["dropped_tokens"] == stats["tokens"] == len(stream)
    assert 0 <= stats["dropped_tokens"] < chunk_size


@given(lengths=st.lists(st.integers(1, 20), min_size=2, max_size=40), fraction=st.floats(0.01, 0.99),
       seed=st.integers(0, 2**32 - 1))
def test_split_documents_keeps_each_document_whole_and_on_one_side(lengths, fraction, seed):
    docs = [[i] * n for i, n in enumerate(lengths)]  # every token names its document
    train, test = split_of(docs).split_documents(fraction, seed)
    sides = []
    for part in (train, test):
        assert part.documents >= 1
        bounds = np.concatenate([[0], np.cumsum(part.doc_lengths)])
        found = []
        for start, end in pairwise(bounds):
            doc = part.ids[start:end].tolist()
            assert doc == docs[doc[0]]  # a whole original document, unchanged
            found.append(doc[0])
        sides.append(set(found))
    assert not sides[0] & sides[1]
    assert sides[0] | sides[1] == set(range(len(lengths)))
    assert train.tokens + test.tokens == sum(lengths)


def test_split_documents_needs_two_documents():
    with pytest.raises(UsageError, match="at least two"):
        split_of([[1, 2, 3]]).split_documents(0.1, 0)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@settings(max_examples=40, deadline=None)
@given(docs=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=12))
def test_the_stream_is_each_document_as_the_tokenizer_encodes_it(tokenizer, docs):
    split = encode_documents(tokenizer, docs)
    expected = [tokenizer(d)["input_ids"] for d in docs]
    assert split.doc_lengths.tolist() == [len(e) for e in expected]
    assert split.ids.tolist() == [t for e in expected for t in e]
