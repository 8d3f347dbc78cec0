"""The job store's Lua scripts against a real Redis: durability, idempotency, exactly-once answers, cancellation."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio

from proxy.store import keys
from proxy.store.outcomes import Answer
from proxy.store.records import NewJob
from proxy.store.store import Store

MODEL = "gpt-4o-mini"


def new_job(
    caller: str = "alice", *, content: str = "hi", lane: str = "batch", deadline: float | None = None
) -> NewJob:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    return NewJob(caller=caller, team="t", model=MODEL, body=body, lane=lane, deadline=deadline)


async def test_accept_writes_the_job_and_queues_it(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    view, created = await store.jobs.accept(new_job(deadline=2e9), flush_by=100.0)
    assert created
    stored = await store.jobs.get(view.id)
    assert stored is not None
    assert (stored.status, stored.caller, stored.model, stored.deadline, stored.lane) == (
        "queued", "alice", MODEL, 2e9, "batch"
    )  # fmt: skip
    tag = keys.tag_of_job(view.id)
    assert await redis_client.zscore(keys.pending(tag), view.id) == 100.0
    assert await redis_client.zscore(keys.deadlines(tag), view.id) == 2e9
    assert int(await redis_client.get(keys.pending_bytes(tag))) > 0
    assert await store.batches.groups() == {tag: MODEL}
    body = orjson.loads(await redis_client.hget(keys.job(view.id), "body"))
    assert body["messages"][0]["content"] == "hi"


async def test_sync_lane_jobs_skip_the_batch_queue(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    view, _ = await store.jobs.accept(new_job(lane="sync"), flush_by=0.0)
    tag = keys.tag_of_job(view.id)
    assert await redis_client.zcard(keys.pending(tag)) == 0
    assert await store.outcomes.claim_sync(tag, limit=10, claim_seconds=30) == [view.id]


async def test_idempotency_key_gives_one_job_per_caller(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    results = await asyncio.gather(
        *(store.jobs.accept(new_job(), flush_by=1.0, idempotency_key="k1") for _ in range(20))
    )
    ids = {view.id for view, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1
    other, created = await store.jobs.accept(new_job("bob"), flush_by=1.0, idempotency_key="k1")
    assert created
    assert other.id not in ids
    assert await redis_client.zcard(keys.pending(keys.group_tag(MODEL))) == 2


async def test_a_job_is_answered_exactly_once_and_the_answer_is_published(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = Store.create(redis_client)
    view, _ = await store.jobs.accept(new_job(), flush_by=1.0)
    tag = keys.tag_of_job(view.id)
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    assert await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=10**6) == [view.id]
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.job_events(view.id))
    await pubsub.get_message(timeout=1)

    stranger = Answer(view.id, "bgb_other", "completed", "batch", response=b'{"x":1}')
    assert await store.outcomes.finish(stranger, retention=60) is None
    answer = Answer(view.id, batch_id, "completed", "batch", response=b'{"id":"chatcmpl-1"}')
    done = await store.outcomes.finish(answer, retention=60)
    assert done is not None
    assert done.caller == "alice"
    assert await store.outcomes.finish(answer, retention=60) is None

    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None
    assert message["data"] == b"completed"
    await pubsub.aclose()
    stored = await store.jobs.get(view.id)
    assert stored is not None
    assert stored.status == "completed"
    assert stored.response == b'{"id":"chatcmpl-1"}'
    assert 0 < await redis_client.ttl(keys.job(view.id)) <= 60
    assert await store.batches.remaining(tag, batch_id) == 0


async def test_cancel_removes_a_queued_job_and_refuses_an_answered_one(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    queued, _ = await store.jobs.accept(new_job(deadline=2e9), flush_by=1.0)
    tag = keys.tag_of_job(queued.id)
    result = await store.jobs.cancel(queued.id, retention=60)
    assert result.outcome == "cancelled"
    assert result.batch_id is None
    assert await redis_client.zcard(keys.pending(tag)) == 0
    assert await redis_client.zcard(keys.deadlines(tag)) == 0
    assert int(await redis_client.get(keys.pending_bytes(tag))) == 0
    assert (await store.jobs.cancel(queued.id, retention=60)).outcome == "final"
    assert (await store.jobs.cancel("dfr_nothex_zz", retention=60)).outcome == "missing"


async def test_cancel_in_a_batch_reports_what_the_batch_still_owes(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    first, _ = await store.jobs.accept(new_job(content="a"), flush_by=1.0)
    second, _ = await store.jobs.accept(new_job(content="b"), flush_by=2.0)
    tag = keys.tag_of_job(first.id)
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=10**6)
    one = await store.jobs.cancel(first.id, retention=60)
    assert (one.batch_id, one.batch_remaining) == (batch_id, 1)
    two = await store.jobs.cancel(second.id, retention=60)
    assert (two.batch_id, two.batch_remaining) == (batch_id, 0)
    late = Answer(first.id, batch_id, "completed", "batch", response=b"{}")
    assert await store.outcomes.finish(late, retention=60) is None


async def test_rescue_takes_a_job_from_its_batch_and_ignores_the_late_line(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    view, _ = await store.jobs.accept(new_job(deadline=2e9), flush_by=1.0)
    tag = keys.tag_of_job(view.id)
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=10**6)
    assert await store.outcomes.to_sync(view.id, expected_owner=batch_id, reason="too slow")
    assert not await store.outcomes.to_sync(view.id, expected_owner=batch_id, reason="again")
    assert await store.batches.remaining(tag, batch_id) == 0
    assert (
        await store.outcomes.finish(Answer(view.id, batch_id, "completed", "batch", response=b"{}"), retention=60)
        is None
    )
    assert await store.outcomes.claim_sync(tag, limit=5, claim_seconds=30) == [view.id]
    done = await store.outcomes.finish(Answer(view.id, "sync", "completed", "sync", response=b"{}"), retention=60)
    assert done is not None
    assert done.rescued
    assert done.lane == "sync"
    assert await redis_client.zcard(keys.sync_inflight(tag)) == 0


async def test_requeue_and_claims_respect_count_and_bytes(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    views = [(await store.jobs.accept(new_job(content=str(i)), flush_by=float(i)))[0] for i in range(5)]
    tag = keys.tag_of_job(views[0].id)
    size = int(await redis_client.hget(keys.job(views[0].id), "size"))
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    taken = await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=size * 2)
    assert taken == [views[0].id, views[1].id]  # most urgent first, within the byte budget
    assert await store.outcomes.requeue(views[0].id, owner=batch_id, score=0.5)
    stats = await store.batches.queue_stats(tag)
    assert (stats.count, stats.next_due) == (4, 0.5)
    requeued = await store.jobs.get(views[0].id)
    assert requeued is not None
    assert requeued.attempts == 1
    assert requeued.owner == ""


async def test_listing_is_per_caller_filtered_and_paged(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    mine = [(await store.jobs.accept(new_job(content=str(i)), flush_by=1.0))[0].id for i in range(5)]
    await store.jobs.accept(new_job("bob"), flush_by=1.0)
    await store.jobs.cancel(mine[0], retention=60)
    page, more = await store.jobs.list_for_caller("alice", limit=3)
    assert [view.id for view in page] == mine[::-1][:3]
    assert more
    rest, more = await store.jobs.list_for_caller("alice", limit=3, after=page[-1].id)
    assert [view.id for view in rest] == mine[::-1][3:]
    assert not more
    cancelled, _ = await store.jobs.list_for_caller("alice", status="cancelled")
    assert [view.id for view in cancelled] == [mine[0]]


async def test_wait_final_wakes_on_the_answer(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    view, _ = await store.jobs.accept(new_job(lane="sync"), flush_by=0.0)
    tag = keys.tag_of_job(view.id)
    await store.outcomes.claim_sync(tag, limit=1, claim_seconds=30)

    async def answer_soon() -> None:
        await asyncio.sleep(0.2)
        await store.outcomes.finish(Answer(view.id, "sync", "completed", "sync", response=b"{}"), retention=60)

    task = asyncio.create_task(answer_soon())
    waited = await store.jobs.wait_final(view.id, 5)
    await task
    assert waited is not None
    assert waited.status == "completed"
    assert (await store.jobs.wait_final(view.id, 0.1)) is not None
    assert await store.jobs.wait_final("dfr_bad", 0.1) is None
