"""Redis restarted (append-only file on): nothing accepted is lost, and a running worker carries on."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import redis

from proxy.store import keys
from proxy.worker.runner import Worker
from tests.support.deferred_env import chat_body, deferred_env
from tests.support.servers import RedisServer
from tests.support.waiting import wait_until


async def test_jobs_survive_a_redis_restart_while_the_worker_runs(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        async with deferred_env(tmp_path, server.url, simulator={"turnaround_s": 2.0}) as env:
            bodies = [chat_body("gpt-4o-mini", f"durable {i}") for i in range(100)]
            views = [await env.accept(body) for body in bodies]
            server.restart()  # everything acknowledged before this point must still be there
            with contextlib.suppress(redis.ConnectionError):
                await env.store.client.ping()  # the pooled connection died with the server; this drops it
            assert await env.store.client.zcard(keys.pending(keys.group_tag("gpt-4o-mini"))) == 100

            worker = asyncio.create_task(Worker(env.runtime).run(burst=True))
            await wait_until(env.provider_batches, timeout=20, what="a batch submitted")
            await asyncio.to_thread(server.restart)  # again, with a batch in flight
            await asyncio.wait_for(worker, 60)

            finished = await env.store.jobs.get_many([view.id for view in views])
            assert all(view is not None and view.status == "completed" for view in finished)
            assert sum(batch["request_counts"]["total"] for batch in env.provider_batches()) == 100
    finally:
        server.stop()
