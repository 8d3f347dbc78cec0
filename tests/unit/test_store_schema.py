"""The store's parts that moved in with the schema, against a real Redis: scripts given their keys by the caller
(owner read first), the batch hash codec, queue snapshots, webhook deliveries queued by the final write."""

from __future__ import annotations

import pytest
import redis.asyncio

from proxy.store import keys
from proxy.store.outcomes import Answer
from proxy.store.records import BatchRecord, NewJob
from proxy.store.store import Store

MODEL = "gpt-4o-mini"


def new_job(content: str = "hi", **fields: object) -> NewJob:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    return NewJob(caller="alice", team="t", model=MODEL, body=body, **fields)  # type: ignore[arg-type]


async def in_a_batch(store: Store, count: int) -> tuple[str, str, list[str]]:
    ids = [(await store.jobs.accept(new_job(str(i), deadline=2e9), flush_by=float(i)))[0].id for i in range(count)]
    tag = keys.tag_of_job(ids[0])
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    assert await store.batches.claim_jobs(tag, batch_id, limit=count, byte_budget=10**6) == ids
    return tag, batch_id, ids


async def test_a_rescue_without_an_expected_owner_takes_the_job_from_whoever_holds_it(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = Store.create(redis_client)
    tag, batch_id, (job_id, other) = await in_a_batch(store, 2)
    assert not await store.outcomes.to_sync(job_id, expected_owner="", reason="thought it was queued")
    assert await store.batches.remaining(tag, batch_id) == 2
    assert await store.outcomes.to_sync(job_id, expected_owner=None, reason="too slow")
    assert await store.batches.job_ids(tag, batch_id) == [other]
    moved = await store.jobs.get(job_id)
    assert moved is not None
    assert (moved.owner, moved.rescued, moved.rescue_reason) == ("sync", True, "too slow")
    assert not await store.outcomes.to_sync(job_id, expected_owner=None)  # already in the sync lane
    assert not await store.outcomes.to_sync("dfr_0123456789_00", expected_owner=None)


async def test_deadline_index_reads_owner_and_status(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    tag, batch_id, (in_batch, answered) = await in_a_batch(store, 2)
    queued, _ = await store.jobs.accept(new_job("q", deadline=1e9), flush_by=1.0)
    await store.jobs.accept(new_job("late", deadline=3e9), flush_by=1.0)
    await store.outcomes.finish(Answer(answered, batch_id, "completed", "batch", response=b"{}"), retention=60)
    entries = await store.outcomes.near_deadline(tag, until=2.5e9, limit=10)
    assert [(e.job_id, e.deadline, e.owner, e.status) for e in entries] == [
        (queued.id, 1e9, "", "queued"),
        (in_batch, 2e9, batch_id, "queued"),
    ]  # the answered job left the index; the one due at 3e9 is beyond `until`
    await redis_client.delete(keys.job(queued.id))
    gone = (await store.outcomes.near_deadline(tag, until=1.5e9, limit=10))[0]
    assert (gone.job_id, gone.status, gone.is_final) == (queued.id, None, False)


async def test_claims_mark_and_read_bodies_with_every_job_key_given(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    tag, batch_id, ids = await in_a_batch(store, 3)
    await store.outcomes.to_sync(ids[1], expected_owner=batch_id)
    bodies = [pair async for chunk in store.batches.bodies(batch_id, ids) for pair in chunk]
    assert [job_id for job_id, _ in bodies] == [ids[0], ids[2]]
    assert b'"content":"0"' in bodies[0][1]
    await store.batches.mark_submitted(tag, batch_id, ids)
    statuses = [(await store.jobs.get(job_id)).status for job_id in ids]  # type: ignore[union-attr]
    assert statuses == ["submitted", "queued", "submitted"]
    record = await store.batches.get(tag, batch_id)
    assert record is not None
    assert record.jobs_marked


async def test_a_claim_skips_a_job_cancelled_since_it_was_queued(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    ids = [(await store.jobs.accept(new_job(str(i)), flush_by=float(i)))[0].id for i in range(3)]
    tag = keys.tag_of_job(ids[0])
    await store.jobs.cancel(ids[0], retention=60)
    await redis_client.delete(keys.job(ids[1]))  # expired while still indexed
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    assert await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=10**6) == [ids[2]]
    assert await redis_client.zcard(keys.pending(tag)) == 0


async def test_the_batch_codec_round_trips_and_refuses_unknown_fields(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    tag = keys.group_tag(MODEL)
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    assert await store.batches.advance(tag, batch_id, expected="building", state="uploaded", file_id="file-1", lines=3)
    await store.batches.update(tag, batch_id, provider_state="in_progress", total=3, done=1, poll_interval=2.5)
    record = await store.batches.get(tag, batch_id)
    assert record is not None
    assert (record.id, record.group, record.state, record.file_id, record.lines) == (
        batch_id, MODEL, "uploaded", "file-1", 3,
    )  # fmt: skip
    assert (record.provider_state, record.total, record.done, record.poll_interval) == ("in_progress", 3, 1, 2.5)
    with pytest.raises(ValueError, match="provider_status"):
        await store.batches.update(tag, batch_id, provider_status="typo")
    assert BatchRecord.encode_fields({"size": 10, "cancel_requested": True}) == ["bytes", 10, "cancel_requested", "1"]


async def test_a_snapshot_shows_waiting_jobs_and_open_batches_only(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    tag, open_id, _ = await in_a_batch(store, 1)
    waiting, _ = await store.jobs.accept(new_job("w", deadline=2e9), flush_by=50.0)
    ended_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    await store.batches.close(tag, ended_id, retention=60)
    read = await store.snapshots.read(tag)
    assert (read.waiting, read.next_flush_at, read.sync_waiting, read.sync_running) == (1, 50.0, 0, 0)
    assert read.waiting_bytes > 0
    stored = await store.jobs.get(waiting.id)
    assert stored is not None
    assert read.oldest_enqueued_at == stored.created_at
    assert [batch.id for batch in read.open_batches] == [open_id]


async def test_the_final_write_queues_the_webhook_in_its_own_keys(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    job = new_job(lane="sync", delivery="webhook", callback_url="https://example.test/hook")
    view, _ = await store.jobs.accept(job, flush_by=0.0)
    tag = keys.tag_of_job(view.id)
    await store.outcomes.claim_sync(tag, limit=1, claim_seconds=30)
    done = await store.outcomes.finish(Answer(view.id, "sync", "completed", "sync", response=b"{}"), retention=60)
    assert done is not None
    delivery = await store.deliveries.get(view.id)
    assert delivery is not None
    assert (delivery.url, delivery.caller, delivery.state, delivery.attempts) == (
        "https://example.test/hook", "alice", "pending", 0,
    )  # fmt: skip
    assert await store.deliveries.claim(tag, limit=5, lease=30) == [view.id]
    assert await store.deliveries.succeed(view.id, status=200, retention=60)
    assert await store.deliveries.pending(tag) == 0
