"""The worker's side of a job: answer it exactly once, queue it again, or hand it to the synchronous lane."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.redis_client import ScriptPipeline
from proxy.store import keys
from proxy.store.jobs import MAX_OWNER_READS, read_owner
from proxy.store.part import StorePart
from proxy.store.records import FINAL_STATUSES, SYNC_OWNER, JobStatus, JobView, decoded
from proxy.store.scripts import FINISHED_FIELDS

WATCHED_FIELDS = ("owner", "status")


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
    rescue_reason: str | None = None  # why it paid list price, when the job's stored reason does not say (flex)
    price: str | None = None  # a venue's price rule: `batch`/`flex` (that tier's prices) or a share of list


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
    rescue_reason: str | None = None  # why a rescued job (or a flex job at list price) left its lane
    price: str | None = None  # the venue's price rule it was billed at (Answer.price); None: its lane's

    @property
    def missed_deadline(self) -> bool:
        return self.deadline is not None and self.finished_at > self.deadline


@dataclass(frozen=True, slots=True)
class NearDeadline:
    """An entry of a group's deadline index: the job, its deadline (epoch seconds) and who holds it now."""

    job_id: str
    deadline: float
    owner: str  # "" queued, a batch id, or "sync"
    status: JobStatus | None  # None when the job no longer exists

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def _owner_set(tag: str, owner: str) -> str:
    # a key of the same slot in every case: the sync "owner set" simply never exists
    return keys.batch_jobs(tag, owner or SYNC_OWNER)


class Outcomes(StorePart):
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
                    keys.sync_inflight(tag), keys.webhook(answer.job_id), keys.webhooks_due(tag),
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

    async def requeue(
        self, job_id: str, *, owner: str, score: float, batch_failure: bool = False, count_attempt: bool = True
    ) -> bool:
        """Back to the pending queue (scored `score`) if `owner` still holds the job; `count_attempt` False for a
        job that was not at fault (its batch was refused for an account problem)."""
        tag = keys.tag_of_job(job_id)
        done = await self.scripts.requeue(
            keys=[keys.job(job_id), keys.pending(tag), keys.pending_bytes(tag), _owner_set(tag, owner)],
            args=[owner, repr(score), job_id, "1" if batch_failure else "0", "1" if count_attempt else "0"],
        )
        return bool(done)

    async def hold_queued(self, job_id: str, *, owner: str) -> bool:
        """Take a queued job out of the pending queue under `owner`, so it can be answered without a batch; False
        when it is not queued (answered, or taken meanwhile)."""
        tag = keys.tag_of_job(job_id)
        done = await self.scripts.hold_queued(
            keys=[keys.job(job_id), keys.pending(tag), keys.pending_bytes(tag)], args=[job_id, owner]
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
        """Move an unanswered job (queued or in a batch) to the sync lane; False if it could not move (or, with an
        `expected_owner`, if another owner has it). Without one, whoever holds the job gives it up."""
        tag = keys.tag_of_job(job_id)
        for _ in range(MAX_OWNER_READS):
            owner = expected_owner
            if owner is None:  # the script must be given the owner's batch set (Redis Cluster): read it first
                owner = await read_owner(self.redis, job_id)
                if owner is None:
                    return False
            done = await self.scripts.to_sync(
                keys=[keys.job(job_id), keys.sync_queue(tag), keys.pending(tag), keys.pending_bytes(tag),
                      _owner_set(tag, owner)],
                args=[owner, repr(self.clock() if ready_at is None else ready_at), job_id, lane,
                      "1" if rescued else "0", reason],
            )  # fmt: skip
            if done != -1 or expected_owner is not None:
                return bool(done == 1)
        raise RuntimeError(f"job {job_id} kept changing owner while moving to the sync lane")

    async def near_deadline(self, tag: str, *, until: float, limit: int) -> list[NearDeadline]:
        """The unfinished jobs of a group whose deadline is at or before `until`, earliest first (at most `limit`)."""
        found = await self.redis.zrangebyscore(
            keys.deadlines(tag), "-inf", repr(until), start=0, num=limit, withscores=True
        )
        rows = [(decoded(entry[0]), float(entry[1])) for entry in found if isinstance(entry, tuple | list)]
        if not rows:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in rows:
            pipe.hmget(keys.job(job_id), *WATCHED_FIELDS)
        states = await pipe.execute()
        entries = []
        for (job_id, deadline), values in zip(rows, states, strict=True):
            job = JobView.decode_fields(WATCHED_FIELDS, values)
            status = None if job is None or values[1] is None else job.status
            entries.append(NearDeadline(job_id, deadline, "" if job is None else job.owner, status))
        return entries

    async def drop_sync_claim(self, job_id: str) -> None:
        """Forget a sync-lane claim without answering (the job was answered, cancelled or moved meanwhile)."""
        await self.redis.zrem(keys.sync_inflight(keys.tag_of_job(job_id)), job_id)

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
    job = JobView.decode_fields(FINISHED_FIELDS, raw) if raw else None
    if job is None:
        return None
    return Finished(
        job_id=answer.job_id, status=answer.status, lane=answer.lane, caller=job.caller, team=job.team,
        model=job.model, created_at=job.created_at, deadline=job.deadline, rescued=job.rescued,
        attempts=job.attempts, finished_at=now, response=answer.response,
        rescue_reason=answer.rescue_reason or job.rescue_reason, price=answer.price,
    )  # fmt: skip
