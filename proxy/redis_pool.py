"""A redis-py asyncio connection pool that closes connections left idle, so a burst's connections do not stay open.

redis-py's `ConnectionPool` keeps every connection it opened until the pool is closed, and has no idle reaper.
Its free connections are a stack (a release pushes, a get pops the most recent), so the bottom of the stack holds
the connections idle longest: `close_idle` takes those idle past `idle_timeout` off the pool and disconnects
them. A reaper task runs while the pool holds free connections, started by a release, ended by `disconnect`.

A closed pool (`aclose`, which `Redis.aclose` calls) stays closed: redis-py's would open a new connection for a
command that comes after the close (a background task that outlived its runtime), and nothing would ever close
that socket; this one raises ConnectionError instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

MIN_CHECK_INTERVAL = 0.01  # seconds


class IdleClosingPool(redis.asyncio.ConnectionPool):
    """`ConnectionPool(**kwargs)` whose free connections close after `idle_timeout` seconds unused (checked every
    quarter of it). `idle_timeout` must be positive."""

    def __init__(self, *, idle_timeout: float, **kwargs: Any) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        super().__init__(**kwargs)
        self.idle_timeout = idle_timeout
        self._released_at: dict[AbstractConnection, float] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._closed:
            raise RedisConnectionError("the Redis connection pool is closed")
        connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        self._released_at[connection] = time.monotonic()
        await super().release(connection)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def close_idle(self) -> int:
        """Take the free connections idle for `idle_timeout` or longer off the pool and close them; their count."""
        cutoff = time.monotonic() - self.idle_timeout
        async with self._lock:
            free = self._available_connections
            stale = 0
            while stale < len(free) and self._released_at.get(free[stale], cutoff) <= cutoff:
                stale += 1
            closing, free[:stale] = free[:stale], []
        for connection in closing:
            self._released_at.pop(connection, None)
        await asyncio.gather(*(connection.disconnect() for connection in closing), return_exceptions=True)
        return len(closing)

    @property
    def idle_count(self) -> int:
        """Free connections the pool holds now."""
        return len(self._available_connections)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if inuse_connections and self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await super().disconnect(inuse_connections)

    async def aclose(self) -> None:
        self._closed = True
        await super().aclose()

    async def _reap(self) -> None:
        interval = max(self.idle_timeout / 4, MIN_CHECK_INTERVAL)
        while self._available_connections:
            await asyncio.sleep(interval)
            await self.close_idle()
