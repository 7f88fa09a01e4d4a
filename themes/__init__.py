"""mlm-tui's own themes, installed as `mlm_tui.themes`.

Each `*.toml` file here is one Textual `Theme` (its keys are `Theme`'s fields), so a theme is added by
dropping a file in this folder; the app registers them all beside Textual's built-in themes.
"""

from __future__ import annotations

import tomllib
from importlib.resources import files

from textual.theme import Theme


def load_themes() -> list[Theme]:
    themes = []
    for entry in sorted(files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            themes.append(Theme(**tomllib.loads(entry.read_text(encoding="utf-8"))))
    return themes
