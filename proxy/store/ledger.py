"""The savings ledger's Redis side: integer counters per (queue group, hour) bucket, written once per job.

Layout (Redis Cluster safe, see keys.py): a group's hourly bucket is a hash whose fields are counter names
(opaque here; `proxy/accounting.py` composes and reads them) with integer values added by HINCRBY, so totals are
exact across processes and restarts; an index of the hours with data per group; a set of the groups. A job's
"already recorded" marker lives in the same slot as its bucket, so recording is one atomic script and a second
recording of the same job changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

import redis.asyncio

from proxy.store import keys
from proxy.store.records import decoded
from proxy.store.scripts import Scripts

HOUR = 3600
DEFAULT_RETENTION_SECONDS = 400 * 86400
DEFAULT_MARKER_TTL_SECONDS = 8 * 86400

Bucket = tuple[str, int]  # (group tag, hour = epoch seconds // 3600)


def bucket_of(model: str, at: datetime, job_id: str | None) -> Bucket:
    """The (group tag, hour) a record lands in: the job's own slot, or its model's group."""
    tag = keys.tag_of_job(job_id) if job_id else keys.group_tag(model)
    return tag, math.floor(at.timestamp() / HOUR)


class LedgerStore:
    """Adds counters to buckets and reads them back. Buckets expire `retention_seconds` after their last write;
    a job's marker after `marker_ttl_seconds`."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        scripts: Scripts,
        *,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        marker_ttl_seconds: float = DEFAULT_MARKER_TTL_SECONDS,
    ) -> None:
        self.redis = client
        self.scripts = scripts
        self._retention_ms = int(retention_seconds * 1000)
        self._marker_ttl_ms = int(marker_ttl_seconds * 1000)
        self._known_tags: set[str] = set()

    async def add(
        self,
        bucket: Bucket,
        counters: Mapping[str, int],
        *,
        job_id: str | None = None,
        shadow: bool = False,
        waste: str | None = None,
    ) -> bool:
        """Add integer counters to one bucket. With a job id, only the first call for that job (and `shadow`,
        and `waste`: the source of a wasted line) adds anything: returns False for a repeat."""
        tag, hour = bucket
        if tag not in self._known_tags:
            await self.redis.sadd(keys.ledger_tags(), tag)
            self._known_tags.add(tag)
        script_keys = [keys.ledger_bucket(tag, hour), keys.ledger_hours(tag)]
        if job_id:
            script_keys.append(keys.ledger_marker(job_id, shadow=shadow, waste=waste))
        oldest_hour = hour - self._retention_ms // (HOUR * 1000)
        args: list[str | int] = [hour, self._retention_ms, self._marker_ttl_ms, oldest_hour]
        for field_name, amount in counters.items():
            args += [field_name, amount]
        recorded = await self.scripts.ledger_record(keys=script_keys, args=args)
        return bool(recorded)

    async def save_reconciliation(self, result: bytes, *, mismatch: bool) -> None:
        """Keep the last batch reconciliation (JSON), and the last one that did not match."""
        fields: dict[str | bytes, bytes] = {"last": result}
        if mismatch:
            fields["last_mismatch"] = result
        await self.redis.hset(keys.reconciliation(), mapping=fields)  # type: ignore[arg-type]

    async def reconciliations(self) -> dict[str, bytes]:
        """{"last": JSON, "last_mismatch": JSON} as saved (either may be missing)."""
        raw = await self.redis.hgetall(keys.reconciliation())
        return {decoded(name): decoded(value).encode() for name, value in raw.items()}

    async def buckets(self, first_hour: int, end_hour: int) -> list[dict[str, int]]:
        """The counters of every group's buckets for the hours in [first_hour, end_hour)."""
        tags = sorted(decoded(tag) for tag in await self.redis.smembers(keys.ledger_tags()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.zrangebyscore(keys.ledger_hours(tag), first_hour, end_hour - 1)
            hours_per_tag: list[list[object]] = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag, hours in zip(tags, hours_per_tag, strict=True):
                for hour in hours:
                    pipe.hgetall(keys.ledger_bucket(tag, int(decoded(hour))))
            raw_buckets: list[dict[object, object]] = await pipe.execute()
        return [{decoded(name): int(decoded(amount)) for name, amount in raw.items()} for raw in raw_buckets]
