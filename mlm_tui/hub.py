"""Is the Hugging Face Hub there? Answered from the local cache and a two-second probe, not by retrying.

Without a network, huggingface_hub retries for half a minute before it gives up, and prints its own
lines on the way. A hub model or dataset is therefore looked up in the local cache first (a look at
folders, no import), and the Hub is probed with one short TCP connect before anything downloads.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

PROBE_SECONDS = 2.0


def offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "")).strip().upper() in (
        "1", "ON", "YES", "TRUE")


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def is_cached(repo_id: str, repo_type: str) -> bool:
    """Whether a snapshot of the repository (a model, or a dataset `datasets` has prepared) is on disk."""
    snapshots = _hub_cache() / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in snapshots.iterdir()):
        return True
    if repo_type == "dataset" and os.environ.get("HF_DATASETS_CACHE"):
        prepared = Path(os.environ["HF_DATASETS_CACHE"]) / repo_id.replace("/", "___")
        return prepared.is_dir()
    return False


def reachable(timeout: float = PROBE_SECONDS) -> bool:
    """One TCP connect to the Hub's host. Name resolution is not bounded by a socket timeout, so the
    whole probe runs on a helper thread that is given up on after `timeout` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="mlm-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def unavailable_reason() -> str | None:
    """Why nothing can be downloaded now (HF_HUB_OFFLINE, no network), or None when the Hub answers."""
    if offline_requested():
        return "HF_HUB_OFFLINE is set"
    if not reachable():
        use_cache_only()
        return "the Hugging Face Hub cannot be reached (no network?)"
    return None


def use_cache_only() -> None:
    """Make the hub libraries read the cache without asking the Hub, as HF_HUB_OFFLINE=1 does.

    They read the variable when first imported; a process that already imported them (the workbench)
    gets their module flags set as well.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = True
