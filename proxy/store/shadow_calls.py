"""Recent shadow-mode calls, kept so that a quote can price them (`POST /v1/quote` with `shadow_hours`).

Each call is kept as what a quote needs and nothing more: its model (the configured name), its prompt and
completion tokens (as the provider counted them) and the seconds from the call to its deadline; no body, no prompt,
no caller. One sorted set scored by the moment of the call holds them, bounded in time (`RETENTION`: older calls are
dropped at every write, and the key expires when shadow traffic stops) and in size (`MAX_CALLS`: the oldest go
first).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from proxy.store import keys

RETENTION = 7 * 86_400.0  # seconds a shadow call is kept
MAX_CALLS = 100_000  # shadow calls kept at most (the newest)


@dataclass(frozen=True, slots=True)
class ShadowCall:
    """One shadow-mode call: when (unix seconds), its model, its tokens, and its deadline (seconds after the call;
    None: it had none)."""

    at: float
    model: str
    prompt_tokens: int
    completion_tokens: int
    deadline: float | None


class ShadowCalls:
    """The store of kept shadow-mode calls (one sorted set, see the module): `add` keeps, `since` reads back."""

    def __init__(self, client: redis.asyncio.Redis, *, retention: float = RETENTION, limit: int = MAX_CALLS) -> None:
        self._client = client
        self._retention = retention
        self._limit = limit

    async def add(self, calls: Sequence[ShadowCall]) -> None:
        """Keep `calls`, then drop what is older than the retention or beyond the size bound."""
        if not calls:
            return
        key = keys.shadow_calls()
        members = {_encode(call): call.at for call in calls}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, members)
            pipe.zremrangebyscore(key, "-inf", f"({max(members.values()) - self._retention!r}")
            pipe.zremrangebyrank(key, 0, -(self._limit + 1))
            pipe.expire(key, int(self._retention) + 1)
            await pipe.execute()

    async def since(self, moment: float) -> list[ShadowCall]:
        """The calls kept from unix time `moment` on, oldest first."""
        found = await self._client.zrangebyscore(keys.shadow_calls(), repr(moment), "+inf", withscores=True)
        calls = [_decode(entry[0], float(entry[1])) for entry in found if isinstance(entry, tuple | list)]
        return [call for call in calls if call is not None]


def _encode(call: ShadowCall) -> bytes:
    # a random first field keeps two identical calls apart (a sorted set holds each member once)
    return orjson.dumps([secrets.token_hex(4), call.model, call.prompt_tokens, call.completion_tokens, call.deadline])


def _decode(member: Any, score: float) -> ShadowCall | None:
    try:
        _, model, prompt, completion, deadline = orjson.loads(member)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    fields: list[Any] = [model, prompt, completion, deadline]
    if not isinstance(fields[0], str) or not all(isinstance(value, int) for value in fields[1:3]):
        return None
    deadline_seconds = float(deadline) if isinstance(deadline, int | float) else None
    return ShadowCall(float(score), model, prompt, completion, deadline_seconds)
