"""The learned batch turnaround of every group, per batch-size band, in Redis (shared by every worker).

One HASH per (group, band): `b<i>` the decayed weight of bucket i (buckets as in proxy/jobs/turnaround.py),
`seen` the batches observed, `at` when the last one was. An observation decays and adds in one script, so
concurrent workers never lose one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio

from proxy.store import keys
from proxy.store.part import StorePart
from proxy.store.records import decoded
from proxy.store.scripts import Scripts

# KEYS: the hashes to count in (a size band's, the group's `all`)   ARGV: now, half-life (s), bucket field
OBSERVE = """
local now = tonumber(ARGV[1])
local half = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local last = tonumber(redis.call('HGET', key, 'at') or ARGV[1])
  if half > 0 and now > last then
    local factor = 0.5 ^ ((now - last) / half)
    local flat = redis.call('HGETALL', key)
    for i = 1, #flat, 2 do
      if string.sub(flat[i], 1, 1) == 'b' then
        redis.call('HSET', key, flat[i], tostring(tonumber(flat[i + 1]) * factor))
      end
    end
  end
  redis.call('HINCRBYFLOAT', key, ARGV[3], 1)
  redis.call('HINCRBY', key, 'seen', 1)
  if now > last or redis.call('HEXISTS', key, 'at') == 0 then
    redis.call('HSET', key, 'at', ARGV[1])
  end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class TurnaroundCounts:
    """One (group, band) hash as stored: bucket index -> decayed weight, and the batches seen."""

    weights: dict[int, float]
    seen: int


class TurnaroundStore(StorePart):
    def __init__(
        self, client: redis.asyncio.Redis, scripts: Scripts, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(client, scripts, clock=clock)
        self._observe = client.register_script(OBSERVE)

    async def observe(self, group: str, bands: Sequence[str], *, bucket: int, half_life: float) -> None:
        """Count one ended batch in `bucket` of each of `bands` (its size band and `all`), after decaying the older
        weights by `half_life` (seconds; 0: no decay)."""
        tag = keys.group_tag(group)
        await self._observe(
            keys=[keys.turnaround(tag, band) for band in bands],
            args=[repr(self.clock()), repr(half_life), f"b{bucket}"],
        )

    async def load(self, group: str, bands: Sequence[str]) -> dict[str, TurnaroundCounts]:
        """The stored counts of each of `bands` (a band never seen: no weights, none seen)."""
        tag = keys.group_tag(group)
        pipe = self.redis.pipeline(transaction=False)
        for band in bands:
            pipe.hgetall(keys.turnaround(tag, band))
        found: dict[str, TurnaroundCounts] = {}
        for band, raw in zip(bands, await pipe.execute(), strict=True):
            weights: dict[int, float] = {}
            seen = 0
            for name, value in (raw or {}).items():
                field, text = decoded(name), decoded(value)
                if field.startswith("b") and field[1:].isdigit():
                    weights[int(field[1:])] = float(text)
                elif field == "seen":
                    seen = int(text)
            found[band] = TurnaroundCounts(weights, seen)
        return found
