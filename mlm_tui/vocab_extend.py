"""Vocabulary extension: the corpus's most-split words become whole tokens, in the tokenizer's own model.

The vocabulary view (`vocab`) ranks the words a tokenizer cuts into pieces by count x (pieces - 1), the
extra predictions each costs. Extending the vocabulary takes the top N of that ranking over the training
split (the test split must not choose what the model is measured on) and adds each as one token:

- WordPiece gains vocabulary entries. Its greedy longest-match then takes the new token for the whole
  word, and also as the first piece of a longer word that begins with it (`jargons` -> `jargon ##s`).
- Byte-level BPE gains the word in both its forms (`Ġjargon` after a space, `jargon` at a text's start or
  after punctuation). When every token of the vocabulary already encodes to itself, the model looks whole
  pre-tokens up first (`ignore_merges`, as Llama 3's tokenizer does), so nothing else can change; else it
  gains the merges that build each word, left to right (their intermediate pieces become tokens too).
- Unigram (SentencePiece) gains the `▁word` piece with a score just above its best segmentation's, so
  Viterbi picks it for the word and for nothing that did not contain it.
- Any other family gets `AddedToken`s that match single words only: exact, but outside the tokenizer's
  model, which the run's log says.

In every family a pre-token that does not contain a new word encodes exactly as before, and one that is a
new word encodes to its token. The words are the tokenizer's normalised forms (lowercased for an uncased
model), so casing follows the normaliser.

A new token's embedding is the mean of its pieces' rows (Fast Vocabulary Transfer, Gee et al. 2022), on
the input side and, when untied, on the output side; an output bias is the mean of its pieces' biases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlm_tui.errors import UsageError

if TYPE_CHECKING:
    from mlm_tui.chunking import TokenizedSplit

SHOWN = 20  # words named in the run's log line
UNIGRAM_MARGIN = 1e-3  # how far a new piece's score lies above its word's best segmentation
HOW = {"wordpiece": "WordPiece vocabulary entries",
       "bpe": "byte-level BPE vocabulary entries, whole words looked up first (ignore_merges)",
       "bpe-merges": "byte-level BPE vocabulary entries and the merges that build them",
       "unigram": "Unigram pieces scored to win their word",
       "added": "added tokens matching single words (no native way for this tokenizer)"}


@dataclass
class Candidate:
    """A word the ranking offers: its text (the tokenizer's normalised form), count and need summed over
    its forms (byte-level BPE counts `Ġword` and `word` apart), and the pieces of its commonest form."""

    word: str
    count: int
    need: int
    pieces: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "count": self.count, "need": self.need, "pieces": self.pieces}


@dataclass
class NewToken:
    token: str  # as the tokenizer's model spells it (`Ġjargon`, `▁jargon`, `jargon`)
    id: int
    pieces: list[int]  # the base model's token ids it replaces: its embedding is their mean
    word: str | None  # the word it stands for; None for an intermediate piece of a BPE merge


@dataclass
class Extension:
    """What an extension added; recorded in the run's config (`vocab_extension`) and shown by `vocab`."""

    family: str  # a key of HOW
    requested: int
    words: list[Candidate]
    tokens: list[NewToken]
    skipped: dict[str, str] = field(default_factory=dict)  # word -> why it could not be added

    @property
    def how(self) -> str:
        return HOW[self.family]

    @property
    def fallback(self) -> bool:
        return self.family == "added"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "how": self.how, "requested": self.requested,
                "words": [w.to_dict() for w in self.words], "tokens_added": len(self.tokens),
                "new_tokens": [{"token": t.token, "id": t.id, "pieces": t.pieces, "word": t.word}
                               for t in self.tokens],
                "skipped": self.skipped}

    def summary(self) -> str:
        """One line for a run's log."""
        extra = len(self.tokens) - sum(t.word is not None for t in self.tokens)
        line = (f"extended the vocabulary with {len(self.words)} words ({self.how}): {len(self.tokens)} new "
                "tokens")
        if extra:
            line += f", {extra} of them intermediate pieces of the merges"
        shown = ", ".join(w.word for w in self.words[:SHOWN])
        more = f" and {len(self.words) - SHOWN} more" if len(self.words) > SHOWN else ""
        return f"{line}: {shown}{more}" if self.words else line

    def shortfall(self, min_count: int) -> str | None:
        """What to say when fewer words qualified than were asked for."""
        if len(self.words) >= self.requested:
            return None
        return (f"only {len(self.words)} of the {self.requested} words asked for qualify (cut into pieces, "
                f"seen {min_count}+ times in the training split): adding those")


# -- choosing the words ---------------------------------------------------------------------------------
def candidates(train: TokenizedSplit, tokenizer: Any, min_count: int) -> list[Candidate]:
    """Every word of the training split seen `min_count`+ times that the tokenizer cuts into pieces, most in
    need first (the vocabulary view's ranking, its forms summed)."""
    from mlm_tui.vocab import Vocabulary, count_words

    vocabulary = Vocabulary.of(tokenizer)
    counts = count_words({"train": train}, vocabulary)
    unk = vocabulary.unk_id
    merged: dict[str, Candidate] = {}
    for w in counts.words(min_count, split_only=True):
        if not w.word or any(c.isspace() for c in w.word) or (unk is not None and unk in w.ids):
            continue  # a word the tokenizer could not spell, or spans no single pre-token
        have = merged.get(w.word)
        if have is None:
            merged[w.word] = Candidate(w.word, w.count, w.need, w.pieces)
        else:
            have.count += w.count
            have.need += w.need
    return sorted(merged.values(), key=lambda c: (-c.need, -c.count, c.word))


# -- extending the tokenizer ----------------------------------------------------------------------------
def family_of(spec: dict[str, Any]) -> str:
    """The extension a tokenizer's spec (its tokenizer.json) takes: a key of HOW."""
    kind = spec.get("model", {}).get("type")
    if kind == "WordPiece":
        return "wordpiece"
    if kind == "Unigram":
        return "unigram"
    if kind == "BPE" and _has_byte_level(spec.get("pre_tokenizer")):
        return "bpe"
    return "added"


def _has_byte_level(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    if part.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(p) for p in part.get("pretokenizers", []))


def _pre_tokens(backend: Any, text: str) -> list[str]:
    """`text` as the model sees it: normalised, then cut by the pre-tokenizer."""
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is None:
        return [text] if text else []
    return [t for t, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def _forms(backend: Any, family: str, word: str) -> list[str] | None:
    """The pre-tokens a word takes in running text: one, or for byte-level BPE the spaced and the bare
    form. None when the word is not one pre-token (it would never be looked up whole)."""
    out = []
    for text in ([" " + word, word] if family in ("bpe", "bpe-merges") else [word]):
        pre = _pre_tokens(backend, text)
        if len(pre) != 1:
            return None
        out.append(pre[0])
    return list(dict.fromkeys(out))  # one form when the pre-tokenizer adds the space itself


def extend_backend(backend: Any, words: Sequence[Candidate], requested: int) -> tuple[Any, Extension]:
    """A copy of the Rust tokenizer `backend` with the first `requested` of `words` added (see the module
    docstring), and what was added. A word the tokenizer already spells whole, or that is no single
    pre-token, is skipped with the reason."""
    from tokenizers import AddedToken, Tokenizer

    spec = json.loads(backend.to_str())
    family = family_of(spec)
    if family == "bpe" and not spec["model"].get("ignore_merges") and not _reachable(backend):
        family = "bpe-merges"
    model = spec["model"]
    next_id = max(backend.get_vocab(with_added_tokens=True).values()) + 1
    if family == "unigram" and next_id != len(model["vocab"]):
        family = "added"  # a piece's id is its place in the list: one past an added token cannot be had
    scores = {p: s for p, s in model["vocab"]} if family == "unigram" else {}
    known = set(backend.get_vocab(with_added_tokens=True))
    ext = Extension(family, requested, [], [])
    added: list[Any] = []
    for cand in words:
        if len(ext.words) >= requested:
            break
        forms = _forms(backend, family, cand.word)
        if forms is None:
            ext.skipped[cand.word] = "not one word for this tokenizer's pre-tokenizer"
            continue
        todo = [(f, [t for t in backend.model.tokenize(f)]) for f in forms]
        todo = [(f, toks) for f, toks in todo if len(toks) > 1 and f not in known]
        if family == "unigram" and any(t.value not in scores for _, toks in todo for t in toks):
            ext.skipped[cand.word] = "the tokenizer cannot spell it (unknown pieces)"
            continue
        if not todo:
            ext.skipped[cand.word] = "already one token"
            continue
        for form, toks in todo:
            ids = [t.id for t in toks]
            if family == "wordpiece":
                model["vocab"][form] = next_id
            elif family == "unigram":
                best = sum(scores[t.value] for t in toks)
                model["vocab"].append([form, best + UNIGRAM_MARGIN])
            elif family == "bpe":
                model["vocab"][form] = next_id
            elif family == "bpe-merges":
                next_id = _add_merges(model, toks, next_id, known, ext, cand.word)
                continue
            else:
                added.append(AddedToken(form, single_word=True, normalized=True))
            ext.tokens.append(NewToken(form, next_id, ids, cand.word))
            known.add(form)
            next_id += 1
        ext.words.append(cand)
    if family == "bpe":
        model["ignore_merges"] = True
    out = Tokenizer.from_str(json.dumps(spec))
    if added:
        out.add_tokens(added)
        for t in ext.tokens:
            t.id = out.token_to_id(t.token)
    if family == "bpe-merges":  # one word's merges can pre-empt another's: keep the words that came whole
        whole = {t.word for t in ext.tokens if t.word is not None and len(out.model.tokenize(t.token)) == 1}
        for cand in ext.words:
            if cand.word not in whole:
                ext.skipped[cand.word] = "another word's merges break it up"
        ext.words = [c for c in ext.words if c.word in whole]
    return out, ext


def _reachable(backend: Any) -> bool:
    """Whether every token of a BPE vocabulary (special tokens aside) encodes to itself when it is a whole
    pre-token: then looking whole pre-tokens up first (`ignore_merges`) changes no existing encoding."""
    model = backend.model
    added = {t.content for t in backend.get_added_tokens_decoder().values()}  # matched before the model
    tokens = set(backend.get_vocab(with_added_tokens=False)) - added
    return all(len(toks := model.tokenize(t)) == 1 and toks[0].value == t for t in tokens)


def _add_merges(model: dict[str, Any], toks: list[Any], next_id: int, known: set[str], ext: Extension,
                word: str) -> int:
    """The merges that build a word from its pieces, left to right, appended after every existing merge
    (so they apply only where the old merges left these pieces side by side). Returns the next free id."""
    as_text = bool(model["merges"]) and isinstance(model["merges"][0], str)
    left, ids = toks[0].value, [toks[0].id]
    for k, tok in enumerate(toks[1:], 1):
        ids = [*ids, tok.id]
        merged = left + tok.value
        model["merges"].append(f"{left} {tok.value}" if as_text else [left, tok.value])
        if merged not in known:
            model["vocab"][merged] = next_id
            ext.tokens.append(NewToken(merged, next_id, list(ids), word if k == len(toks) - 1 else None))
            known.add(merged)
            next_id += 1
        left = merged
    return next_id


def extend_tokenizer(tokenizer: Any, words: Sequence[Candidate], requested: int) -> tuple[Any, Extension]:
    """A `transformers` tokenizer with the first `requested` words added, loaded back from a saved folder
    (so it is what the run's model folder will hold), and what was added."""
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UsageError("--extend-vocab needs a fast tokenizer (tokenizer.json); this model has a slow one")
    extended, ext = extend_backend(backend, words, requested)
    with tempfile.TemporaryDirectory(prefix="mlm-tui-vocab-") as tmp:
        tokenizer.save_pretrained(tmp)
        extended.save(str(Path(tmp) / "tokenizer.json"))
        out = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False)
    return out, ext


def extend(tokenizer: Any, train: TokenizedSplit, n: int, min_count: int) -> tuple[Any, Extension]:
    """The run's extension: the top `n` qualifying words of the training split added to the tokenizer."""
    return extend_tokenizer(tokenizer, candidates(train, tokenizer, min_count), n)


# -- what a model's extension added ---------------------------------------------------------------------
def added_ids(ref: str) -> frozenset[int]:
    """The token ids a vocabulary extension added to the model `ref` names, as its run recorded them
    (`Extension.to_dict`): a run by id, or a folder inside one (its final model, a checkpoint). None for
    any other model, or a record that does not read as one (a hand-edited file)."""
    from pathlib import Path

    from mlm_tui.home import runs_dir
    from mlm_tui.runstore import CorruptRun, find_run

    run = find_run(ref)
    path = Path(ref).expanduser()
    if run is None and path.is_dir():
        try:
            inside = path.resolve().relative_to(runs_dir().resolve()).parts
        except ValueError:
            inside = ()
        run = find_run(inside[0]) if inside else None
    if run is None:
        return frozenset()
    try:
        recorded = run.config().get("vocab_extension")
    except CorruptRun:
        return frozenset()
    tokens = recorded.get("new_tokens") if isinstance(recorded, dict) else None
    if not isinstance(tokens, list):
        return frozenset()
    return frozenset(t["id"] for t in tokens if isinstance(t, dict) and type(t.get("id")) is int)


# -- extending the model --------------------------------------------------------------------------------
def extend_model(model: Any, ext: Extension) -> None:
    """Grow the model's embeddings for the new tokens, each row the mean of its pieces' rows (input and, if
    untied, output; the output bias likewise). Tied weights stay tied."""
    import torch

    if not ext.tokens:
        return
    emb = model.get_input_embeddings()
    need = max(t.id for t in ext.tokens) + 1
    if need > emb.weight.shape[0]:
        model.resize_token_embeddings(need, mean_resizing=False)
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.weight.data_ptr()
    rows = emb.weight.shape[0]
    # Output biases: the output layer's, and any other vocabulary-long bias (BERT's head keeps a second
    # reference, which an untied resize leaves apart from the layer's).
    biases = {p.data_ptr(): p for name, p in model.named_parameters(remove_duplicate=False)
              if name.endswith("bias") and p.ndim == 1 and p.shape[0] == rows}
    if out is not None and getattr(out, "bias", None) is not None:
        biases[out.bias.data_ptr()] = out.bias
    with torch.no_grad():
        for t in ext.tokens:
            emb.weight[t.id] = emb.weight[t.pieces].mean(0)
            if out is not None and not tied:
                out.weight[t.id] = out.weight[t.pieces].mean(0)
            for bias in biases.values():
                bias[t.id] = bias[t.pieces].mean()
