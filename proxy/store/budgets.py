"""Spending budgets' Redis side: what each team and caller key spent (and holds reserved) per UTC period.

All budget keys share one hash tag, so reserving across a team's and a key's day and month counters is one atomic
script. A counter is integer pico-dollars added with INCRBY (exact); it expires after its period, and so do the
reservations that were never settled (a process killed between accept and answer). A reservation (a "hold") is
a hash named by its id (the job id of a deferred call) holding its amount and the counters it added to, so
whoever answers the call settles it, once: settling deletes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio
from redis.commands.core import AsyncScript

from proxy.store import keys
from proxy.store.records import decoded

# KEYS: hold, spent counters…  ARGV: amount, hold ttl ms, then per counter: limit (-1: none), ttl ms
# Returns {1} when reserved, {0, i, spent} when counter i (1-based) has no room, {-1} when the hold exists.
RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local amount = tonumber(ARGV[1])
for i = 2, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local spent = redis.call('GET', KEYS[i]) or '0'
  if limit >= 0 and tonumber(spent) + amount > limit then return {0, i - 1, spent} end
end
local names = {}
for i = 2, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  names[#names + 1] = KEYS[i]
end
redis.call('HSET', KEYS[1], 'amount', ARGV[1], 'keys', table.concat(names, '\\n'))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1}
"""

# KEYS: hold, the spent counters it names…  ARGV: the amount read from the hold, delta (real - reserved)
# A counter whose period ended (expired) is left alone. Returns 1 when settled, 0 when there was nothing to settle.
SETTLE = """
if redis.call('HGET', KEYS[1], 'amount') ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[2]) end
end
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Counter:
    """One spent counter and its limit: `scope` team|key, `period` d<date>|m<month>, `limit` pico-dollars
    (None: counted, not limited), `ttl` seconds it is kept."""

    scope: str
    name: str
    period: str
    limit: int | None
    ttl: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """The counter with no room for the amount, and what it held already (pico-dollars)."""

    counter: Counter
    spent: int


class BudgetStore:
    """Reserves, settles and reads spent counters."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.redis = client
        self._reserve: AsyncScript = client.register_script(RESERVE)
        self._settle: AsyncScript = client.register_script(SETTLE)

    async def reserve(self, hold_id: str, counters: Sequence[Counter], amount: int) -> Refusal | None:
        """Add `amount` pico-dollars to every counter if each stays within its limit, all or none; None when
        reserved (or already reserved under this id), else the first counter without room."""
        if not counters:
            return None
        args: list[int] = [amount, _ms(max(counter.ttl for counter in counters))]
        for counter in counters:
            args += [-1 if counter.limit is None else counter.limit, _ms(counter.ttl)]
        names = [keys.budget_spent(c.scope, c.name, c.period) for c in counters]
        result = await self._reserve(keys=[keys.budget_hold(hold_id), *names], args=args)
        if int(result[0]) != 0:
            return None
        return Refusal(counters[int(result[1]) - 1], int(decoded(result[2])))

    async def settle(self, hold_id: str, amount: int | None) -> bool:
        """Replace a hold's reserved amount by the real `amount` (0 releases it, None keeps the reserved amount);
        False when no such hold (settled already, never made, or expired with its period)."""
        hold_key = keys.budget_hold(hold_id)
        raw = await self.redis.hgetall(hold_key)
        fields = {decoded(name): decoded(value) for name, value in raw.items()}
        if "amount" not in fields:
            return False
        counters = [name for name in fields.get("keys", "").split("\n") if name]
        delta = 0 if amount is None else amount - int(fields["amount"])
        return bool(await self._settle(keys=[hold_key, *counters], args=[fields["amount"], delta]))

    async def spent(self, counters: Sequence[Counter]) -> list[int]:
        """Pico-dollars spent and reserved per counter (0 when none yet)."""
        if not counters:
            return []
        values = await self.redis.mget([keys.budget_spent(c.scope, c.name, c.period) for c in counters])
        return [0 if value is None else int(decoded(value)) for value in values]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
