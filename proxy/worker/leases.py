"""Leases, not locks: held while working (renewed every third of their TTL), released only by their owner.
The Redis side is `proxy/store/leases.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis

from proxy.store.leases import LeaseStore

log = logging.getLogger(__name__)


class Leases:
    def __init__(self, store: LeaseStore, *, owner: str, ttl: float) -> None:
        self.store = store
        self.owner = owner
        self.ttl_ms = max(100, int(ttl * 1000))

    async def acquire(self, key: str) -> bool:
        return await self.store.acquire(key, self.owner, ttl_ms=self.ttl_ms)

    async def renew(self, key: str) -> bool:
        return await self.store.renew(key, self.owner, ttl_ms=self.ttl_ms)

    async def release(self, key: str) -> None:
        await self.store.release(key, self.owner)

    @contextlib.asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[bool]:
        """Try to take the lease; while the block runs it is renewed every third of its TTL, then released."""
        if not await self.acquire(key):
            yield False
            return
        keeper = asyncio.create_task(self._keep(key))
        try:
            yield True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(redis.RedisError):
                await asyncio.shield(self.release(key))

    async def _keep(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                if not await self.renew(key):
                    log.warning("lease lost", extra={"lease": key, "worker": self.owner})
                    return
            except redis.RedisError:
                log.warning("lease renewal failed", extra={"lease": key, "worker": self.owner})
