"""The caller's side of the job store: accept (durably, idempotently), read, list, cancel, await an answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import orjson
import redis.asyncio

from proxy.errors import Conflict, Unprocessable
from proxy.redis_client import ScriptPipeline, open_pubsub
from proxy.store import keys
from proxy.store.paging import newest_first
from proxy.store.part import StorePart
from proxy.store.records import (
    FINAL_STATUSES,
    SYNC_OWNER,
    JobStatus,
    JobView,
    NewJob,
    decoded,
    encode_new_job,
    raw_hash,
)
from proxy.store.scripts import Scripts
from proxy.token_estimate import ASCII_CHARS_PER_TOKEN, estimate_tokens

LINE_OVERHEAD = 120  # bytes a JSONL line adds around the body: custom_id, method, url
MAX_OWNER_READS = 16  # an owner changes a few times in a job's life: a loop longer than this is a bug
OWNER_FIELDS = ("owner", "status")


def line_tokens(body: bytes) -> int:
    """Estimated prompt tokens of the batch line carrying `body` (the enqueued-token limit counts them)."""
    return estimate_tokens(body) + -(-LINE_OVERHEAD // ASCII_CHARS_PER_TOKEN)


def valid_job_id(job_id: str) -> bool:
    try:
        keys.tag_of_job(job_id)
    except ValueError:
        return False
    return True


async def read_owner(client: redis.asyncio.Redis, job_id: str) -> str | None:
    """Who holds the job now ("" queued, a batch id, "sync"); None when it does not exist."""
    view = JobView.decode_fields(OWNER_FIELDS, await client.hmget(keys.job(job_id), *OWNER_FIELDS))
    return None if view is None else view.owner


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: Literal["missing", "final", "cancelled"]
    status: str | None = None
    batch_id: str | None = None
    batch_remaining: int = 0


class JobStore(StorePart):
    def __init__(
        self, client: redis.asyncio.Redis, scripts: Scripts, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(client, scripts, clock=clock)
        self._registered_groups: set[str] = set()

    async def accept(
        self,
        job: NewJob,
        *,
        flush_by: float,
        idempotency_key: str | None = None,
        key_ttl: float = 86400.0,
        fingerprint: str = "",
        attach: bool = True,
        ready_at: float | None = None,
        job_id: str | None = None,
    ) -> tuple[JobView, bool]:
        """Write a job durably (or find the one an earlier call with the same Idempotency-Key wrote); `job_id`:
        the id to give a new job (keys.new_job_id of its group; default: a fresh one).

        `fingerprint` (a digest of the body) is kept with the key: the key reused with another body raises
        Unprocessable (422, the IETF Idempotency-Key draft). `attach=False` always writes a new job and points the
        key at it (a fresh call that a later retry may attach to). `ready_at` (unix seconds) holds a job of the sync
        lane until then (an off-peak venue); default now. Returns the job and whether this call created it.
        """
        job_id = job_id or keys.new_job_id(job.model)
        if idempotency_key is not None:
            claim = keys.idempotency(job.caller, idempotency_key)
            ttl = max(1, int(key_ttl))
            if not attach:
                created = await self.enqueue(job, job_id=job_id, flush_by=flush_by, ready_at=ready_at)
                await self.redis.set(claim, f"{job_id} {fingerprint}", ex=ttl)
                return self._view_of_new(job, job_id), created
            claimed = await self.redis.set(claim, f"{job_id} {fingerprint}", nx=True, ex=ttl)
            if not claimed:
                existing = await self.redis.get(claim)
                if existing is not None:
                    job_id, _, first_print = decoded(existing).partition(" ")
                    if fingerprint and first_print and first_print != fingerprint:
                        raise Unprocessable(
                            "This Idempotency-Key was already used with a different request body.",
                            code="idempotency_key_reused",
                        )
                    if keys.tag_of_job(job_id) != keys.group_tag(job.model):
                        found = await self.get(job_id)
                        if found is None:
                            raise Conflict("This Idempotency-Key was first used for another model.")
                        return found, False
        created = await self.enqueue(job, job_id=job_id, flush_by=flush_by, ready_at=ready_at)
        if created:
            return self._view_of_new(job, job_id), True
        found = await self.get(job_id)
        if found is None:  # answered long ago and expired; the key outlived it
            raise Conflict("This Idempotency-Key belongs to a job that no longer exists.")
        return found, False

    async def enqueue(self, job: NewJob, *, job_id: str, flush_by: float, ready_at: float | None = None) -> bool:
        """One atomic script in the group's slot; refuses an id that already exists."""
        tag = keys.tag_of_job(job_id)
        now = self.clock()
        body = orjson.dumps(job.body)
        batch_lane = job.lane == "batch"
        size = len(body) + LINE_OVERHEAD
        fields = encode_new_job(job, body=body, created_at=now, size=size, tokens=line_tokens(body))
        queue = keys.pending(tag) if batch_lane else keys.sync_queue(tag)
        pipe = ScriptPipeline(self.redis)  # three slots on a cluster: registry (groups, all jobs), caller, the group
        if job.model not in self._registered_groups:
            pipe.commands.hsetnx(keys.groups(), tag, job.model)
        pipe.commands.zadd(keys.caller_jobs(job.caller), {job_id: now})
        pipe.commands.zadd(keys.all_jobs(), {job_id: now})
        pipe.script(
            self.scripts.enqueue,
            keys=[keys.job(job_id), queue, keys.deadlines(tag), keys.pending_bytes(tag)],
            args=[
                repr(flush_by if batch_lane else max(now, ready_at or now)),
                "" if job.deadline is None else repr(job.deadline),
                size if batch_lane else 0,
                job_id,
                *fields,
            ],
        )
        results = await pipe.execute()
        self._registered_groups.add(job.model)
        return bool(results[-1])

    def _view_of_new(self, job: NewJob, job_id: str) -> JobView:
        return JobView(
            id=job_id, status="queued", model=job.model, caller=job.caller, team=job.team,
            created_at=self.clock(), deadline=job.deadline, lane=job.lane, delivery=job.delivery,
            callback_url=job.callback_url, owner="" if job.lane == "batch" else SYNC_OWNER, batch=None,
            attempts=0, batch_failures=0, rescued=False, rescue_reason=None, finished_at=None, response=None,
            error=None, max_wait=job.max_wait, eta=job.eta, eta_p90=job.eta_p90, venue=job.venue,
        )  # fmt: skip

    async def queued_until(self, job_id: str) -> float | None:
        """When a job waiting in its group's pending queue is due for a batch (unix seconds); None when it is not
        waiting there."""
        tag = keys.tag_of_job(job_id)
        score = await self.redis.zscore(keys.pending(tag), job_id)
        return None if score is None else float(score)

    async def get(self, job_id: str) -> JobView | None:
        """The job, or None for an unknown, expired or malformed id."""
        if not valid_job_id(job_id):
            return None
        raw = raw_hash(await self.redis.hgetall(keys.job(job_id)))
        return JobView.decode(raw) if raw else None

    async def get_with_body(self, job_id: str) -> tuple[JobView, bytes | None] | None:
        """The job and its request body as stored (None once answered), or None when the job does not exist."""
        raw = raw_hash(await self.redis.hgetall(keys.job(job_id)))
        return (JobView.decode(raw), raw.get(b"body")) if raw else None

    async def get_many(self, job_ids: list[str]) -> list[JobView | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [JobView.decode(raw_hash(raw)) if raw else None for raw in await pipe.execute()]

    async def list_for_caller(
        self, caller: str | None, *, status: JobStatus | None = None, limit: int = 20, after: str | None = None
    ) -> tuple[list[JobView], bool]:
        """The caller's jobs (None: every caller's), newest first, after the cursor `after` (a job id); and
        whether more exist."""
        return await newest_first(
            self.redis,
            keys.all_jobs() if caller is None else keys.caller_jobs(caller),
            after=after,
            limit=limit,
            load=self.get_many,
            keep=None if status is None else (lambda view: view.status == status),
        )

    async def cancel(self, job_id: str, *, retention: float) -> CancelResult:
        if not valid_job_id(job_id):
            return CancelResult("missing")
        tag = keys.tag_of_job(job_id)
        for _ in range(MAX_OWNER_READS):
            # the script must be given the owner's batch set (Redis Cluster): read the owner, then cancel if it holds
            owner = await read_owner(self.redis, job_id) or ""
            raw = await self.scripts.cancel(
                keys=[
                    keys.job(job_id), keys.pending(tag), keys.pending_bytes(tag), keys.sync_queue(tag),
                    keys.sync_inflight(tag), keys.deadlines(tag), keys.batch_jobs(tag, owner or SYNC_OWNER),
                ],
                args=[job_id, repr(self.clock()), max(1, int(retention)), keys.job_events(job_id), owner],
            )  # fmt: skip
            if raw[0] != b"moved":
                break
        else:
            raise RuntimeError(f"job {job_id} kept changing owner while being cancelled")
        outcome = raw[0].decode()
        if outcome == "missing":
            return CancelResult("missing")
        if outcome == "final":
            return CancelResult("final", status=raw[1].decode())
        owner = raw[1].decode()
        batch_id = owner if owner and owner != SYNC_OWNER else None
        return CancelResult("cancelled", status="cancelled", batch_id=batch_id, batch_remaining=int(raw[2]))

    async def wait_final(self, job_id: str, wait: float) -> JobView | None:
        """The job once it is final, or as it stands when `wait` seconds run out (None if it does not exist).

        Subscribes before reading, so an answer that lands in between is not missed.
        """
        if not valid_job_id(job_id):
            return None
        pubsub = await open_pubsub(self.redis)
        try:
            await pubsub.subscribe(keys.job_events(job_id))
            view = await self.get(job_id)
            end = time.monotonic() + wait
            while view is not None and view.status not in FINAL_STATUSES:
                left = end - time.monotonic()
                if left <= 0:
                    break
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 1.0))
                if message is not None:
                    view = await self.get(job_id)
            return view
        finally:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call,unused-ignore]
