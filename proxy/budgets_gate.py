"""The budget check at the door of a call: reserve before it is answered, release when it was not.

`reserve_call` reserves a decided call's worst-case cost (proxy/budgets.py) under a hold id that the answer will
settle: the job id a deferred call will get (the worker settles it through telemetry), or a one-off id for a call
answered here (sync_accounting hands it to telemetry with the answer, from `request.state.budget_hold`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from starlette.requests import Request

from proxy.auth import Caller
from proxy.policy.decision import Decision
from proxy.requests import ChatRequest
from proxy.runtime import ConfigSnapshot, Runtime
from proxy.store.keys import new_job_id
from proxy.sync_accounting import HOLD_STATE
from proxy.venues import declared, price_rule


async def reserve_call(
    runtime: Runtime, request: Request, live: ConfigSnapshot, *, caller: Caller, chat: ChatRequest, decision: Decision
) -> str | None:
    """Reserve the call's worst-case cost on its decided lane; the hold id (for a deferred call: the id its job must
    get), or None when no budget applies. Raises BudgetExceeded (429)."""
    budgets = runtime.budgets
    if budgets is None or not budgets.active():
        return None
    hold = new_job_id(chat.group) if decision.deferred else f"sync_{secrets.token_hex(10)}"
    venue = declared(live.config.policy.venues, decision.venue) if decision.deferred else None
    price = price_rule(venue, decision.hold_until or datetime.now(UTC)) if venue is not None else None
    if not await budgets.reserve(
        hold, live.config, live.prices, caller=caller, model=chat.group, lane=decision.lane, body=chat.body,
        price=price,
    ):  # fmt: skip
        return None
    setattr(request.state, HOLD_STATE, hold)
    return hold


async def release_unanswered(runtime: Runtime, request: Request, hold: str | None, *, deferred: bool) -> None:
    """Give back a hold whose call will not be answered: it failed before reaching a provider, or (deferred) its job
    was not created by this call (an Idempotency-Key matched an earlier job, which holds its own reservation)."""
    if hold is None or runtime.budgets is None:
        return
    if deferred and getattr(request.state, "accepted_job", None) == hold:
        return
    await runtime.budgets.release(hold)
