"""Where mlm-tui keeps its state: one root for caches, runs and settings.

Everything lives under one folder so that a user can find, back up or delete it in one go, and so that
tests and benchmarks can point `MLM_TUI_HOME` at a temporary folder and never touch the real one.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlm_tui.errors import MlmError, UsageError

APP_NAME = "mlm-tui"


def root() -> Path:
    """The state root: `$MLM_TUI_HOME` when set, else the platform's user data folder for mlm-tui."""
    env = os.environ.get("MLM_TUI_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        from platformdirs import user_data_path

        path = user_data_path(APP_NAME, appauthor=False)
    _make_dir(path, "MLM_TUI_HOME" if env else None)
    return path


def _make_dir(path: Path, variable: str | None) -> None:
    """Create a state folder, or say in one line why it cannot be one (a file in the way, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file is in the way" if isinstance(exc, FileExistsError | NotADirectoryError) else (
            exc.strerror or str(exc))
        named = f"{variable}={path}" if variable else str(path)
        raise MlmError(f"{named}: cannot use it as the state folder ({why})") from None


def _sub(name: str) -> Path:
    path = root() / name
    _make_dir(path, None)
    return path


def threads_from_env() -> int | None:
    """The CPU threads a training process may use (`MLM_TUI_THREADS`, set by the workbench), if set."""
    text = os.environ.get("MLM_TUI_THREADS", "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"MLM_TUI_THREADS must be a whole number of threads (got {text!r})") from None
    if value < 1:
        raise UsageError(f"MLM_TUI_THREADS must be at least 1 (got {value})")
    return value


def runs_dir() -> Path:
    return _sub("runs")


def models_dir() -> Path:
    """Models mlm-tui assembles itself (the `starter`), kept apart from the hub cache."""
    return _sub("models")


def chunks_cache_dir() -> Path:
    return _sub("cache/tokens")


def datasets_cache_dir() -> Path:
    return _sub("cache/datasets")


def run_listing_path() -> Path:
    """What listings of the run store read of its finished runs, for the next process (`runstore`)."""
    return _sub("cache") / "runs.json"


def settings_path() -> Path:
    return root() / "settings.json"


def history_path() -> Path:
    return root() / "history.json"


def configure_hf_environment() -> None:
    """Send hub downloads to a cache under our root unless the user chose their own `HF_HOME`.

    Must run before transformers/datasets/huggingface_hub are imported: they read these variables once.
    `HF_HUB_OFFLINE` is left to the user, as transformers users expect.
    """
    if "HF_HOME" not in os.environ:
        os.environ["HF_HOME"] = str(root() / "hf")
    os.environ.setdefault("HF_DATASETS_CACHE", str(datasets_cache_dir()))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet_transformers() -> None:
    """No per-file progress bars or advisory warnings: our own progress lines are the ones that count."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
