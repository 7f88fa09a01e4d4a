"""The workbench's settings: a small JSON object under the state root, written atomically.

A settings file that cannot be read (hand-edited badly, a disk error) must never stop the app from
starting: `load_settings` returns the defaults with a one-line problem for the app to show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mlm_tui import atomic
from mlm_tui.fill import TOP_K
from mlm_tui.home import settings_path


@dataclass
class Settings:
    theme: str = "mlm-dark"
    keep_history: bool = False  # opt-in: sentences typed in Fill are written to disk only when on
    history_size: int = 200
    bell: bool = False  # ring the terminal bell as well when a run ends
    # fills shown per mask in Fill (its key cycles `fill.TOP_K_CHOICES`); a value is kept if it is at least 1
    fill_top_k: int = field(default=TOP_K, metadata={"valid": lambda k: k >= 1})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Known keys with the right type (and a valid value, where a field says what is valid) are taken;
        anything else keeps its default."""
        defaults = cls()
        values = {}
        for f in fields(cls):
            value = data.get(f.name)
            if value is not None and type(value) is type(getattr(defaults, f.name)) and \
                    f.metadata.get("valid", lambda _: True)(value):
                values[f.name] = value
        return cls(**values)


def load_settings() -> tuple[Settings, str | None]:
    """The saved settings, or the defaults plus a problem to report when the file is unreadable."""
    path = settings_path()
    try:
        data = atomic.read_json(path)
    except FileNotFoundError:
        return Settings(), None
    except (OSError, ValueError) as exc:
        return Settings(), f"ignored unreadable settings file {path} ({exc})"
    if not isinstance(data, dict):
        return Settings(), f"ignored settings file {path}: not a JSON object"
    return Settings.from_dict(data), None


def save_settings(settings: Settings) -> None:
    atomic.write_json(settings_path(), asdict(settings))
