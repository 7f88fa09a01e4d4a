"""Strings from data (file names, config fields, corpus text, tokens) made safe to show on a terminal.

A file name or a document can hold escape sequences that drive the terminal (colours, cursor moves, a
changed window title) and newlines that break a one-line message or forge a row of a table. Shown through
`printable`, such characters appear as visible escapes (`\\x1b`, `\\n`) and do nothing. JSON output needs
none of this: its own escaping already covers control characters.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidirectional overrides and isolates reorder what follows them on screen (the "Trojan Source" trick);
# other format characters (zero-width joiners in emoji, soft hyphens) are harmless and kept.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, carried by Python as a lone surrogate
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    return ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")


def printable(text: object) -> str:
    """`text` (any value, shown as `str`) with control, line-breaking and bidi characters escaped."""
    text = str(text)
    if text.isprintable() and not any(ch in _BIDI for ch in text):  # the common case, at C speed
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def shell_quote(arg: str) -> str:
    """`arg` quoted for a POSIX shell line that can be shown and copied: `shlex.quote`, unless the text
    holds characters `printable` escapes; then bash's `$'...'`, whose escapes (`\\n`) the shell turns back
    into the characters, where `shlex`'s single quotes would keep the shown escape literally."""
    import shlex

    if printable(arg) == arg:
        return shlex.quote(arg)
    body = "".join("\\\\" if ch == "\\" else "\\'" if ch == "'" else _escape(ch) if _unsafe(ch) else ch
                   for ch in arg)
    return f"$'{body}'"
