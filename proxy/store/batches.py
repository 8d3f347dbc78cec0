"""Queue groups and our batch records: what is waiting, which jobs a batch holds, where each batch stands.

A batch record moves building -> uploaded (file id) -> submitted (provider batch id) -> ended. Every batch
not yet ended sits in its group's open-batches ZSET, scored by when a worker should next look at it; a worker
that holds the batch's lease is the only one acting on it; a dead worker's batch is picked up once
its lease expires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.store import keys
from proxy.store.part import StorePart
from proxy.store.records import BatchRecord, BatchStage, decoded, raw_hash

CLAIM_CHUNK = 5000  # ids per claim script call (Lua's unpack limit, and a short script)
READ_CHUNK = 500
MARK_CHUNK = 1000


def within(job_ids: list[str], costs: dict[str, int], budget: int) -> list[str]:
    """The longest head of `job_ids` whose costs sum to at most `budget`."""
    head: list[str] = []
    for job_id in job_ids:
        budget -= costs[job_id]
        if budget < 0:
            break
        head.append(job_id)
    return head


@dataclass(frozen=True, slots=True)
class QueueStats:
    count: int
    bytes: int
    next_due: float | None  # the earliest flush-by score among the waiting jobs


class BatchStore(StorePart):
    async def groups(self) -> dict[str, str]:
        """tag -> group name of every group that has ever had a job."""
        raw = await self.redis.hgetall(keys.groups())
        return {decoded(tag): decoded(name) for tag, name in raw.items()}

    async def queue_stats(self, tag: str) -> QueueStats:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.pending(tag))
        pipe.get(keys.pending_bytes(tag))
        pipe.zrange(keys.pending(tag), 0, 0, withscores=True)
        count, size, first = await pipe.execute()
        return QueueStats(int(count), int(size or 0), float(first[0][1]) if first else None)

    async def is_idle(self, tag: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        for key in (keys.pending(tag), keys.sync_queue(tag), keys.sync_inflight(tag), keys.open_batches(tag)):
            pipe.zcard(key)
        return not any(await pipe.execute())

    async def open_batch(self, tag: str, group: str, *, look_again_in: float) -> str:
        """A new, empty batch record in state `building`; if its builder dies, a worker looks at it later."""
        batch_id = keys.new_batch_id(tag)
        now = self.clock()
        await self.scripts.create_batch(
            keys=[keys.batch(tag, batch_id), keys.open_batches(tag)],
            args=[batch_id, repr(now + look_again_in), *BatchRecord.new_fields(tag, group, created_at=now)],
        )
        return batch_id

    async def claim_jobs(
        self,
        tag: str,
        batch_id: str,
        *,
        limit: int,
        byte_budget: int,
        by_deadline: bool = False,
        token_budget: int | None = None,
    ) -> list[str]:
        """Move up to `limit` jobs (most urgent first, within `byte_budget`) from the queue into the batch;
        `by_deadline`: earliest deadline first (jobs without one last, by flush-by score), how held work is
        taken when capacity lets only part of the queue in; `token_budget`: the estimated prompt tokens the
        jobs may hold together (none is taken when the first does not fit)."""
        taken: list[str] = []
        spent = 0
        tokens_left = token_budget
        scanned = 0
        while len(taken) < limit:
            chunk = min(CLAIM_CHUNK, limit - len(taken))
            # read the candidates, then claim them in one script that is given every job key (Redis Cluster)
            if by_deadline:
                candidates, scanned = await self.queued_by_deadline(tag, chunk, start=scanned)
            else:
                candidates = [decoded(raw) for raw in await self.redis.zrange(keys.pending(tag), 0, chunk - 1)]
            if tokens_left is not None:
                costs = await self._tokens_of(candidates)
                candidates = within(candidates, costs, tokens_left)
            if not candidates:
                break
            ids = await self.scripts.claim_for_batch(
                keys=[keys.pending(tag), keys.pending_bytes(tag), keys.batch(tag, batch_id),
                      keys.batch_jobs(tag, batch_id), *(keys.job(job_id) for job_id in candidates)],
                args=[batch_id, byte_budget - spent, *candidates],
            )  # fmt: skip
            if not ids:
                break
            taken.extend(raw.decode() for raw in ids)
            if tokens_left is not None:
                tokens_left -= sum(costs[raw.decode()] for raw in ids)
            spent = int(await self.redis.hget(keys.batch(tag, batch_id), "bytes") or 0)
            if len(candidates) < chunk or len(ids) < len(candidates) or spent >= byte_budget:
                break
        return taken

    async def _tokens_of(self, job_ids: list[str]) -> dict[str, int]:
        """Each job's estimated line tokens (a job stored without the estimate counts its bytes: never less)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), "tokens", "size")
        costs = {}
        for job_id, (tokens, size) in zip(job_ids, await pipe.execute(), strict=True):
            costs[job_id] = int(tokens or 0) or int(size or 0)
        return costs

    async def queued_by_deadline(self, tag: str, limit: int, *, start: int = 0) -> tuple[list[str], int]:
        """Up to `limit` queued jobs, earliest deadline first, then those without a deadline by flush-by score;
        and where in the deadline index to go on from (`start` of the next call: a claim's later rounds skip the
        jobs it already took, which stay in the index).

        Walks the deadline index (every unfinished job, queued or not) page by page, keeping the queued ones; the
        jobs it skips are those in open batches or the sync lane, few while capacity holds the queue back."""
        found: list[str] = []
        position = start
        while len(found) < limit:
            page = [
                decoded(raw)
                for raw in await self.redis.zrange(keys.deadlines(tag), position, position + READ_CHUNK - 1)
            ]
            if not page:
                break
            scores = await self.redis.zmscore(keys.pending(tag), page)
            for offset, (job_id, score) in enumerate(zip(page, scores, strict=True)):
                if score is not None:
                    found.append(job_id)
                    if len(found) == limit:
                        return found, position + offset + 1
            position += len(page)
        chosen = set(found)
        rest = await self.redis.zrange(keys.pending(tag), 0, limit + len(chosen) - 1)
        found.extend(job_id for job_id in map(decoded, rest) if job_id not in chosen)
        return found[:limit], position

    async def get(self, tag: str, batch_id: str) -> BatchRecord | None:
        raw = raw_hash(await self.redis.hgetall(keys.batch(tag, batch_id)))
        return BatchRecord.decode(raw) if raw else None

    async def advance(self, tag: str, batch_id: str, *, expected: BatchStage, **fields: str | float | int) -> bool:
        """Set fields (named as on `BatchRecord`) only if the batch is still in state `expected` (a stale worker
        cannot move it twice). ValueError for a name that is not a BatchRecord field."""
        flat = BatchRecord.encode_fields(fields)
        done = await self.scripts.advance_batch(keys=[keys.batch(tag, batch_id)], args=[expected, *flat])
        return bool(done)

    async def update(self, tag: str, batch_id: str, **fields: str | float | int) -> None:
        """Set fields (named as on `BatchRecord`); ValueError for a name that is not a BatchRecord field."""
        flat = BatchRecord.encode_fields(fields)
        await self.redis.hset(keys.batch(tag, batch_id), items=flat)

    async def job_ids(self, tag: str, batch_id: str) -> list[str]:
        """The jobs the batch still owes an answer for."""
        return [decoded(raw) for raw in await self.redis.smembers(keys.batch_jobs(tag, batch_id))]

    async def remaining(self, tag: str, batch_id: str) -> int:
        return int(await self.redis.scard(keys.batch_jobs(tag, batch_id)))

    async def bodies(self, batch_id: str, job_ids: list[str]) -> AsyncIterator[list[tuple[str, bytes]]]:
        """The request bodies of the jobs the batch still owns, in chunks (pipelined reads)."""
        for start in range(0, len(job_ids), READ_CHUNK):
            chunk = job_ids[start : start + READ_CHUNK]
            flat = await self.scripts.bodies(keys=[keys.job(job_id) for job_id in chunk], args=[batch_id, *chunk])
            yield [(decoded(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def mark_submitted(
        self, tag: str, batch_id: str, job_ids: list[str], *, eta: tuple[float, float] | None = None
    ) -> None:
        """The batch's jobs show `submitted` (and, given, the batch's ETA: median and 90th percentile, unix s)."""
        args = [batch_id, *((repr(eta[0]), repr(eta[1])) if eta is not None else ())]
        for start in range(0, len(job_ids), MARK_CHUNK):
            chunk = job_ids[start : start + MARK_CHUNK]
            await self.scripts.mark_submitted(keys=[keys.job(job_id) for job_id in chunk], args=args)
        await self.update(tag, batch_id, jobs_marked="1")

    async def due(self, tag: str, *, limit: int = 20) -> list[str]:
        """Open batches whose next look is due."""
        now = repr(self.clock())
        ids = await self.redis.zrangebyscore(keys.open_batches(tag), "-inf", now, start=0, num=limit)
        return [decoded(raw) for raw in ids]

    async def open_ids(self, tag: str) -> list[str]:
        return [decoded(raw) for raw in await self.redis.zrange(keys.open_batches(tag), 0, -1)]

    async def open_records(self, tag: str) -> list[BatchRecord]:
        """Every batch of the group not yet ingested (one pipelined read)."""
        ids = await self.open_ids(tag)
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(keys.batch(tag, batch_id))
        raws = [raw_hash(raw) for raw in await pipe.execute()] if ids else []
        return [BatchRecord.decode(raw) for raw in raws if raw]

    async def reported_token_limit(self, tag: str) -> int | None:
        """The enqueued-token limit the provider last reported for the group (None: none reported lately)."""
        raw = await self.redis.get(keys.token_limit(tag))
        return int(raw) if raw else None

    async def report_token_limit(self, tag: str, limit: int, *, ttl: float) -> None:
        """Remember the provider's enqueued-token limit for `ttl` seconds (a tier can be raised later)."""
        await self.redis.set(keys.token_limit(tag), max(1, limit), ex=max(1, int(ttl)))

    async def schedule(self, tag: str, batch_id: str, *, at: float) -> None:
        await self.redis.zadd(keys.open_batches(tag), {batch_id: at}, xx=True)

    async def close(self, tag: str, batch_id: str, *, retention: float) -> None:
        await self.scripts.close_batch(
            keys=[keys.batch(tag, batch_id), keys.batch_jobs(tag, batch_id), keys.open_batches(tag)],
            args=[batch_id, max(1, int(retention)), repr(self.clock())],
        )
        await self.redis.delete(keys.batch_lines(tag, batch_id))

    async def record_lines(self, tag: str, batch_id: str, job_ids: list[str]) -> None:
        """The batch's job ids in the order of its input lines (replacing any order recorded before)."""
        key = keys.batch_lines(tag, batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(key)
        for start in range(0, len(job_ids), MARK_CHUNK):
            pipe.rpush(key, *job_ids[start : start + MARK_CHUNK])
        await pipe.execute()

    async def jobs_on_lines(self, tag: str, batch_id: str, lines: list[int]) -> dict[int, str]:
        """Line number (1-based) -> job id, for the lines the recorded order knows (none if none was recorded)."""
        key = keys.batch_lines(tag, batch_id)
        pipe = self.redis.pipeline(transaction=False)
        for line in lines:
            pipe.lindex(key, line - 1)
        found = await pipe.execute()
        return {line: decoded(raw) for line, raw in zip(lines, found, strict=True) if raw is not None and line >= 1}

    async def split_off(self, tag: str, group: str, from_batch: str, job_ids: list[str]) -> str | None:
        """Move the listed jobs `from_batch` still owns into a new batch in `building`, due now (the next look
        prepares and submits it); None when none moved (the empty new batch is closed)."""
        batch_id = await self.open_batch(tag, group, look_again_in=0.0)
        moved = 0
        for start in range(0, len(job_ids), CLAIM_CHUNK):
            chunk = job_ids[start : start + CLAIM_CHUNK]
            keys_ = [keys.batch_jobs(tag, from_batch), keys.batch(tag, batch_id), keys.batch_jobs(tag, batch_id)]
            keys_ += [keys.job(job_id) for job_id in chunk]
            moved += int(await self.scripts.move_jobs(keys=keys_, args=[from_batch, batch_id, *chunk]))
        if not moved:
            await self.close(tag, batch_id, retention=60)
            return None
        return batch_id
