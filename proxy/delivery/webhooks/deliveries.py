"""Where webhook deliveries live: a hash per job and a due-time ZSET per queue group, plus dead-letter indexes.

The final-write script (store/scripts.py FINISH) creates a job's delivery in the same slot and the same script as
the answer, so a job never ends without its delivery queued. A worker claims due deliveries by pushing their due
time forward by a lease (a visibility timeout): if it dies mid-delivery the delivery is due again when the lease
runs out, and another worker (or the restarted one) sends it again: at-least-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.commands.core import AsyncScript

from proxy.store import keys
from proxy.store.paging import newest_first
from proxy.store.records import decoded, raw_hash

# KEYS: due   ARGV: now, claimed until, limit
CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

# KEYS: delivery, due   ARGV: job id, now, status, retention
SUCCEED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'delivered', 'delivered_at', ARGV[2], 'last_status', ARGV[3], 'last_error', '')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: delivery, due   ARGV: job id, next attempt at, status, error
RETRY = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'next_at', ARGV[2], 'last_status', ARGV[3], 'last_error', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: delivery, due   ARGV: job id, now, status, error, retention
DEAD = """
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'dead', 'dead_at', ARGV[2], 'last_status', ARGV[3], 'last_error', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: delivery, due   ARGV: job id, now
REPLAY = """
if redis.call('HGET', KEYS[1], 'state') ~= 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'first_at', ARGV[2], 'next_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Delivery:
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
    def decode(cls, raw: dict[bytes, bytes]) -> Delivery:
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

    def as_object(self) -> dict[str, Any]:
        """How the API shows a delivery (dead-letter list, replay)."""
        return {
            "id": self.job_id,
            "object": "webhook.delivery",
            "webhook_id": self.webhook_id,
            "job_id": self.job_id,
            "url": self.url,
            "state": self.state,
            "attempts": self.attempts,
            "first_attempt_at": int(self.first_at),
            "dead_at": int(self.dead_at) if self.dead_at is not None else None,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "replays": self.replays,
        }


class Deliveries:
    def __init__(self, client: redis.asyncio.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.clock = clock

        def script(text: str) -> AsyncScript:
            registered: AsyncScript = client.register_script(text)
            return registered

        self._claim = script(CLAIM)
        self._succeed = script(SUCCEED)
        self._retry = script(RETRY)
        self._dead = script(DEAD)
        self._replay = script(REPLAY)

    async def claim(self, tag: str, *, limit: int, lease: float) -> list[str]:
        now = self.clock()
        ids = await self._claim(keys=[keys.webhooks_due(tag)], args=[repr(now), repr(now + lease), limit])
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
        return bool(await self._succeed(keys=self._keys(job_id), args=args))

    async def retry(self, job_id: str, *, at: float, status: int | None, error: str) -> bool:
        args: list[str | int] = [job_id, repr(at), "" if status is None else status, error[:500]]
        return bool(await self._retry(keys=self._keys(job_id), args=args))

    async def give_up(self, delivery: Delivery, *, status: int | None, error: str, retention: float) -> bool:
        """Dead-letter a delivery. Indexed first (idempotent), then marked: a crash in between leaves it pending."""
        now = self.clock()
        await self.redis.zadd(keys.dead_letters(delivery.caller), {delivery.job_id: now})
        await self.redis.zadd(keys.all_dead_letters(), {delivery.job_id: now})
        args: list[str | int] = [
            delivery.job_id,
            repr(now),
            "" if status is None else status,
            error[:500],
            max(1, int(retention)),
        ]
        return bool(await self._dead(keys=self._keys(delivery.job_id), args=args))

    async def replay(self, delivery: Delivery) -> bool:
        done = bool(await self._replay(keys=self._keys(delivery.job_id), args=[delivery.job_id, repr(self.clock())]))
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
