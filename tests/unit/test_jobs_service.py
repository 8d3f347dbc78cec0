"""The jobs service against a real Redis: accept writes the policy's lane as decided and the flush-by the rule's
max_wait, the queue's max_wait or the deadline asks for; listing refuses bad filters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis.asyncio

from proxy.auth import Caller
from proxy.errors import InvalidRequest
from proxy.jobs import service
from proxy.jobs.timing import flush_slack
from proxy.policy.decision import Decision, ResolvedLane
from proxy.settings import Config
from proxy.store import keys
from proxy.store.store import Store

MODEL = "gpt-4o-mini"
NOW = 1_800_000_000.0
QUEUE_WAIT, TURNAROUND, MARGIN = 600.0, 3600.0, 600.0
ALICE = Caller("alice", "alpha")
CONFIG = Config.model_validate(
    {
        "model_list": [{"model_name": MODEL, "litellm_params": {"model": f"openai/{MODEL}"}}],
        "batching": {"max_wait": QUEUE_WAIT, "turnaround_estimate": TURNAROUND},
        "worker": {"safety_margin": MARGIN},
    }
)


@dataclass
class Accepted:
    lane: str
    max_wait: float | None
    flush_by: float | None


async def accept(
    client: redis.asyncio.Redis,
    *,
    lane: ResolvedLane = "batch",
    max_wait: float | None = None,
    deadline_in: float | None = None,
) -> Accepted:
    store = Store.create(client, clock=lambda: NOW)
    deadline = datetime.fromtimestamp(NOW + deadline_in, UTC) if deadline_in is not None else None
    decision = Decision(deferred=True, lane=lane, rule="r", reason="test", deadline=deadline, max_wait=max_wait)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    view = await service.accept(store, CONFIG, ALICE, body, decision)
    stored = await store.jobs.get(view.id)
    assert stored is not None
    stats = await store.batches.queue_stats(keys.group_tag(MODEL))
    return Accepted(stored.lane, stored.max_wait, stats.next_due)


async def test_the_queues_max_wait_sets_the_flush_by(redis_client: redis.asyncio.Redis) -> None:
    assert await accept(redis_client) == Accepted("batch", None, NOW + QUEUE_WAIT)


async def test_a_rules_max_wait_takes_its_place_shorter_or_longer(redis_client: redis.asyncio.Redis) -> None:
    assert await accept(redis_client, max_wait=5.0) == Accepted("batch", 5.0, NOW + 5.0)
    await redis_client.flushdb()
    assert await accept(redis_client, max_wait=7200.0) == Accepted("batch", 7200.0, NOW + 7200.0)


async def test_a_deadline_that_needs_the_batch_sooner_wins(redis_client: redis.asyncio.Redis) -> None:
    deadline_in = MARGIN + TURNAROUND + flush_slack(TURNAROUND) + 60
    assert await accept(redis_client, max_wait=7200.0, deadline_in=deadline_in) == Accepted("batch", 7200.0, NOW + 60)


async def test_the_lane_is_written_as_the_policy_decided_it(redis_client: redis.asyncio.Redis) -> None:
    # The policy decides whether a batch fits the deadline; accepting does not decide it again (a batch job whose
    # deadline is already too close is due at once, and the deadline guard takes it to the sync lane).
    overdue = NOW + 60 - MARGIN - TURNAROUND - flush_slack(TURNAROUND)
    assert await accept(redis_client, lane="batch", deadline_in=60) == Accepted("batch", None, overdue)
    await redis_client.flushdb()
    assert await accept(redis_client, lane="sync", deadline_in=60) == Accepted("sync", None, None)


@pytest.mark.parametrize(
    ("status", "limit", "param"), [("done", 20, "status"), (None, 0, "limit"), (None, service.MAX_LIST + 1, "limit")]
)
async def test_listing_refuses_bad_filters(
    redis_client: redis.asyncio.Redis, status: str | None, limit: int, param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await service.list_jobs(Store.create(redis_client), ALICE, status=status, limit=limit, after=None)
    assert refused.value.param == param
