"""The masked-LM collator: how much it masks, what it never masks, and that a seed pins it down."""

from __future__ import annotations

import pytest
import torch

from mlm_tui.masking import IGNORE, TokenTables, generator_for, mask_batch


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def tables(tokenizer) -> TokenTables:
    return TokenTables.from_tokenizer(tokenizer)


@pytest.fixture(scope="module")
def batch(tokenizer) -> torch.Tensor:
    """64 rows of 128 ordinary tokens, each row framed by [CLS] ... [SEP] and ending in padding."""
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(1000, 29000, (64, 128), generator=gen)
    ids[:, 0] = tokenizer.cls_token_id
    ids[:, 100] = tokenizer.sep_token_id
    ids[:, 101:] = tokenizer.pad_token_id
    return ids


def test_about_15_percent_of_ordinary_tokens_are_selected(batch, tables):
    _, labels = mask_batch(batch, tables, 0.15, gen=generator_for(0, 0))
    ordinary = ~tables.special[batch]
    rate = (labels != IGNORE)[ordinary].float().mean().item()
    assert 0.13 < rate < 0.17
    assert torch.equal(labels[labels != IGNORE], batch[labels != IGNORE])  # labels are the original ids


def test_special_tokens_are_never_masked(batch, tables):
    special = tables.special[batch]
    for step in range(5):
        inputs, labels = mask_batch(batch, tables, 0.9, gen=generator_for(1, step))
        assert (labels[special] == IGNORE).all()
        assert torch.equal(inputs[special], batch[special])


def test_selected_tokens_are_80_mask_10_random_10_kept(batch, tables):
    inputs, labels = mask_batch(batch, tables, 0.5, gen=generator_for(2, 0))
    chosen = labels != IGNORE
    n = chosen.sum().item()
    masked = (inputs[chosen] == tables.mask_id).float().sum().item() / n
    kept = (inputs[chosen] == batch[chosen]).float().sum().item() / n
    randomised = 1 - masked - kept
    assert 0.77 < masked < 0.83
    assert 0.08 < kept < 0.12
    assert 0.08 < randomised < 0.12
    assert torch.equal(inputs[~chosen], batch[~chosen])  # nothing unselected changes


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer, tables):
    text = " ".join(["the hydrolysis of unbelievably electroencephalographic tokenization"] * 12)
    ids = torch.tensor([tokenizer(text)["input_ids"]] * 16)
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert sum(p.startswith("##") for p in pieces) > 10  # the text really has multi-piece words
    _, labels = mask_batch(ids, tables, 0.3, whole_word=True, gen=generator_for(3, 0))
    chosen = labels != IGNORE
    assert 0.15 < chosen.float().mean().item() < 0.45
    for row in chosen:
        for i, piece in enumerate(pieces):
            if piece.startswith("##"):
                assert row[i] == row[i - 1], f"{pieces[i - 1]} {piece} masked apart"


def test_same_seed_and_step_give_the_same_masks(batch, tables):
    a = mask_batch(batch, tables, 0.15, gen=generator_for(42, 10))
    b = mask_batch(batch, tables, 0.15, gen=generator_for(42, 10))
    c = mask_batch(batch, tables, 0.15, gen=generator_for(42, 11))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])

