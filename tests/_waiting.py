"""Waiting for something to happen, bounded generously instead of timed.

A test that sleeps a fixed time and then looks assumes how fast this machine is; polling
until the condition holds does not, and the bound only decides how long a failing test
takes to say so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Long enough for a loaded two-core CI machine; a passing test never waits for it.
PATIENCE = 20.0


async def eventually(predicate: Callable[[], object], within: float = PATIENCE) -> bool:
    """Poll `predicate` on the loop until it holds (True) or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
