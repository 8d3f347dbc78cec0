"""The worker's side of a job: answer it exactly once, queue it again, or hand it to the synchronous lane."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis.asyncio

from proxy.redis_client import ScriptPipeline
from proxy.store import keys
from proxy.store.records import SYNC_OWNER
from proxy.store.scripts import Scripts


@dataclass(frozen=True, slots=True)
class Answer:
    """A final state for a job, valid only while `owner` still holds the job."""

    job_id: str
    owner: str
    status: Literal["completed", "failed"]
    lane: str
    response: bytes | None = None
    error: dict[str, Any] | None = None
    upstream_request_id: str | None = None  # the provider's id for the call that answered (batch line or sync)


@dataclass(frozen=True, slots=True)
class Finished:
    """A job this call answered (what observers need for metrics)."""

    job_id: str
    status: str
    lane: str
    caller: str
    team: str
    model: str
    created_at: float
    deadline: float | None
    rescued: bool
    attempts: int
    finished_at: float
    response: bytes | None

    @property
    def missed_deadline(self) -> bool:
        return self.deadline is not None and self.finished_at > self.deadline


def _owner_set(tag: str, owner: str) -> str:
    # a key of the same slot in every case: the sync "owner set" simply never exists
    return keys.batch_jobs(tag, owner or SYNC_OWNER)


class Outcomes:
    def __init__(
        self, client: redis.asyncio.Redis, scripts: Scripts, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.scripts = scripts
        self.clock = clock

    async def finish(self, answer: Answer, *, retention: float) -> Finished | None:
        return (await self.finish_many([answer], retention=retention))[0]

    async def finish_many(self, answers: Sequence[Answer], *, retention: float) -> list[Finished | None]:
        """Pipelined final writes; each applies only if its job is unanswered and still owned as stated."""
        if not answers:
            return []
        now = self.clock()
        pipe = ScriptPipeline(self.redis)
        for answer in answers:
            tag = keys.tag_of_job(answer.job_id)
            pipe.script(
                self.scripts.finish,
                keys=[
                    keys.job(answer.job_id), keys.deadlines(tag), _owner_set(tag, answer.owner),
                    keys.sync_inflight(tag),
                ],
                args=[
                    answer.owner, answer.status, answer.response or b"",
                    orjson.dumps(answer.error) if answer.error is not None else b"",
                    answer.lane, repr(now), max(1, int(retention)), keys.job_events(answer.job_id),
                    answer.job_id, answer.upstream_request_id or "",
                ],
            )  # fmt: skip
        results = await pipe.execute()
        return [_finished(answer, raw, now) for answer, raw in zip(answers, results, strict=True)]

    async def requeue(self, job_id: str, *, owner: str, score: float, batch_failure: bool = False) -> bool:
        tag = keys.tag_of_job(job_id)
        done = await self.scripts.requeue(
            keys=[keys.job(job_id), keys.pending(tag), keys.pending_bytes(tag), _owner_set(tag, owner)],
            args=[owner, repr(score), job_id, "1" if batch_failure else "0"],
        )
        return bool(done)

    async def to_sync(
        self,
        job_id: str,
        *,
        expected_owner: str | None,
        lane: str = "sync",
        rescued: bool = True,
        reason: str = "",
        ready_at: float | None = None,
    ) -> bool:
        """Move an unanswered job (queued or in a batch) to the sync lane; False if it could not move."""
        tag = keys.tag_of_job(job_id)
        done = await self.scripts.to_sync(
            keys=[keys.job(job_id), keys.sync_queue(tag), keys.pending(tag), keys.pending_bytes(tag)],
            args=[
                "*" if expected_owner is None else expected_owner,
                repr(self.clock() if ready_at is None else ready_at),
                job_id, lane, "1" if rescued else "0", reason, keys.batch_prefix(tag),
            ],
        )  # fmt: skip
        return bool(done)

    async def claim_sync(self, tag: str, *, limit: int, claim_seconds: float) -> list[str]:
        now = self.clock()
        ids = await self.scripts.claim_sync(
            keys=[keys.sync_queue(tag), keys.sync_inflight(tag)],
            args=[repr(now), repr(now + claim_seconds), limit],
        )
        return [raw.decode() for raw in ids]

    async def reclaim_sync(self, tag: str) -> int:
        """Claims whose worker died (their time ran out) go back to the sync queue."""
        count = await self.scripts.reclaim_sync(
            keys=[keys.sync_queue(tag), keys.sync_inflight(tag)], args=[repr(self.clock())]
        )
        return int(count)

    async def release_sync(self, job_id: str) -> bool:
        """Hand a claimed call back to the sync queue at once (a stopping worker), if still claimed."""
        tag = keys.tag_of_job(job_id)
        done = await self.scripts.release_sync(
            keys=[keys.sync_queue(tag), keys.sync_inflight(tag)], args=[repr(self.clock()), job_id]
        )
        return bool(done)

    async def extend_sync_claim(self, job_id: str, *, claim_seconds: float) -> None:
        tag = keys.tag_of_job(job_id)
        await self.redis.zadd(keys.sync_inflight(tag), {job_id: self.clock() + claim_seconds}, xx=True)

    async def retry_sync(self, job_id: str, *, ready_at: float, lane: str = "sync") -> bool:
        tag = keys.tag_of_job(job_id)
        done = await self.scripts.retry_sync(
            keys=[keys.job(job_id), keys.sync_queue(tag), keys.sync_inflight(tag)],
            args=[repr(ready_at), job_id, lane],
        )
        return bool(done)


def _finished(answer: Answer, raw: list[bytes], now: float) -> Finished | None:
    if not raw:
        return None
    caller, team, model, created_at, deadline, rescued, attempts = (value.decode() for value in raw)
    return Finished(
        job_id=answer.job_id, status=answer.status, lane=answer.lane, caller=caller, team=team, model=model,
        created_at=float(created_at or 0), deadline=float(deadline) if deadline else None,
        rescued=rescued == "1", attempts=int(attempts or 0), finished_at=now, response=answer.response,
    )  # fmt: skip
