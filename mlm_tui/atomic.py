"""Atomic writes for run state and settings: a reader sees the old file or the new one, never half.

Everything the tool writes or prints as JSON goes through `dumps`: strict JSON only, so that any parser
(jq, JavaScript, Go) reads it; Python's default would write NaN and Infinity, which they reject.

A finished file takes the user's umask, as any tool's output does: a temporary file from `mkstemp` is
private (0600), and renamed into place it would stay so, leaving an export or a model card on a shared
server unreadable to colleagues. Libraries that write the same way (safetensors' `save_file`) get their
folder's modes set by `settle_modes`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process's umask, read without changing it (`os.umask` can only set it, which would race with
    other threads creating files); the set-and-restore fallback is for systems without /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a file created now gets from the umask: 0644 under the usual 022."""
    return 0o666 & ~umask()


def settle_modes(folder: Path) -> None:
    """Give every file in `folder` (recursively) the umask's mode: for files a library wrote private."""
    mode = file_mode()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def write_bytes(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file beside it. The folder must exist: a run's process writing
    after its run was deleted gets FileNotFoundError instead of re-creating a stub of the run."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite(obj: Any, where: str = "") -> tuple[Any, list[str]]:
    """`obj` with every NaN or infinite float replaced by None, and one line per replaced value naming it."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [f"{where or 'value'} was {obj} (not a number); written as null"]
    if isinstance(obj, dict):
        out, notes = {}, []
        for key, value in obj.items():
            out[key], more = finite(value, f"{where}.{key}" if where else str(key))
            notes += more
        return out, notes
    if isinstance(obj, list | tuple):
        items = [finite(value, f"{where}[{i}]") for i, value in enumerate(obj)]
        return [value for value, _ in items], [note for _, more in items for note in more]
    return obj, []


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON of `obj`: non-finite numbers become null and, in an object, a `warnings` list says why."""
    obj, notes = finite(obj)
    if notes and isinstance(obj, dict):
        previous = obj.get("warnings")
        obj["warnings"] = (previous if isinstance(previous, list) else []) + notes
    return json.dumps(obj, allow_nan=False, **kwargs)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing, empty or corrupt file raises ValueError or OSError for the caller."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
