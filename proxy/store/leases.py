"""Lease primitives: `SET key owner PX ttl NX`, renewed and released only by their owner (owner-checked scripts).

Lease keys come from `keys.lease(tag, name)`; `proxy/worker/leases.py` holds and renews them around a task.
"""

from __future__ import annotations

import redis.asyncio

from proxy.store.scripts import Scripts


class LeaseStore:
    def __init__(self, client: redis.asyncio.Redis, scripts: Scripts) -> None:
        self.redis = client
        self.scripts = scripts

    async def acquire(self, key: str, owner: str, *, ttl_ms: int) -> bool:
        """Take the lease if nobody holds it; it lapses after `ttl_ms` milliseconds unless renewed."""
        return bool(await self.redis.set(key, owner, px=ttl_ms, nx=True))

    async def renew(self, key: str, owner: str, *, ttl_ms: int) -> bool:
        """Push the lease's end `ttl_ms` from now; False when `owner` no longer holds it."""
        return bool(await self.scripts.renew_lease(keys=[key], args=[owner, ttl_ms]))

    async def release(self, key: str, owner: str) -> None:
        """Drop the lease if `owner` still holds it."""
        await self.scripts.release_lease(keys=[key], args=[owner])
