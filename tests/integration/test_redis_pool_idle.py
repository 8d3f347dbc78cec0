"""The single-server Redis pool shrinks back after a burst: connections unused for limits.redis_idle_timeout close."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio
import redis.exceptions

from proxy.redis_pool import IdleClosingPool
from proxy.runtime import build_runtime, close_runtime
from proxy.settings import Config, Settings
from tests.support.waiting import wait_until

NAME = "pool-idle-test"
BURST = 50


async def test_a_burst_of_connections_closes_once_idle(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    config = Config.model_validate(
        {
            "model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
            "limits": {"redis_idle_timeout": "1s"},
        }
    )
    runtime = build_runtime(Settings(redis_url=f"{redis_url}?client_name={NAME}"), config)
    client = runtime.redis
    pool = client.connection_pool
    assert isinstance(pool, IdleClosingPool)
    assert pool.idle_timeout == 1.0

    async def ours(command: str | None = None) -> int:
        """Connections the server sees from this client (running `command`, when given)."""
        clients = await redis_client.client_list()
        return sum(1 for entry in clients if entry["name"] == NAME and command in (None, entry["cmd"]))

    async def all_blocked() -> bool:
        return await ours("blpop") == BURST

    async def none_left() -> bool:
        return await ours() == 0

    try:
        # 50 commands that each hold a connection until released: 50 connections open at once
        waiting = [asyncio.create_task(client.blpop(["burst"], timeout=0)) for _ in range(BURST)]
        await wait_until(all_blocked, what="50 blocked BLPOPs, each on its own connection")
        await redis_client.rpush("burst", *range(BURST))
        assert len(await asyncio.gather(*waiting)) == BURST
        assert pool.idle_count == BURST
        assert await ours() == BURST

        await wait_until(lambda: pool.idle_count == 0, timeout=15, what="the pool's free connections closed")
        await wait_until(none_left, timeout=15, what="the server sees none of them")
        assert await client.ping()  # the pool opens a connection again when one is needed
        assert await ours() == 1
    finally:
        await close_runtime(runtime)
    assert await ours() == 0
    # a command after the close (a task that outlived its runtime) fails; it does not open a socket nobody closes
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await client.set("late", "write")
    assert await ours() == 0
