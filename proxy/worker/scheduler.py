"""Work items as tasks: keyed, bounded, each failing alone and retried with backoff.

An item is keyed by what it works on (`("flush", tag)`, `("batch", tag, batch_id)`, ...), so one key never runs
twice at once in a process. At most `limit` bounded items run at once. An item that raises is logged with its
ids, counted (`on_failure(stage)`) and not started again until its backoff has passed: `RETRY_BASE * 2**(n-1)`
seconds after its n-th failure in a row, at most `RETRY_CAP`. An item cancelled by anything but `cancel_all`
was stopped because its lease was lost (see `leases.py`): counted with `on_lost(stage)`, not retried sooner
than usual. Whatever else runs carries on either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("batchgate.worker.scheduler")

T = TypeVar("T")
WorkKey = tuple[str, ...]
Ids = Mapping[str, str]

RETRY_BASE = 1.0
RETRY_CAP = 60.0


@dataclass
class _Failures:
    count: int
    not_before: float


def backoff(failures: int, *, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1, 2, 3, ...)."""
    return float(min(cap, base * 2.0 ** max(0, failures - 1)))


class Scheduler:
    def __init__(
        self,
        *,
        limit: int,
        on_failure: Callable[[str], None],
        on_lost: Callable[[str], None],
        on_worked: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.on_failure = on_failure
        self.on_lost = on_lost
        self.on_worked = on_worked  # an item did something: there may be more to do at once
        self.clock = clock
        self.running: dict[WorkKey, asyncio.Task[bool]] = {}
        self._bounded: set[WorkKey] = set()
        self._failures: dict[WorkKey, _Failures] = {}
        self._closing = False

    def free(self) -> int:
        """Bounded items that can still start."""
        return max(0, self.limit - len(self._bounded))

    def running_under(self, *prefix: str) -> int:
        return sum(1 for key in self.running if key[: len(prefix)] == prefix)

    def ready(self, key: WorkKey) -> bool:
        """Neither running nor waiting out a backoff."""
        if key in self.running or self._closing:
            return False
        failures = self._failures.get(key)
        return failures is None or self.clock() >= failures.not_before

    def start(
        self, key: WorkKey, work: Callable[[], Awaitable[bool]], *, stage: str, ids: Ids, bounded: bool = True
    ) -> bool:
        """Run `work` as its own task unless the key is busy, backing off, or (bounded) no slot is free.
        `work` returns whether it did something."""
        if not self.ready(key) or (bounded and self.free() <= 0):
            return False
        task = asyncio.create_task(self._run(key, work, stage, ids), name=":".join(key))
        self.running[key] = task
        if bounded:
            self._bounded.add(key)
        task.add_done_callback(lambda _: self._forget(key))
        return True

    async def attempt(self, key: WorkKey, step: Callable[[], Awaitable[T]], *, stage: str, ids: Ids) -> T | None:
        """Run a short step inline with the same isolation: None when it is backing off or raised."""
        if not self.ready(key):
            return None
        try:
            result = await step()
        except Exception as exc:
            self._failed(key, stage, ids, exc)
            return None
        self._failures.pop(key, None)
        return result

    async def drain(self) -> None:
        """Wait for the running items to finish."""
        while self.running:
            await asyncio.wait(list(self.running.values()))

    async def cancel_all(self) -> None:
        """Stop every running item (each hands back what it holds) and start no more."""
        self._closing = True
        pending = set(self.running.values())
        while pending:  # again until they end: a cancellation can be swallowed (see runner.raise_if_cancelled)
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)

    def _forget(self, key: WorkKey) -> None:
        self.running.pop(key, None)
        self._bounded.discard(key)

    async def _run(self, key: WorkKey, work: Callable[[], Awaitable[bool]], stage: str, ids: Ids) -> bool:
        try:
            worked = await work()
        except asyncio.CancelledError:
            if self._closing:
                raise
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()
            self.on_lost(stage)
            log.warning("work stopped: its lease was lost", extra={"stage": stage, **ids})
            return False
        except Exception as exc:
            self._failed(key, stage, ids, exc)
            return False
        self._failures.pop(key, None)
        if worked:
            self.on_worked()
        return worked

    def _failed(self, key: WorkKey, stage: str, ids: Ids, exc: Exception) -> None:
        now = self.clock()
        previous = self._failures.get(key)
        count = (previous.count if previous else 0) + 1
        delay = backoff(count)
        self._failures[key] = _Failures(count, now + delay)
        self.on_failure(stage)
        log.error(
            "work failed; retried in %.1f s: %r",
            delay,
            exc,
            exc_info=exc,
            extra={"stage": stage, "failures": count, **ids},
        )
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget the failures of items not retried long after their backoff (a batch closed meanwhile)."""
        stale = [key for key, failures in self._failures.items() if failures.not_before + RETRY_CAP < now]
        for key in stale:
            del self._failures[key]
