"""Waiting on a condition, never on the clock: the one helper every test uses instead of a fixed sleep.

`wait_until` (async) and `wait_until_sync` poll a predicate until it returns a truthy value, which they return,
or raise AssertionError naming `what` once `timeout` seconds have passed. A predicate may be sync or async in
`wait_until`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (a polling budget, not a cancellation scope)
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    end = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return outcome  # type: ignore[return-value]
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    end = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if outcome:
            return outcome
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(interval)
