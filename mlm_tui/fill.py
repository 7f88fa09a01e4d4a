"""Fill every mask of a sentence, as transformers' fill-mask pipeline does, in one forward pass.

Each mask gets its own top-k from its own softmax (masks are independent). Only the mask rows go through
the vocabulary head, so a fill costs about one encoder pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mlm_tui.errors import FieldError, UsageError
from mlm_tui.textsafe import printable

MASK_ALIAS = "[MASK]"
TOP_K = 5  # fills per mask unless asked for more (`fill --top-k`, the Fill pane's setting)
TOP_K_CHOICES = (5, 10, 20)  # what the Fill pane's key cycles through


@dataclass
class Fill:
    token: str
    token_id: int
    score: float
    sequence: str


@dataclass
class MaskFills:
    index: int  # the mask's position in the input ids
    fills: list[Fill]


@dataclass
class FillResult:
    model: str
    text: str
    masks: list[MaskFills]
    best: str = ""  # every mask replaced by its own top fill (the fills are still independent)

    def to_dict(self) -> dict:
        return {"model": self.model, "text": self.text, "masks": [asdict(m) for m in self.masks]}

    def as_text(self, top_k: int | None = None) -> str:
        """Each mask's fills as `mlm-tui fill` prints them (the Fill pane copies the same text); the first
        `top_k` of each when given (a result fetched deeper, for comparing, than it is shown)."""
        lines = []
        for n, mask in enumerate(self.masks, 1):
            lines.append(f"mask {n} (token {mask.index}):")
            lines += [f"  {f.score * 100:5.1f}%  {printable(f.token):<15} {printable(f.sequence)}"
                      for f in mask.fills[:top_k]]
        return "\n".join(lines)


NO_MASK = f"no {MASK_ALIAS} in the text: put {MASK_ALIAS} where a word should be predicted"


def normalise(text: str, mask_token: str) -> str:
    """Accept `[MASK]` for any model, whatever its own mask token is (`<mask>` for RoBERTa)."""
    return text.replace(MASK_ALIAS, mask_token) if mask_token != MASK_ALIAS else text


def fill(model: Any, tokenizer: Any, text: str, top_k: int = TOP_K, *, device: str = "cpu",
         name: str = "") -> FillResult:
    """The fills of a loaded model and its tokenizer (`models.ModelHandle.fill` passes its own, under its
    lock); `name` is the model's, for the result."""
    import torch

    from mlm_tui.heads import encoder_hidden, mlm_head

    if top_k < 1:
        raise FieldError("top_k", f"must be at least 1 (got {top_k})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # bytes that were not UTF-8 reach Python as lone surrogates
        where = f"{printable(text[exc.start])} at character {exc.start + 1}"
        raise UsageError(f"the text is not UTF-8 ({where}); give it in UTF-8") from None
    prepared = normalise(text, tokenizer.mask_token)
    enc = tokenizer(prepared, return_tensors="pt")
    ids = enc["input_ids"]
    positions = (ids[0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(positions) == 0:
        raise UsageError(NO_MASK)
    limit = _max_length(model, tokenizer)
    if ids.shape[1] > limit:
        raise UsageError(f"the text is {ids.shape[1]} tokens long; this model reads at most {limit}")
    if len(positions) == ids.shape[1] - tokenizer.num_special_tokens_to_add():
        raise UsageError("the text is only masks: give the model some words to go on")
    enc = {k: v.to(device) for k, v in enc.items()}
    head = mlm_head(model)
    with torch.inference_mode():
        if head is not None:
            hidden = encoder_hidden(model, **enc)
            logits = head(hidden[0, positions.to(device)])
        else:
            logits = model(**enc).logits[0, positions.to(device)]
        probs = logits.float().softmax(dim=-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    scores = top.values.cpu().tolist()
    token_ids = top.indices.cpu().tolist()
    base_ids = ids[0].tolist()
    keep_specials = set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}
    masks: list[MaskFills] = []
    best_ids = list(base_ids)
    for row, pos in enumerate(positions.tolist()):
        best_ids[pos] = token_ids[row][0]
        fills = []
        for score, token_id in zip(scores[row], token_ids[row], strict=True):
            filled = list(base_ids)
            filled[pos] = token_id
            sequence = tokenizer.decode([t for t in filled if t not in keep_specials])
            fills.append(Fill(tokenizer.decode([token_id]), token_id, score, sequence))
        masks.append(MaskFills(pos, fills))
    best = tokenizer.decode([t for t in best_ids if t not in keep_specials])
    return FillResult(name, text, masks, best)


def _max_length(model: Any, tokenizer: Any) -> int:
    config_limit = getattr(model.config, "max_position_embeddings", None) or 512
    tok_limit = tokenizer.model_max_length
    return min(config_limit, tok_limit) if tok_limit and tok_limit < 10**6 else config_limit
