"""What every part of the store holds: the Redis client, the registered scripts and the clock (epoch seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio

from proxy.store.scripts import Scripts


class StorePart:
    def __init__(
        self, client: redis.asyncio.Redis, scripts: Scripts, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.scripts = scripts
        self.clock = clock
