"""Helpers for driving the workbench in pilot tests the way a person does, shared by the app test files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot
from textual.worker import WorkerState

POLLS = ("runs-list", "runs-poll")  # the workbench's looks at the run store, once a second, for ever


async def settle(pilot: Pilot, quiet: float = 0.3, timeout: float = 180) -> None:
    """Let debounces fire, workers finish and their messages land: return once no worker has been
    pending or running for `quiet` seconds (longer than a debounce, so a worker that a finished one's
    message starts is waited for too). The run store's pollers never stop: a test that needs what they
    bring waits for it with `wait_for`.

    It watches the workers' states rather than awaiting them: a worker of an exclusive group that a newer
    one replaced ends cancelled, and awaiting it raises `WorkerCancelled`, a failure of nothing the test
    checks."""
    deadline = time.monotonic() + timeout
    calm_since = time.monotonic()
    while time.monotonic() - calm_since < quiet:
        await pilot.pause()  # the messages already sent are handled
        await asyncio.sleep(0.02)
        if any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) and w.group not in POLLS
               for w in pilot.app.workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers still busy after {timeout} s: {list(pilot.app.workers)}")
            calm_since = time.monotonic()
    await pilot.pause()


async def wait_for(condition: Callable[[], bool], timeout: float, pilot: Pilot) -> None:
    """Wait for something a real process does (a run's step, a status) while the app keeps running."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await pilot.pause(0.25)
        await asyncio.sleep(0)


def plain(app: App[None], selector: str) -> str:
    return str(app.query_one(selector).render())


def notifications(app: App[None]) -> list[str]:
    return [n.message for n in app._notifications]
