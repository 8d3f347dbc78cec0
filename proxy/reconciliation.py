"""Reconciliation: what batchgate recorded from one ended batch against the batch's own billing data.

Pure: `compare` takes the tokens and lines batchgate priced from a batch (as the job's cost or as waste) and the
batch object's `usage` and `request_counts` (OpenAI; None where the provider gives none) and prices any
difference at the batch lane's price. The worker (`proxy/worker/reconcile.py`) reports and keeps the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from proxy.pricing import PriceBook, Usage


@dataclass(slots=True)
class Recorded:
    """What ingest priced from one batch: succeeded lines and their tokens (answers and waste alike)."""

    lines: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: Usage) -> None:
        self.lines += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens


@dataclass(frozen=True, slots=True)
class BatchBilling:
    """A batch's own billing data, as the provider returned it (None: the provider does not say)."""

    completed: int | None
    input_tokens: int | None
    output_tokens: int | None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One batch's comparison. `difference_usd` = billed - recorded at batch prices (0 when nothing to compare);
    `matched` is False when any known count or token total differs."""

    batch_id: str
    provider_batch_id: str
    model: str
    at: float
    recorded: Recorded
    billing: BatchBilling
    difference_usd: Decimal
    matched: bool
    checked: bool  # False: the provider returned no billing data to compare with

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch_id,
            "provider_batch": self.provider_batch_id,
            "model": self.model,
            "at": self.at,
            "checked": self.checked,
            "matched": self.matched,
            "difference_usd": f"{self.difference_usd:f}",
            "recorded": {
                "lines": self.recorded.lines,
                "input_tokens": self.recorded.prompt_tokens,
                "output_tokens": self.recorded.completion_tokens,
            },
            "billed": {
                "lines": self.billing.completed,
                "input_tokens": self.billing.input_tokens,
                "output_tokens": self.billing.output_tokens,
            },
        }


def compare(
    *,
    batch_id: str,
    provider_batch_id: str,
    model: str,
    at: float,
    recorded: Recorded,
    billing: BatchBilling,
    prices: PriceBook,
) -> Reconciliation:
    """Compare recorded with billed; a token difference is priced at the model's batch price (0 if unpriced)."""
    checks = [
        (billing.completed, recorded.lines),
        (billing.input_tokens, recorded.prompt_tokens),
        (billing.output_tokens, recorded.completion_tokens),
    ]
    known = [(billed, mine) for billed, mine in checks if billed is not None]
    matched = all(billed == mine for billed, mine in known)
    mine = Usage(prompt_tokens=recorded.prompt_tokens, completion_tokens=recorded.completion_tokens)
    billed = Usage(
        prompt_tokens=recorded.prompt_tokens if billing.input_tokens is None else billing.input_tokens,
        completion_tokens=recorded.completion_tokens if billing.output_tokens is None else billing.output_tokens,
    )
    billed_cost, recorded_cost = prices.cost(model, billed, "batch"), prices.cost(model, mine, "batch")
    known_prices = billed_cost.known and recorded_cost.known
    difference = billed_cost.paid_usd - recorded_cost.paid_usd if known_prices else Decimal(0)
    return Reconciliation(
        batch_id=batch_id,
        provider_batch_id=provider_batch_id,
        model=model,
        at=at,
        recorded=recorded,
        billing=billing,
        difference_usd=difference,
        matched=matched,
        checked=bool(known),
    )
