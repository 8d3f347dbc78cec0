"""After an ended batch is ingested: compare what was recorded from it with the batch's own billing data.

A difference is logged (warning), counted (`batchgate_reconciliations_total{result="mismatched"}`,
`batchgate_reconciliation_difference_usd_total`) and kept as the last mismatch for `batchgate status`.
"""

from __future__ import annotations

import logging

import orjson
import redis

from proxy.providers.base import BatchInfo
from proxy.reconciliation import BatchBilling, Reconciliation, Recorded, compare
from proxy.store.records import BatchRecord
from proxy.worker.context import WorkerContext

log = logging.getLogger("batchgate.worker.reconcile")


async def reconcile(ctx: WorkerContext, record: BatchRecord, info: BatchInfo, recorded: Recorded) -> Reconciliation:
    """Compare, report and keep the result (a Redis error only loses the kept copy)."""
    result = compare(
        batch_id=record.id,
        provider_batch_id=info.batch_id,
        model=record.group,
        at=ctx.clock(),
        recorded=recorded,
        billing=BatchBilling(info.completed, info.input_tokens, info.output_tokens),
        prices=ctx.runtime.prices,
    )
    if result.checked and not result.matched:
        log.warning("reconciliation: batch billing differs from what was recorded", extra=result.to_json())
    ctx.events.batch_reconciled(result)
    try:
        await ctx.store.ledger.save_reconciliation(orjson.dumps(result.to_json()), mismatch=not result.matched)
    except redis.RedisError as exc:
        log.warning("could not keep the last reconciliation: %r", exc, extra={"batch": record.id})
    return result
