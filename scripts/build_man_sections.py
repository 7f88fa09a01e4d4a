"""A labelled corpus from this machine's man pages, for the probe's README example: each page's DESCRIPTION
text, labelled by its section (1 commands, 2 system calls, 3 library calls, 5 file formats, 7 overviews,
8 administration).

    python scripts/build_man_sections.py OUT_FOLDER

Roff requests and font escapes are stripped, and cross-references such as `open(2)` lose their section
number, so that the label is not written in the text. Up to 1,200 characters a page, pages of under 200
left out. Per section, a seeded shuffle of the pages (at most `PER_SECTION`); a fifth of each section's
pages go to `test.jsonl`, the rest to `train.jsonl` (fields `text` and `section`). The train split's text
is also what the adaptation run trains on: the probe's test pages are never trained on.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from pathlib import Path

PER_SECTION = {"1": 500, "2": 300, "3": 500, "5": 220, "7": 300, "8": 400}
INLINE = (".B ", ".I ", ".BR", ".IR", ".BI", ".RB", ".RI", ".IB")  # font macros whose argument is text


def plain(line: str) -> str:
    line = re.sub(r"\\f[BIRP]|\\f\(..|\\f\[[^]]*\]", "", line)
    line = re.sub(r"\\\(..|\\\[[^]]*\]|\\[&|^%]|\\e", " ", line)
    line = re.sub(r"\\\*\(Aq", "'", line)
    line = re.sub(r"\\\*(\(..|\[[^]]*\]|.)", "", line)
    return line.replace("\\-", "-").replace('\\"', "")


def description(source: str) -> str | None:
    found = re.search(r'^\.S[Hh] "?DESCRIPTION"?\s*$(.*?)^\.S[Hh] ', source, re.M | re.S)
    if not found:
        return None
    words = []
    for line in found.group(1).splitlines():
        if line.startswith((".", "'")):
            if not line.startswith(INLINE):
                continue
            line = re.sub(r"^\.\w+\s*", "", line).replace('"', "")
        words.append(plain(line))
    text = re.sub(r"\b([\w.:-]+)\s*\(\d\w*\)", r"\1", " ".join(words))
    text = re.sub(r"\s+", " ", text).strip()[:1200]
    return text if len(text) > 200 else None


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for section, limit in PER_SECTION.items():
        pages = sorted(Path(f"/usr/share/man/man{section}").glob("*.gz"))
        rng.shuffle(pages)
        docs: list[str] = []
        for page in pages:
            try:
                with gzip.open(page, "rt", errors="replace") as fh:
                    source = fh.read()
            except OSError:
                continue
            text = None if source.startswith(".so") else description(source)  # .so: an alias page
            if text:
                docs.append(text)
            if len(docs) == limit:
                break
        k = len(docs) // 5
        rows["test"] += [{"text": t, "section": section} for t in docs[:k]]
        rows["train"] += [{"text": t, "section": section} for t in docs[k:]]
        print(f"section {section}: {len(docs)} pages")
    for split, items in rows.items():
        rng.shuffle(items)
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(item) + "\n" for item in items)
        print(f"{split}: {len(items)} pages")


if __name__ == "__main__":
    main()
