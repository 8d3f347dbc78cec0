"""The capacity pieces on their own: the refusal's limit, the token estimate, the store's budget records."""

from __future__ import annotations

import orjson
import redis.asyncio

from proxy.providers.base import BatchState
from proxy.providers.openai_batch import batch_info
from proxy.simulator.engine import TokenLimitExceeded
from proxy.store import keys
from proxy.store.jobs import line_tokens
from proxy.store.records import NewJob
from proxy.store.store import Store
from proxy.worker.capacity import estimated_tokens, refused_for_capacity, reported_limit

MODEL = "gpt-4o-mini"


def test_the_limit_is_read_from_the_providers_message() -> None:
    assert reported_limit(str(TokenLimitExceeded(MODEL, 90_000))) == 90_000
    assert reported_limit("Enqueued token limit reached. Limit: 2,000,000 enqueued tokens.") == 2_000_000
    assert reported_limit("Enqueued token limit reached for gpt-4o.") is None
    assert reported_limit(None) is None


def test_a_failed_batch_with_the_capacity_code_is_a_refusal_and_another_failure_is_not() -> None:
    refused = {"id": "batch_1", "status": "failed", "errors": {"data": [
        {"code": "token_limit_exceeded", "line": None, "message": str(TokenLimitExceeded(MODEL, 10))}]}}  # fmt: skip
    invalid = {"id": "batch_2", "status": "failed", "errors": {"data": [
        {"code": "invalid_json_line", "line": 3, "message": "bad"}]}}  # fmt: skip
    info = batch_info(refused)
    assert (info.state, info.error_codes) == (BatchState.FAILED, ("token_limit_exceeded",))
    assert refused_for_capacity(info)
    assert not refused_for_capacity(batch_info(invalid))
    assert not refused_for_capacity(batch_info({**refused, "status": "completed"}))


async def test_claimed_bytes_give_the_estimate_and_a_reported_limit_is_remembered(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = Store.create(redis_client)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 400}]}
    view, _ = await store.jobs.accept(NewJob(caller="a", team="t", model=MODEL, body=body, lane="batch"), flush_by=1)
    tag = keys.tag_of_job(view.id)
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    assert await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=10**6) == [view.id]
    [record] = await store.batches.open_records(tag)
    size = int(await redis_client.hget(keys.job(view.id), "size"))
    assert (record.id, record.size, estimated_tokens(record)) == (batch_id, size, size)  # not prepared: bytes
    tokens = int(await redis_client.hget(keys.job(view.id), "tokens"))
    assert tokens == line_tokens(orjson.dumps(body)) > 400 // 3  # at least the prompt's 400 characters / 3
    await store.batches.update(tag, batch_id, tokens=tokens)  # as the submitter records it once prepared
    [record] = await store.batches.open_records(tag)
    assert estimated_tokens(record) == tokens

    assert await store.batches.reported_token_limit(tag) is None
    await store.batches.report_token_limit(tag, 90_000, ttl=60)
    assert await store.batches.reported_token_limit(tag) == 90_000
    assert 0 < await redis_client.ttl(keys.token_limit(tag)) <= 60


async def test_a_capacity_requeue_spends_no_attempt(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    view, _ = await store.jobs.accept(NewJob(caller="a", team="t", model=MODEL, body=body, lane="batch"), flush_by=1)
    tag = keys.tag_of_job(view.id)
    batch_id = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    await store.batches.claim_jobs(tag, batch_id, limit=10, byte_budget=10**6)
    assert await store.outcomes.requeue(view.id, owner=batch_id, score=1.0, count_attempt=False)
    requeued = await store.jobs.get(view.id)
    assert requeued is not None
    assert (requeued.status, requeued.owner, requeued.attempts) == ("queued", "", 0)
    assert (await store.batches.queue_stats(tag)).count == 1


async def test_a_claim_takes_only_the_jobs_that_fit_the_token_budget(redis_client: redis.asyncio.Redis) -> None:
    store = Store.create(redis_client)
    ids = []
    for i, text in enumerate(("x" * 300, "这是一个问题" * 50, "y" * 300)):
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        job = NewJob(caller="a", team="t", model=MODEL, body=body, lane="batch")
        view, _ = await store.jobs.accept(job, flush_by=i + 1)
        ids.append(view.id)
    tag = keys.tag_of_job(ids[0])
    costs = [int(await redis_client.hget(keys.job(job_id), "tokens")) for job_id in ids]
    cjk_bytes = int(await redis_client.hget(keys.job(ids[1]), "size"))
    assert costs[1] >= 300 > cjk_bytes / 4  # a token per CJK character, where bytes / 4 said ~0.75
    first = await store.batches.open_batch(tag, MODEL, look_again_in=30)
    assert await store.batches.claim_jobs(tag, first, limit=10, byte_budget=10**6, token_budget=costs[0] - 1) == []
    taken = await store.batches.claim_jobs(tag, first, limit=10, byte_budget=10**6, token_budget=sum(costs) - 1)
    assert taken == ids[:2]  # in queue order, up to the budget
