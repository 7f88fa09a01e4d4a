"""Training progress as words: the event lines the CLI prints and the durations every front end shows."""

from __future__ import annotations

import sys
from typing import Any


def say(message: str) -> None:
    """A progress line on stderr: stdout is kept for the one result (`--json`). Whatever data it quotes
    (file names, run fields) is shown escaped."""
    from mlm_tui.textsafe import printable

    print(printable(message), file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def print_event(event: dict[str, Any]) -> None:
    """Training progress as plain lines on stderr (they read well in a log file and over ssh)."""
    kind = event["event"]
    if kind == "status":
        say(event["message"])
    elif kind == "plan":
        eval_note = f", eval every {event['eval_steps']}" if event.get("eval_steps") else ""
        save_note = f", checkpoint every {event['save_steps']}" if event.get("save_steps") else ""
        say(f"device {event['device']} ({event['precision']}), batch {event['batch_size']}, "
            f"{event['steps']} steps ({event['steps_per_epoch']}/epoch), {event['train_chunks']} train / "
            f"{event['test_chunks']} test chunks{save_note}{eval_note}")
        for note in event.get("notes", []):
            say(f"note: {note}")
    elif kind == "step":
        say(f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  "
            f"{event['tokens_per_s']:.0f} tok/s  ETA {format_duration(event['eta'])}")
    elif kind == "eval":
        say(f"perplexity {event['perplexity']:.2f} at step {event['step']}")


def format_figure(value: float | None, digits: int = 2) -> str:
    """A perplexity (2 `digits`) or bits per character (3) as the CLI and the model card print it; "-" when
    unknown."""
    return f"{value:.{digits}f}" if value is not None else "-"


def format_bytes(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    n /= 1000
    for unit in ("kB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
