"""Webhook deliveries: a hash per job and a due-time ZSET per queue group, plus dead-letter indexes.

The final-write script (scripts.FINISH) creates a job's delivery in the same slot and the same script as the
answer, so a job never ends without its delivery queued. A worker claims due deliveries by pushing their due
time forward by a lease (a visibility timeout): if it dies mid-delivery the delivery is due again when the lease
runs out, and another worker (or the restarted one) sends it again: at-least-once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.store import keys
from proxy.store.paging import newest_first
from proxy.store.part import StorePart
from proxy.store.records import decoded, raw_hash

ERROR_CHARS = 500  # the longest last error kept on a delivery


@dataclass(frozen=True, slots=True)
class Delivery:
    """A job's webhook delivery. Times are epoch seconds."""

    job_id: str
    url: str
    caller: str
    state: str  # pending | delivered | dead
    attempts: int
    first_at: float
    next_at: float | None
    dead_at: float | None
    delivered_at: float | None
    last_status: int | None
    last_error: str | None
    replays: int

    @property
    def webhook_id(self) -> str:
        """Stable across retries and replays: receivers deduplicate on it."""
        return keys.WEBHOOK_ID_PREFIX + self.job_id

    @classmethod
    def decode(cls, raw: Mapping[bytes, bytes]) -> Delivery:
        def text(name: str) -> str:
            return decoded(raw.get(name.encode(), b""))

        def number(name: str) -> float | None:
            value = text(name)
            return float(value) if value else None

        status = text("last_status")
        return cls(
            job_id=text("job_id"),
            url=text("url"),
            caller=text("caller"),
            state=text("state") or "pending",
            attempts=int(text("attempts") or 0),
            first_at=number("first_at") or 0.0,
            next_at=number("next_at"),
            dead_at=number("dead_at"),
            delivered_at=number("delivered_at"),
            last_status=int(status) if status.isdigit() else None,
            last_error=text("last_error") or None,
            replays=int(text("replays") or 0),
        )


class Deliveries(StorePart):
    async def claim(self, tag: str, *, limit: int, lease: float) -> list[str]:
        """Up to `limit` due deliveries of a group (job ids), hidden from other workers for `lease` seconds."""
        now = self.clock()
        ids = await self.scripts.claim_deliveries(
            keys=[keys.webhooks_due(tag)], args=[repr(now), repr(now + lease), limit]
        )
        return [decoded(raw) for raw in ids]

    async def pending(self, tag: str) -> int:
        return int(await self.redis.zcard(keys.webhooks_due(tag)))

    async def get(self, job_id: str) -> Delivery | None:
        raw = raw_hash(await self.redis.hgetall(keys.webhook(job_id)))
        return Delivery.decode(raw) if raw else None

    def _keys(self, job_id: str) -> list[str]:
        return [keys.webhook(job_id), keys.webhooks_due(keys.tag_of_job(job_id))]

    async def succeed(self, job_id: str, *, status: int, retention: float) -> bool:
        args: list[str | int] = [job_id, repr(self.clock()), status, max(1, int(retention))]
        return bool(await self.scripts.delivery_succeeded(keys=self._keys(job_id), args=args))

    async def retry(self, job_id: str, *, at: float, status: int | None, error: str) -> bool:
        args: list[str | int] = [job_id, repr(at), "" if status is None else status, error[:ERROR_CHARS]]
        return bool(await self.scripts.delivery_retry(keys=self._keys(job_id), args=args))

    async def give_up(self, delivery: Delivery, *, status: int | None, error: str, retention: float) -> bool:
        """Dead-letter a delivery. Indexed first (idempotent), then marked: a crash in between leaves it pending."""
        now = self.clock()
        await self.redis.zadd(keys.dead_letters(delivery.caller), {delivery.job_id: now})
        await self.redis.zadd(keys.all_dead_letters(), {delivery.job_id: now})
        args: list[str | int] = [
            delivery.job_id,
            repr(now),
            "" if status is None else status,
            error[:ERROR_CHARS],
            max(1, int(retention)),
        ]
        return bool(await self.scripts.delivery_dead(keys=self._keys(delivery.job_id), args=args))

    async def replay(self, delivery: Delivery) -> bool:
        done = bool(
            await self.scripts.delivery_replay(
                keys=self._keys(delivery.job_id), args=[delivery.job_id, repr(self.clock())]
            )
        )
        if done:
            await self.redis.zrem(keys.dead_letters(delivery.caller), delivery.job_id)
            await self.redis.zrem(keys.all_dead_letters(), delivery.job_id)
        return done

    async def dead_letters(self, caller: str | None, *, limit: int, after: str | None) -> tuple[list[Delivery], bool]:
        """Dead letters newest first (a caller's own, or all when `caller` is None), after the cursor `after`."""
        index = keys.dead_letters(caller) if caller is not None else keys.all_dead_letters()

        async def load(job_ids: list[str]) -> list[Delivery | None]:
            return [await self.get(job_id) for job_id in job_ids]

        return await newest_first(
            self.redis, index, after=after, limit=limit, load=load, keep=lambda delivery: delivery.state == "dead"
        )
