"""Provider account problems (quota, billing, key, permission): one shared record per queue group, so every
worker and API replica sees at once that batch submission to it has stopped, and why.

A record is written when a provider call answers with an account-level error and removed when a later call to
the same provider succeeds (the probe) or on config reload.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from proxy.store import keys
from proxy.store.part import StorePart
from proxy.store.records import decoded


@dataclass(frozen=True, slots=True)
class AccountProblem:
    """Why submission to `group` stopped: the provider's `code` (e.g. `insufficient_quota`, or `http_401` when
    it gave none), its `message` and HTTP `status`; `where` names the call (upload, create, poll, results, batch);
    `since` when first seen and `probe_at` when a submission may next be tried (epoch seconds)."""

    group: str
    code: str
    message: str
    status: int | None
    where: str
    since: float
    probe_at: float

    def summary(self) -> str:
        """One sentence without the provider's own message (for the unauthenticated /readyz)."""
        return (
            f"batch submission to provider group {self.group!r} is stopped by an account problem: {self.code}"
            f" (on {self.where})"
        )

    def describe(self) -> str:
        """The summary and the provider's message: for logs and the error a waiting job is answered with."""
        return f"{self.summary()}: {self.message}"


class AccountProblems(StorePart):
    async def report(self, problem: AccountProblem) -> AccountProblem:
        """Record `problem`, keeping the first `since` of a problem already recorded; returns what was stored."""
        current = await self.get(problem.group)
        if current is not None:
            problem = AccountProblem(**{**asdict(problem), "since": current.since})
        await self.redis.hset(keys.account_problems(), problem.group, orjson.dumps(asdict(problem)))
        return problem

    async def get(self, group: str) -> AccountProblem | None:
        raw = await self.redis.hget(keys.account_problems(), group)
        return _decode(raw) if raw is not None else None

    async def all(self) -> list[AccountProblem]:
        raw = await self.redis.hgetall(keys.account_problems())
        problems = (_decode(value) for value in raw.values())
        return sorted((p for p in problems if p is not None), key=lambda p: p.group)

    async def clear(self, group: str) -> bool:
        """Forget the group's problem; True when there was one."""
        return bool(await self.redis.hdel(keys.account_problems(), group))

    async def clear_all(self) -> int:
        names = [decoded(name) for name in await self.redis.hkeys(keys.account_problems())]
        return int(await self.redis.hdel(keys.account_problems(), *names)) if names else 0


def _decode(raw: bytes | str) -> AccountProblem | None:
    try:
        return AccountProblem(**orjson.loads(raw))
    except (orjson.JSONDecodeError, TypeError):
        return None  # a record of an older shape: treated as absent, overwritten by the next report
