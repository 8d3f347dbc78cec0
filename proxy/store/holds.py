"""Held calls that ended without a ChatCompletion after their 200 status was sent: the job id, kept briefly so
the client's automatic retry of the same call gets the real outcome (see proxy/delivery/hold.py)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio

from proxy.store import keys
from proxy.store.records import decoded


@dataclass(frozen=True, slots=True)
class HoldMarker:
    """Names one held call: its caller and a digest of its Idempotency-Key (or of its body)."""

    caller: str
    digest: str


class HoldOutcomes:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.redis = client

    async def remember(self, marker: HoldMarker, job_id: str, *, ttl: int) -> None:
        """Keep the job id of an unfinished held call for `ttl` seconds."""
        await self.redis.set(keys.hold_outcome(marker.caller, marker.digest), job_id, ex=ttl)

    async def take(self, marker: HoldMarker) -> str | None:
        """The job id remembered for this call, removed as it is read (one retry gets it)."""
        raw = await self.redis.getdel(keys.hold_outcome(marker.caller, marker.digest))
        return None if raw is None else decoded(raw)
