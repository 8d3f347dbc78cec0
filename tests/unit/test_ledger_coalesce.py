"""Synchronous ledger entries that share a bucket are summed into one write, exactly; job entries stay apart."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

from proxy.accounting import increments
from proxy.pricing import Cost, Usage
from proxy.store import keys
from proxy.telemetry import LedgerEntry, coalesce

AT = datetime(2026, 11, 22, 5, 30, tzinfo=UTC)


def entry(team: str, lane: str, paid: str, *, job_id: str | None = None, tokens: int = 10) -> LedgerEntry:
    cost = Cost(Decimal("0.000123456789"), Decimal(paid))
    return LedgerEntry(team, "gpt-4o-mini", lane, "completed", cost, Usage(tokens, 2 * tokens), AT, job_id)


def test_sync_entries_of_one_bucket_become_one_write_with_exact_sums() -> None:
    entries = [entry(team, "sync", "0.000123456789", tokens=n) for n, team in enumerate(["a", "b", "a", "c"] * 25)]
    writes = coalesce(entries)
    assert len(writes) == 1
    expected: Counter[str] = Counter()
    for each in entries:
        expected.update(
            increments(team=each.team, model=each.model, lane=each.lane, outcome=each.outcome,
                       cost=each.cost, usage=each.usage, shadow=False)
        )  # fmt: skip
    assert writes[0].counters == dict(expected)
    assert writes[0].job_id is None
    assert len(writes[0].entries) == 100


def test_entries_with_a_job_id_are_written_one_by_one_with_their_marker() -> None:
    job_a = keys.new_job_id("gpt-4o-mini")
    job_b = keys.new_job_id("gpt-4o-mini")
    writes = coalesce([entry("a", "batch", "0.00006", job_id=job_a), entry("a", "sync", "0.0001"),
                       entry("a", "batch", "0.00006", job_id=job_b)])  # fmt: skip
    assert [write.job_id for write in writes] == [job_a, None, job_b]
    assert all(len(write.entries) == 1 for write in writes)
