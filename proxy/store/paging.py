"""Newest-first pages over a ZSET index whose members point at records that may since have expired."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio

from proxy.store.records import decoded

Record = TypeVar("Record")
CHUNK = 100


async def newest_first(
    client: redis.asyncio.Redis,
    index: str,
    *,
    after: str | None,
    limit: int,
    load: Callable[[list[str]], Awaitable[list[Record | None]]],
    keep: Callable[[Record], bool] | None = None,
) -> tuple[list[Record], bool]:
    """The records of `index` newest first, after the member `after`, that `keep` accepts; and whether more
    exist. Members whose record is gone are removed from the index on the way."""
    start = 0
    if after is not None:
        rank = await client.zrevrank(index, after)
        if not isinstance(rank, int):
            return [], False
        start = rank + 1
    found: list[Record] = []
    while True:
        members = [decoded(raw) for raw in await client.zrevrange(index, start, start + CHUNK - 1)]
        if not members:
            return found, False
        removed = 0
        for member, record in zip(members, await load(members), strict=True):
            if record is None:
                await client.zrem(index, member)
                removed += 1
                continue
            if keep is None or keep(record):
                if len(found) == limit:
                    return found, True
                found.append(record)
        start += len(members) - removed  # removed members no longer hold a rank
