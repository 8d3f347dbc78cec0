"""Leases, not locks: `SET key token PX ttl NX`, renewed while working, released only by their holder.
The Redis side is `proxy/store/leases.py`.

The token is the worker's id and a number of its own for each hold, so two tasks of one worker are two holders:
a task whose lease lapsed cannot renew the lease another task of the same worker has taken since.

A lease that is lost (its holder paused longer than the TTL, or Redis lost the key) stops the task holding it:
the keeper that renews it cancels that task, and `confirm()`, called before every provider call, stops it even
when the keeper has not noticed yet. So two workers never act on one batch after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis

from proxy.store.leases import LeaseStore

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Lease:
    key: str
    token: str
    holder: asyncio.Task[object] | None  # the task stopped when the lease is lost
    lost: bool = field(default=False)
    released: bool = field(default=False)  # the block has ended: its keeper stops renewing


# The leases held by the running task (copied into the tasks it starts, which is harmless: they stop with it).
_held: contextvars.ContextVar[tuple[Lease, ...]] = contextvars.ContextVar("batchgate_leases_held", default=())


class Leases:
    def __init__(self, store: LeaseStore, *, owner: str, ttl: float) -> None:
        self.store = store
        self.owner = owner
        self.ttl_ms = max(100, int(ttl * 1000))
        self._holds = itertools.count(1)

    async def acquire(self, key: str, token: str) -> bool:
        return await self.store.acquire(key, token, ttl_ms=self.ttl_ms)

    async def renew(self, key: str, token: str) -> bool:
        return await self.store.renew(key, token, ttl_ms=self.ttl_ms)

    async def release(self, key: str, token: str) -> None:
        await self.store.release(key, token)

    @contextlib.asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[bool]:
        """Try to take the lease (yields False when another holder has it). While the block runs the lease is
        renewed every third of its TTL; if it is lost, the task running the block is cancelled. Released after."""
        token = f"{self.owner}/{next(self._holds)}"
        if not await self.acquire(key, token):
            yield False
            return
        lease = Lease(key, token, asyncio.current_task())
        context = _held.set((*_held.get(), lease))
        keeper = asyncio.create_task(self._keep(lease))
        try:
            yield True
        finally:
            _held.reset(context)
            try:
                await self._stop_keeper(lease, keeper)
            finally:
                with contextlib.suppress(redis.RedisError):
                    await asyncio.shield(self.release(key, token))

    @staticmethod
    async def _stop_keeper(lease: Lease, keeper: asyncio.Task[None]) -> None:
        """End the keeper without swallowing a cancellation of this task: awaiting the cancelled keeper would
        raise CancelledError either way, and suppressing it would also drop the caller's own (a worker told to
        stop would carry on). `released` ends the keeper's loop even if its cancellation is lost inside a Redis
        call that completes at the same moment (Python 3.11's timeouts can do that)."""
        lease.released = True
        keeper.cancel()
        await asyncio.wait({keeper})
        if not keeper.cancelled():
            keeper.result()  # a keeper's own failure is the block's

    async def confirm(self) -> None:
        """Make sure every lease the current task holds is still its own (renewing them), before a call that must
        not be made twice. Raises CancelledError when one is lost; RedisError when Redis cannot tell."""
        for lease in _held.get():
            if lease.lost or not await self.renew(lease.key, lease.token):
                self._lost(lease)
                raise asyncio.CancelledError(f"lease lost: {lease.key}")

    async def _keep(self, lease: Lease) -> None:
        while not lease.released:
            await asyncio.sleep(self.ttl_ms / 3000)
            if lease.released:
                return
            try:
                if not await self.renew(lease.key, lease.token):
                    self._lost(lease)
                    return
            except redis.RedisError:
                log.warning("lease renewal failed", extra={"lease": lease.key, "worker": self.owner})

    def _lost(self, lease: Lease) -> None:
        if lease.lost:
            return
        lease.lost = True
        log.warning("lease lost; its work stops", extra={"lease": lease.key, "worker": self.owner})
        holder = lease.holder
        if holder is not None and holder is not asyncio.current_task() and not holder.done():
            holder.cancel(f"lease lost: {lease.key}")
