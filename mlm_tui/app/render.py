"""Pure rendering helpers: engine results in, Rich `Text` out, so panes stay thin and tests can read them.

Token text always goes into `Text` objects as plain strings, never through markup: `[CLS]` or `[MASK]`
would otherwise be parsed as style tags and vanish.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from mlm_tui.fill import TOP_K
from mlm_tui.textsafe import printable

if TYPE_CHECKING:
    from mlm_tui.fill import FillResult

BAR_WIDTH = 20
_EIGHTHS = " ▏▎▍▌▋▊▉"
SPECIAL_STYLE = "bold magenta"
# A token a run's vocabulary extension added (`vocab_extend`); under the masking preview, its fate's style
# in italics.
NEW_TOKEN_STYLE, NEW_TOKEN_FATE_STYLE = "bold cyan", "italic"
# A fill the baseline's top fills lack: not cyan, which marks an added token, and a fill of a model with
# added tokens can be both.
NEW_FILL_STYLE = "bold yellow"
# Folder names that say what is in a folder but not whose it is (a run's `model` and `checkpoints`).
_UNNAMED = frozenset({"model", "checkpoints", "final"})


def short_ref(ref: str) -> str:
    """A model or corpus reference as a person reads it: a directory's name, not its whole path, from the
    first folder up that names it: a run's model read "model" and its checkpoint "checkpoint-500", which
    say nothing of which run (`runs/ID/model` reads "ID/model")."""
    path = Path(ref)
    if "/" not in ref or not path.expanduser().exists():
        return ref
    parts = path.parts
    first = len(parts) - 1
    while first > 0 and (parts[first] in _UNNAMED or parts[first].startswith("checkpoint-")):
        first -= 1
    return "/".join(parts[first:])


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar in eighth-cell steps; plain block characters read well in any terminal."""
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    rest = _EIGHTHS[int((cells - full) * 8)] if full < width else ""
    return ("█" * full + rest).ljust(width)


def percent(score: float) -> str:
    return f"{score * 100:5.1f}%"


def fills_text(result: FillResult, title: str, baseline: FillResult | None = None,
               top_k: int = TOP_K, compact: bool = False) -> Text:
    """Each mask's top fills with bars and percentages; against a baseline, how each fill rose or fell.

    Every line has fixed-width columns and never wraps (`compact` narrows them so that two columns fit
    side by side in 80 terminal columns): a wrapped ▲ would break the alignment people compare by.
    """
    token_width, bar_width = (11, 6) if compact else (14, BAR_WIDTH)
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(title, style="bold")
    out.append("\n")
    out.append(result.best, style="italic")
    out.append("\n")
    for n, mask in enumerate(result.masks):
        out.append(f"\nmask {n + 1}\n", style="bold")
        before = {}
        if baseline is not None and n < len(baseline.masks):
            before = {f.token_id: f.score for f in baseline.masks[n].fills}
        for fill in mask.fills[:top_k]:
            out.append(f" {_cell(printable(fill.token), token_width)} ")
            out.append(bar(fill.score, bar_width), style="green")
            out.append(f" {percent(fill.score)}")
            if baseline is not None:
                out.append(" ")
                out.append_text(_change(fill.score, before.get(fill.token_id)))
            out.append("\n")
    return out


def _cell(text: str, width: int) -> str:
    """`text` in exactly `width` terminal cells (wide characters too), its end cut with "…" when longer:
    a fill cut silently (`circumstanc`) reads as a word the model did not offer."""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def _change(score: float, before: float | None) -> Text:
    """The change in percentage points (pp), right-aligned in 7 cells."""
    if before is None:
        return Text(f"{'new':>7}", style=NEW_FILL_STYLE)
    delta = (score - before) * 100
    if percent(score) == percent(before):  # "=" only between two percentages that read the same
        return Text(f"{'=':>7}", style="dim")
    arrow = "▲" if delta > 0 else "▼"
    shown = f"{abs(delta):.2f}" if abs(delta) < 0.1 else f"{abs(delta):.1f}"
    return Text(f"{arrow}{shown}pp".rjust(7), style="green" if delta > 0 else "red")


def ppl_change(before: object, after: object, digits: int = 2) -> str:
    """`31.28 → 27.22 (-13.0%)`, or what is known of it; '' when nothing is (bits per character: 3
    `digits`)."""
    def number(value: object) -> float | None:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    b, a = number(before), number(after)
    if b is None and a is None:
        return ""
    text = f"{b:.{digits}f}" if b is not None else "–"
    if a is not None:
        text += f" → {a:.{digits}f}"
        if b:
            text += f" ({(a - b) / b * 100:+.1f}%)"
    return text


# How the collator treats each chosen position (the course's 80/10/10 rule), as the preview shows it.
FATE_STYLES = {"mask": "bold black on yellow", "random": "bold white on red", "kept": "bold underline green"}
FATE_LEGEND = (("mask", "→ [MASK] (80%)"), ("random", "→ random token (10%)"), ("kept", "kept (10%)"))


def new_token_legend(count: int) -> Text:
    """What the chunk view's new-token style means, for a tokenizer a vocabulary extension grew."""
    out = Text()
    out.append(" word ", style=NEW_TOKEN_STYLE)
    out.append(f" a token the run's vocabulary extension added ({count:,}; {NEW_TOKEN_FATE_STYLE} under "
               "the masking preview)")
    return out


def fate_legend() -> Text:
    out = Text()
    for fate, label in FATE_LEGEND:
        out.append(" word ", style=FATE_STYLES[fate])
        out.append(f" {label}  ")
    return out


# A word looked up from the Words pane, in the chunks that hold it: reversed, or underlined where the
# masking preview already styles a token (its fate stays readable).
WORD_STYLE, WORD_FATE_STYLE = "reverse", "underline"


def chunk_text(decode: Callable[[list[int]], str], ids: Sequence[int], special: Sequence[bool],
               fates: Sequence[tuple[str, str] | None] | None = None, marked: Collection[int] = (),
               added: Collection[int] = ()) -> Text:
    """A chunk as the tokenizer's own `decode` writes it (as `mlm-tui chunks --show` does), with special
    tokens highlighted and, for a masking preview, each chosen token styled by its fate; a token replaced
    by a random one is followed by `→replacement`. The tokens at the positions `marked` (a word looked up)
    stand out too, and so do the tokens whose ids are `added` (a vocabulary extension's new tokens).

    Each token's span is found by decoding growing prefixes: the text is exactly `decode(ids)`, and a
    prefix whose decoding is not a prefix of the whole (rare clean-up effects) only leaves that token
    unstyled.
    """
    full = decode(list(ids))
    out = Text()
    done = 0  # characters of `full` already appended
    for i in range(len(ids)):
        prefix = decode(list(ids[: i + 1])) if i + 1 < len(ids) else full
        if not full.startswith(prefix) or len(prefix) <= done:
            continue  # this token's text joins the next one's span, unstyled
        end = len(prefix)
        start = done
        while start < end and full[start] == " ":
            start += 1  # the space before a word is not the word
        out.append(full[done:start])
        fate = fates[i] if fates is not None else None
        style = SPECIAL_STYLE if special[i] else FATE_STYLES[fate[0]] if fate is not None else ""
        if ids[i] in added and not special[i]:
            style = f"{style} {NEW_TOKEN_FATE_STYLE}" if style else NEW_TOKEN_STYLE
        if i in marked:
            style = f"{style} {WORD_FATE_STYLE}" if style else WORD_STYLE
        out.append(full[start:end], style=style)
        if fate is not None and fate[0] == "random" and not special[i]:
            out.append(f"→{fate[1]}", style=FATE_STYLES["random"])
        done = end
    out.append(full[done:])
    return out
