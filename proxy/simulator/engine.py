"""The simulated provider's state and rules, provider-neutral: knobs, injected faults, batches, the ledger.

Faces (the OpenAI routes, later an Anthropic one) parse their wire format into neutral requests, ask the
engine, and render what it answers back into their own shapes.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from proxy.simulator.answers import Answer, answer_for
from proxy.simulator.batches import (
    INFINITY,
    BatchLine,
    BatchRecord,
    BatchView,
    LineRequest,
    Status,
    ValidationIssue,
    finish_offsets,
    injected_status,
    view,
)
from proxy.simulator.ledger import Ledger, PriceBook, Tier, billed_name
from proxy.simulator.options import SimulatorOptions
from proxy.simulator.prompt_cache import PromptCache

TokenLimitMode = Literal["fail", "refuse"]

LINE_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    429: "Rate limit reached while processing this batch request. Please try again later.",
    400: "Invalid request (injected by the simulator).",
}


def in_window(window: str, at: float) -> bool:
    """Whether unix time `at` falls in a daily `HH:MM-HH:MM` UTC window (one that ends before it starts wraps
    midnight)."""
    start_text, _, end_text = window.partition("-")
    start, end = (int(part[:2]) * 3600 + int(part[3:]) * 60 for part in (start_text, end_text))
    second = int(at) % 86400
    return start <= second < end if start <= end else second >= start or second < end


def expected_content(body: Mapping[str, Any]) -> str:
    """The answer text the simulator gives to a chat request body (sync, stream or batch line alike)."""
    return answer_for(body).content


class BatchNotFound(LookupError):
    pass


class TokenLimitExceeded(RuntimeError):
    """A new batch would push its model's enqueued prompt tokens over the limit (`str()` is the provider's
    message). The OpenAI face fails the batch with it; the Azure flavour refuses the create call (400)."""

    code = "token_limit_exceeded"

    def __init__(self, model: str, limit: int) -> None:
        super().__init__(
            f"Enqueued token limit reached for {model} in organization org-simulated. Limit: {limit:,} enqueued "
            "tokens. Please try again once some in_progress batches have been completed."
        )
        self.model = model
        self.limit = limit


class BatchNotCancellable(RuntimeError):
    def __init__(self, status: Status) -> None:
        super().__init__(f"Cannot cancel a batch with status '{status.value}'.")
        self.status = status


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected failure of a synchronous call."""

    status: int
    reason: str  # "fail_next" | "rate_limit" | "server_error" | "resource_unavailable"
    body: str | None = None  # answered verbatim (text/html) instead of the face's error object: a broken upstream


class Engine:
    def __init__(
        self,
        options: SimulatorOptions,
        *,
        clock: Callable[[], float] = time.time,
        prices: PriceBook | None = None,
    ) -> None:
        self.options = options
        self.clock = clock
        self.ledger = Ledger()
        self.prompt_cache = PromptCache()
        self.prices = prices or PriceBook()
        self._rng = random.Random(options.seed)
        self._fail_next: deque[tuple[int, str | None]] = deque()
        self._batches: dict[str, BatchRecord] = {}
        self._admission = threading.Lock()  # the token-limit check and the registration of a batch are one step

    # knobs and sync faults

    def configure(self, changes: Mapping[str, Any]) -> SimulatorOptions:
        updated = self.options.updated(dict(changes))
        if "seed" in changes:
            self._rng = random.Random(updated.seed)
        self.options = updated
        return updated

    def fail_next(self, count: int, status: int, body: str | None = None) -> int:
        self._fail_next.extend([(status, body)] * count)
        return len(self._fail_next)

    def sync_fault(self, tier: Tier) -> Fault | None:
        if self._fail_next:
            status, body = self._fail_next.popleft()
            return Fault(status, "fail_next", body)
        opts = self.options
        if not (opts.sync_429_rate or opts.sync_500_rate or (tier is Tier.FLEX and opts.flex_429_rate)):
            return None
        roll = self._rng.random()
        if roll < opts.sync_429_rate:
            return Fault(429, "rate_limit")
        if roll < opts.sync_429_rate + opts.sync_500_rate:
            return Fault(500, "server_error")
        if tier is Tier.FLEX and self._rng.random() < opts.flex_429_rate:
            return Fault(429, "resource_unavailable")
        return None

    def venue_share(self, body: MutableMapping[str, Any]) -> Decimal | None:
        """The share of list a sync call is billed at when it is not list: a declared `service_tier`
        (`venue_tiers`, taken out of the body so the chat rules see a standard call), else the off-peak window
        when the call lands in it on this engine's clock; None: the call's own tier price."""
        tier = body.get("service_tier")
        if isinstance(tier, str) and tier in self.options.venue_tiers:
            del body["service_tier"]
            return Decimal(repr(self.options.venue_tiers[tier]))
        window = self.options.off_peak_utc
        if window is None or tier == "flex":
            return None
        return Decimal(repr(self.options.off_peak_share)) if in_window(window, self.clock()) else None

    def bill(
        self, model: str, tier: Tier, answer: Answer, *, flavor: str = "openai", share: Decimal | None = None
    ) -> None:
        """Bill one answer; `flavor` is the OpenAI face's (the provider it plays), which names the model's price;
        `share`: billed at that share of the tier's price (a venue tier, off-peak hours)."""
        self.ledger.bill(
            billed_name(model, flavor),
            tier,
            share=share,
            input_tokens=answer.prompt_tokens,
            output_tokens=answer.completion_tokens,
            cache_read_tokens=answer.cache_read_tokens,
            cache_write_tokens=answer.cache_write_tokens,
        )

    # batches

    def _drawn(self, opts: SimulatorOptions) -> SimulatorOptions:
        """The knobs of one new batch: its own turnaround (turnaround_sigma) and whether it stalls (stall_rate)."""
        changes: dict[str, Any] = {}
        if opts.turnaround_sigma > 0:
            changes["turnaround_s"] = opts.turnaround_s * math.exp(self._rng.gauss(0.0, opts.turnaround_sigma))
        if opts.stall_rate > 0 and self._rng.random() < opts.stall_rate:
            changes["finish_fraction"] = 0.0
        return opts.updated(changes) if changes else opts

    def create_batch(
        self,
        batch_id: str,
        requests: Sequence[LineRequest],
        issues: Sequence[ValidationIssue],
        attributes: Mapping[str, Any],
        *,
        token_limit: TokenLimitMode | None = None,
        expires: bool = True,
        options: SimulatorOptions | None = None,
    ) -> BatchRecord:
        """Register a batch (linear in its lines: call it off the event loop for large inputs).

        With `token_limit`, a batch that would take its model's enqueued prompt tokens (the prompts of the
        model's batches not yet ended) over `options.token_limit(model)` is registered as failed with a
        `token_limit_exceeded` issue ("fail", OpenAI) or not registered at all: TokenLimitExceeded is raised
        ("refuse", Azure fail-fast). With `expires=False` it never expires (Azure global batch). `options`: the
        knobs the batch runs by (default: those in force), for a face whose provider has no finalizing phase."""
        opts = self._drawn(options or self.options)
        lines = []
        issues = list(issues)
        if not issues:
            offsets = finish_offsets(len(requests), opts, self._rng)
            lines = [self._line(index, request, offsets[index]) for index, request in enumerate(requests)]
        tokens = sum(request.answer.prompt_tokens for request in requests if request.answer is not None)
        with self._admission:
            if token_limit and not issues and lines:
                refusal = self.token_limit_refusal(lines[0].model, tokens)
                if refusal is not None and token_limit == "refuse":  # noqa: S105 - a mode, not a secret
                    raise refusal
                if refusal is not None:
                    issues.append(ValidationIssue(refusal.code, str(refusal), None, None))
                    lines = []
            record = BatchRecord(
                id=batch_id,
                created_at=self.clock(),
                options=opts,
                lines=lines,
                issues=issues,
                attributes=dict(attributes),
                expires=expires,
                prompt_tokens=0 if issues else tokens,
            )
            self._batches[batch_id] = record
        return record

    def enqueued_tokens(self, model: str) -> int:
        """Prompt tokens of `model`'s batches that have not ended (validating, in progress, finalizing,
        cancelling): what the provider counts against the enqueued-token limit."""
        return sum(
            record.prompt_tokens
            for record in list(self._batches.values())
            if not record.settled
            and record.model == model
            and not record.issues
            and not self._settled_view(record).status.is_terminal
        )

    def token_limit_refusal(self, model: str, tokens: int) -> TokenLimitExceeded | None:
        """The refusal a new batch of `tokens` prompt tokens for `model` meets, or None when it fits."""
        limit = self.options.token_limit(model)
        if limit is None or self.enqueued_tokens(model) + tokens <= limit:
            return None
        return TokenLimitExceeded(model, limit)

    def _line(self, index: int, request: LineRequest, offset: float) -> BatchLine:
        model = request.model
        if request.problem is not None or request.answer is None:
            message = request.problem or "Invalid request."
            return BatchLine(index, request.custom_id, model, None, 400, message, offset)
        status = injected_status(self.options, self._rng)
        if status != 200:
            return BatchLine(index, request.custom_id, model, None, status, LINE_ERROR_MESSAGES[status], offset)
        return BatchLine(index, request.custom_id, model, request.answer, 200, None, offset)

    def batch(self, batch_id: str) -> BatchView:
        record = self._batches.get(batch_id)
        if record is None:
            raise BatchNotFound(batch_id)
        return self._settled_view(record)

    def batch_made_by(self, batch_id: str, face: str) -> BatchView | None:
        """The batch `batch_id` when the face named `face` created it (its `face` attribute), else None: each face
        sees only its own batches."""
        record = self._batches.get(batch_id)
        if record is None or record.attributes.get("face") != face:
            return None
        return self._settled_view(record)

    def batch_of_face(self, batch_id: str, prefix: str) -> BatchView | None:
        """A batch a face created (its ids start with `prefix`), or None when there is no such batch."""
        if not batch_id.startswith(prefix) or batch_id not in self._batches:
            return None
        return self.batch(batch_id)

    def cancel_batch(self, batch_id: str) -> BatchView:
        current = self.batch(batch_id)
        if current.status is Status.CANCELLING:
            return current
        if current.status.is_terminal:
            raise BatchNotCancellable(current.status)
        current.record.cancel_requested_at = current.now
        return self._settled_view(current.record)

    def batches_newest_first(self) -> Iterator[BatchView]:
        for record in reversed(list(self._batches.values())):
            yield self._settled_view(record)

    def settle_all(self) -> None:
        """Bill every batch that has ended (the ledger is read after this)."""
        for record in list(self._batches.values()):
            if not record.settled:
                self._settled_view(record)

    def _settled_view(self, record: BatchRecord) -> BatchView:
        current = view(record, self.clock())
        if current.status.is_terminal and not record.settled:
            record.settled = True
            flavor = str(record.attributes.get("face") or record.options.flavor)  # a face bills as its provider
            billed_as = record.attributes.get("billed_as") or {}  # the Azure face: deployment -> billed name
            for line in current.finished:
                if line.succeeded and line.answer is not None:
                    self.bill(billed_as.get(line.model, line.model), Tier.BATCH, line.answer, flavor=flavor)
        return current

    def reset(self) -> None:
        """Clear the ledger and pending fail-next faults. Batches and files are kept: batches that have ended
        stay billed to the cleared period, batches still running bill when they end."""
        self.settle_all()
        self.ledger.reset()
        self._fail_next.clear()


__all__ = [
    "INFINITY",
    "BatchNotCancellable",
    "BatchNotFound",
    "Engine",
    "Fault",
    "TokenLimitExceeded",
    "expected_content",
]
