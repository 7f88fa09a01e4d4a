"""Helpers for driving the workbench in pilot tests the way a person does, shared by the app test files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot


async def settle(pilot: Pilot, seconds: float = 0.3) -> None:
    """Let debounces fire, workers finish and their messages land."""
    await pilot.pause(seconds)
    await pilot.app.workers.wait_for_complete()
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
