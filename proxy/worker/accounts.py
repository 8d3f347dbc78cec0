"""Account problems of a provider (quota, billing, key, permission) as the worker acts on them: record the problem
where every process sees it (store/accounts.py), stop batch submission to the group until a probe succeeds, and
answer the jobs that wait on it with an error naming the problem when the deadline guard reaches them.

The probe is the next ordinary submission, allowed once per `worker.account_probe_interval`: the problem is
cleared as soon as a batch is created again.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy.errors import UPSTREAM_AUTH_CODE, error_object, is_provider_auth_failure
from proxy.providers.base import ErrorClass, ProviderError
from proxy.store.accounts import AccountProblem
from proxy.worker.context import WorkerContext

log = logging.getLogger("batchgate.worker.accounts")

ACCOUNT_ERROR_TYPE = "provider_account_problem"
HOLD_OWNER = "account"
# which recorded problems a successful read call proves over, by the call (AccountProblem.where)
READ_PROVES = {
    "poll": frozenset({"poll"}),
    "results": frozenset({"poll", "results"}),
}  # owner of a queued job taken out of its queue to be answered with the account problem


def is_account_problem(exc: ProviderError) -> bool:
    return exc.classification is ErrorClass.ACCOUNT_PROBLEM


def problem_code(status: int | None, code: str | None) -> str:
    """The provider's code, or `http_<status>` when it gave none (a bare 401/403)."""
    return code or (f"http_{status}" if status is not None else "account_problem")


class AccountStop:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def report(self, group: str, *, code: str, message: str, status: int | None, where: str) -> AccountProblem:
        """Record the problem (probe again after `worker.account_probe_interval`) and say so loudly."""
        ctx = self.ctx
        now = ctx.clock()
        problem = AccountProblem(
            group=group,
            code=code,
            message=message,
            status=status,
            where=where,
            since=now,
            probe_at=now + ctx.worker_config.account_probe_interval,
        )
        stored = await ctx.store.accounts.report(problem)
        log.error(
            "provider account problem: batch submission stopped: %s",
            stored.describe(),
            extra={"group": group, "code": code, "status": status, "where": where},
        )
        return stored

    async def report_error(self, group: str, exc: ProviderError, *, where: str) -> AccountProblem:
        return await self.report(
            group, code=problem_code(exc.status, exc.code), message=exc.message, status=exc.status, where=where
        )

    async def blocked(self, group: str) -> bool:
        """Whether submission to the group is stopped now (a problem whose probe is not yet due)."""
        problem = await self.ctx.store.accounts.get(group)
        return problem is not None and self.ctx.clock() < problem.probe_at

    async def call_worked(self, group: str, *, where: str) -> None:
        """A poll (`where="poll"`) or a results download (`"results"`) succeeded: a problem that call itself met
        is over (a results download also proves the poll). A problem met on upload or create (quota, billing)
        waits for a submission to prove it gone."""
        problem = await self.ctx.store.accounts.get(group)
        if problem is None or problem.where not in READ_PROVES[where]:
            return
        if await self.ctx.store.accounts.clear(group):
            log.warning(
                "provider account problem cleared: the %s call works again; batch submission resumed", where,
                extra={"group": group, "code": problem.code},
            )  # fmt: skip

    async def submitted(self, group: str) -> None:
        """A batch was created: the provider takes work again, so any recorded problem is over."""
        if await self.ctx.store.accounts.clear(group):
            log.warning("provider account problem cleared: batch submission resumed", extra={"group": group})


def account_error(problem: AccountProblem) -> dict[str, Any]:
    """The error a job waiting on a stopped provider is answered with (OpenAI error object)."""
    message = f"The request could not be answered before its deadline: {problem.describe()}"
    return error_object(message, ACCOUNT_ERROR_TYPE, code=caller_code(problem.code))


def caller_code(code: str) -> str:
    """The code a caller sees: a refusal of batchgate's own provider key is `upstream_authentication_error`, never
    the provider's `invalid_api_key`, which would tell the caller that their own key is wrong."""
    return UPSTREAM_AUTH_CODE if code == "http_401" or is_provider_auth_failure(None, {"code": code}) else code
