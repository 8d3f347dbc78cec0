"""The scheduling worker against real Redis and simulated upstreams: one queue failing or hanging does not hold up
another queue's batch or a third queue's rescue, and a lost lease stops its task before the provider call."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.runtime import Runtime
from proxy.store import keys
from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv, chat_body, deferred_env, env_on
from tests.support.stack import PROVIDER_KEY, simulator_server
from tests.support.waiting import wait_until

HEALTHY, TROUBLED, STALLED = "gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini"
TICK = 0.5
MAX_WAIT = 0.5
MARGIN = 2.0
# what a loaded 2-core machine may add to "within one tick": the observer polls, the event loop is shared
GRACE = 1.0


def sample(runtime: Runtime, name: str, **labels: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def failures(runtime: Runtime, stage: str) -> float:
    return sample(runtime, "batchgate_worker_task_failures_total", stage=stage)


def leases_lost(runtime: Runtime, stage: str) -> float:
    return sample(runtime, "batchgate_worker_leases_lost_total", stage=stage)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """An address that accepts TCP connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def deployment(name: str, api_base: str) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": api_base + "/v1",
                                                   "api_key": PROVIDER_KEY}}  # fmt: skip


@contextlib.asynccontextmanager
async def three_queues(tmp_path: Path, redis_url: str, troubled_base: str | None) -> AsyncIterator[DeferredEnv]:
    """HEALTHY on a simulator that answers; STALLED on one whose batches never finish (their jobs need the
    deadline guard); TROUBLED on the first simulator, or on `troubled_base` when given."""
    with (
        simulator_server(turnaround_s=1.0, validating_s=0.1, finalizing_s=0.1) as upstream,
        simulator_server(finish_fraction=0.0) as stalling,
    ):
        sections = {
            "model_list": [
                deployment(HEALTHY, upstream.url),
                deployment(TROUBLED, troubled_base or upstream.url),
                deployment(STALLED, stalling.url),
            ],
            "batching": {"max_wait": MAX_WAIT, "turnaround_estimate": "2s"},
            "worker": {"tick": TICK, "lease": 2, "safety_margin": MARGIN, "poll_interval_min": 0.2},
        }
        async with env_on(tmp_path, redis_url, upstream.url, **sections) as env:
            yield env


async def accept(env: DeferredEnv, model: str, text: str, *, deadline_in: float | None = None) -> str:
    return (await env.accept(chat_body(model, text), deadline_in=deadline_in)).id


async def moment(env: DeferredEnv, job_id: str, *, reached: tuple[str, ...] = (), rescued: bool = False) -> float:
    """The wall-clock time at which the job is first seen in one of the `reached` statuses (or rescued)."""

    async def seen() -> bool:
        view = await env.store.jobs.get(job_id)
        assert view is not None
        return view.rescued if rescued else view.status in reached

    await wait_until(seen, timeout=30, what=f"job {job_id} {'rescued' if rescued else reached}")
    return time.time()


async def assert_others_carry_on(env: DeferredEnv) -> None:
    """While the troubled queue fails: HEALTHY's batch goes out within a tick of its flush time and is answered;
    STALLED's job is rescued within a tick of the moment it is at risk and answered before its deadline."""
    healthy = await accept(env, HEALTHY, "a question for a healthy queue")
    # its batch goes out at once (well before deadline - margin - turnaround), so it is at risk from
    # deadline - margin on: the stalled batch is overdue and reports no progress
    stalled = await accept(env, STALLED, "a question whose batch will stall", deadline_in=8)
    healthy_view, stalled_view = await env.store.jobs.get(healthy), await env.store.jobs.get(stalled)
    assert healthy_view is not None
    assert stalled_view is not None
    assert stalled_view.deadline is not None

    await moment(env, healthy, reached=("submitted", "completed"))
    rescued = await moment(env, stalled, rescued=True)
    assert stalled_view.deadline - MARGIN - GRACE <= rescued <= stalled_view.deadline - MARGIN + TICK + GRACE

    await moment(env, healthy, reached=("completed",))
    answered_healthy = await env.store.jobs.get(healthy)
    assert answered_healthy is not None
    assert answered_healthy.batch
    batch = await env.store.batches.get(keys.group_tag(HEALTHY), answered_healthy.batch)
    assert batch is not None
    assert batch.created_at - (healthy_view.created_at + MAX_WAIT) <= TICK + GRACE  # when its flush began
    await moment(env, stalled, reached=("completed",))
    answered = await env.store.jobs.get(stalled)
    assert answered is not None
    assert answered.lane == "sync"
    assert answered.finished_at is not None
    assert answered.finished_at < stalled_view.deadline


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """The worker's loop as a task; handed back (cancelled) at the end, as at a hard shutdown."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_queue_whose_flush_raises_every_time_holds_up_no_other_queue(tmp_path: Path, redis_url: str) -> None:
    async with three_queues(tmp_path, redis_url, None) as env:
        poisoned = await accept(env, TROUBLED, "a body the batch encoder will refuse")
        await env.runtime.redis.hset(keys.job(poisoned), "body", b"{this is not JSON")
        worker = Worker(env.runtime, worker_id="w1")
        async with running(worker) as task:
            # the flush raises; the batch it left is then looked at (recovery) and raises again, with backoff
            await wait_until(lambda: failures(env.runtime, "flush") + failures(env.runtime, "batch") >= 2, timeout=30)
            before = failures(env.runtime, "flush") + failures(env.runtime, "batch")
            await assert_others_carry_on(env)
            assert not task.done()
            assert failures(env.runtime, "flush") + failures(env.runtime, "batch") > before  # still failing, retried
        view = await env.store.jobs.get(poisoned)
        assert view is not None
        assert view.status == "queued"


async def test_a_queue_whose_upload_never_answers_holds_up_no_other_queue(tmp_path: Path, redis_url: str) -> None:
    with black_hole() as nowhere:
        async with three_queues(tmp_path, redis_url, nowhere) as env:
            await accept(env, TROUBLED, "a question for an upstream that never answers")
            worker = Worker(env.runtime, worker_id="w1")
            async with running(worker):
                troubled = keys.group_tag(TROUBLED)
                await wait_until(lambda: ("flush", troubled) in worker.scheduler.running, timeout=30)
                await assert_others_carry_on(env)
                assert ("flush", troubled) in worker.scheduler.running  # still waiting on its upload


@pytest.mark.parametrize("lease", [2.0, 30.0], ids=["keeper-notices", "checked-before-create"])
async def test_a_lost_lease_stops_its_task_before_the_batch_is_created(
    tmp_path: Path, redis_url: str, lease: float
) -> None:
    """Worker A pauses just before creating the provider batch; its lease lapses and worker B carries the batch
    on. With a short lease A's keeper notices and cancels A's task during the pause; with a long one A finds out
    when it resumes, before the create call. Either way the provider has one batch and the job one answer."""
    sections = {"worker": {"lease": lease, "tick": 0.1, "poll_interval_min": 0.2}}
    async with deferred_env(tmp_path, redis_url, **sections) as env:
        view = await env.accept(chat_body(HEALTHY, "one question, one batch"))
        tag = keys.group_tag(HEALTHY)
        a = Worker(env.runtime, worker_id="A")
        a.ctx.pause_at, a.ctx.pause_marker = "before_create", tmp_path / "paused"
        async with running(a):
            await wait_until(a.ctx.pause_marker.exists, timeout=30)
            (batch_id,) = await env.store.batches.open_ids(tag)
            record = await env.store.batches.get(tag, batch_id)
            assert record is not None
            assert record.state == "uploaded"

            await env.runtime.redis.delete(keys.lease(tag, f"batch:{batch_id}"))  # A's pause outlived the TTL
            if lease < 10:
                await wait_until(lambda: leases_lost(env.runtime, "flush") == 1, timeout=10)
            await env.store.batches.schedule(tag, batch_id, at=0)
            await asyncio.wait_for(Worker(env.runtime, worker_id="B").run(burst=True), 30)
            a.ctx.resume.set()
            await wait_until(lambda: leases_lost(env.runtime, "flush") == 1, timeout=10)

            ours = [b for b in env.provider_batches() if b["metadata"].get("batchgate_batch") == batch_id]
            assert len(ours) == 1
            assert len(env.provider_batches()) == 1
        done = await env.store.jobs.get(view.id)
        assert done is not None
        assert done.status == "completed"
        assert failures(env.runtime, "flush") == 0
