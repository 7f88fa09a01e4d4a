"""Pure rendering helpers: engine results in, Rich `Text` out, so panes stay thin and tests can read them.

Token text always goes into `Text` objects as plain strings, never through markup: `[CLS]` or `[MASK]`
would otherwise be parsed as style tags and vanish.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from mlm_tui.fill import FillResult

BAR_WIDTH = 20
_EIGHTHS = " ▏▎▍▌▋▊▉"
SPECIAL_STYLE = "bold magenta"
MASKED_STYLE = "bold black on yellow"
TOP_K = 5


def short_ref(ref: str) -> str:
    """A model or corpus reference as a person reads it: a directory's name, not its whole path."""
    return Path(ref).name if ("/" in ref and Path(ref).expanduser().exists()) else ref


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar in eighth-cell steps; plain block characters read well in any terminal."""
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    rest = _EIGHTHS[int((cells - full) * 8)] if full < width else ""
    return ("█" * full + rest).ljust(width)


def percent(score: float) -> str:
    return f"{score * 100:5.1f}%"


def fills_text(result: FillResult, title: str, baseline: FillResult | None = None,
               top_k: int = TOP_K, bar_width: int = BAR_WIDTH) -> Text:
    """Each mask's top fills with bars and percentages; against a baseline, how each fill rose or fell."""
    out = Text()
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
            out.append(f"  {fill.token[:14]:<14} ")
            out.append(bar(fill.score, bar_width), style="green")
            out.append(f" {percent(fill.score)}")
            if baseline is not None:
                out.append("  ")
                out.append_text(_change(fill.score, before.get(fill.token_id)))
            out.append("\n")
    return out


def _change(score: float, before: float | None) -> Text:
    if before is None:
        return Text("new", style="bold cyan")
    delta = (score - before) * 100
    if abs(delta) < 0.05:
        return Text("=", style="dim")
    return Text(f"▲{delta:.1f}" if delta > 0 else f"▼{-delta:.1f}", style="green" if delta > 0 else "red")


def chunk_text(tokens: Sequence[str], special: Sequence[bool], masked: Sequence[bool] | None = None) -> Text:
    """A chunk as readable text: word pieces joined, special tokens and masked positions highlighted.

    WordPiece continuations (`##ing`) attach to the previous token; SentencePiece/byte-level word starts
    (`▁`, `Ġ`) begin a new word. Specials stand alone so `[SEP] [CLS]` marks a document boundary.
    """
    out = Text()
    marked_starts = any(t[:1] in ("▁", "Ġ") for t in tokens)
    for i, token in enumerate(tokens):
        piece, space = token, True
        if token.startswith("##"):
            piece, space = token[2:], False
        elif token[:1] in ("▁", "Ġ"):
            piece = token[1:]
        elif not special[i] and marked_starts:
            space = False  # a byte-level vocabulary: a piece without a marker continues its word
        if i and (space or special[i] or special[i - 1]):
            out.append(" ")
        if special[i]:
            out.append(token, style=SPECIAL_STYLE)
        elif masked is not None and masked[i]:
            out.append(piece, style=MASKED_STYLE)
        else:
            out.append(piece)
    return out
