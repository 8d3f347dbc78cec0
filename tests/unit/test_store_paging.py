"""Newest-first paging over an index with expired records: nothing is skipped, the dead members are pruned."""

from __future__ import annotations

import redis.asyncio

from proxy.store.paging import newest_first

INDEX = "test:index"


async def test_pages_skip_nothing_when_records_have_expired(redis_client: redis.asyncio.Redis) -> None:
    members = [f"m{n:03d}" for n in range(250)]
    await redis_client.zadd(INDEX, {member: n for n, member in enumerate(members)})
    alive = {member for n, member in enumerate(members) if n % 3}  # every third record has expired

    async def load(ids: list[str]) -> list[str | None]:
        return [member if member in alive else None for member in ids]

    seen: list[str] = []
    after: str | None = None
    while True:
        page, more = await newest_first(redis_client, INDEX, after=after, limit=40, load=load)
        seen += page
        if not more:
            break
        after = page[-1]
    assert seen == sorted(alive, reverse=True)
    assert await redis_client.zcard(INDEX) == len(alive), "expired members were pruned from the index"


async def test_keep_filters_and_an_unknown_cursor_gives_an_empty_page(redis_client: redis.asyncio.Redis) -> None:
    await redis_client.zadd(INDEX, {f"m{n}": n for n in range(10)})

    async def load(ids: list[str]) -> list[str | None]:
        return list(ids)

    page, more = await newest_first(
        redis_client, INDEX, after=None, limit=3, load=load, keep=lambda m: int(m[1:]) % 2 == 0
    )
    assert (page, more) == (["m8", "m6", "m4"], True)
    assert await newest_first(redis_client, INDEX, after="nope", limit=3, load=load) == ([], False)
