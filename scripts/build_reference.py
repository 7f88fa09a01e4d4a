"""Rebuild the general-English reference sample the vocabulary view compares a corpus with.

    apt-get download dict-devil && dpkg-deb -x dict-devil_*.deb x
    python scripts/build_reference.py x/usr/share/dictd

Writes `mlm_tui/data/general_english.txt.gz`: Ambrose Bierce's *The Devil's Dictionary* (public domain),
one entry per line, whitespace collapsed, with the dictd headers left out. The `starter` model never saw
it (it is already the starter's unseen evaluation text), so its fertility is the tokenizer's on general
English, not on text it was built from.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import build_starter

OUT = Path(__file__).resolve().parent.parent / "mlm_tui" / "data" / "general_english.txt.gz"


def main() -> None:
    build_starter.DICTS = Path(sys.argv[1]) if len(sys.argv) > 1 else build_starter.DICTS
    entries = build_starter.dict_entries("devil")
    # mtime=0: the same entries give the same bytes, so a rebuild shows no spurious change
    with open(OUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        fh.write("".join(e + "\n" for e in entries).encode("utf-8"))
    print(f"{OUT}: {len(entries)} entries, {OUT.stat().st_size / 1e3:.0f} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
