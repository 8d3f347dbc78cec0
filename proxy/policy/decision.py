"""The outcome of the policy for one call, and its one-line rendering for the X-Batchgate-Decision header."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from proxy.durations import format_instant
from proxy.endpoints import Endpoint
from proxy.policy.venue import Considered
from proxy.reasons import RescueReason

ResolvedLane = Literal["sync", "batch", "flex"]
DeliveryMode = Literal["hold", "async", "webhook"]
DECISION_HEADER = "X-Batchgate-Decision"


@dataclass(frozen=True, slots=True)
class Decision:
    """How one call is answered.

    deferred: answered through a job (202 / held connection / webhook) rather than an ordinary response.
    lane: the lane that answers it; a deferred call on `sync` is run at once by the worker.
    shadow / shadow_lane: shadow mode forwards synchronously (deferred=False, lane=sync) and records
        the lane deferring would have used, so savings can be counted as if it had.
    max_wait: seconds the rule lets this job wait for a batch (None = its queue's `max_wait`).
    rescue_reason: why a deferred call that could have waited for a batch goes to `sync` at once
        (its deadline leaves no time for one); None otherwise.
    no_batch: why a call that asked for deferral could not use the batch lane, naming the model's provider
        ("mistral: batchgate does not speak its batch API yet"); rendered as `reason="..."` in the header.
    dropped: request fields the model's provider answers without on every lane (`seed` on Claude), rendered as
        `dropped="seed, ..."` so that nothing is dropped silently (docs/field-lanes.md).
    venue: the venue the `auto` lane picked (proxy/venues.py; None: the lane named it), rendered as `venue=`;
        `considered` lists every venue it looked at (for `policy explain`).
    hold_until: when a held call (an off-peak venue) is sent; venue_body: fields its venue adds to the body.
    eta / eta_p90: when a deferred batch job is expected to be answered (unix seconds), median and pessimistic.
    cache_too_short: (prefix tokens, provider minimum) when a batched call's prompt prefix is too short for the
        provider's prompt cache (proxy/prompt_cache.py), rendered as `cache=too_short(812<1024)`.
    """

    deferred: bool
    lane: ResolvedLane
    rule: str
    reason: str
    deadline: datetime | None = None
    delivery: DeliveryMode | None = None
    callback_url: str | None = None
    shadow: bool = False
    shadow_lane: ResolvedLane | None = None
    max_wait: float | None = None
    rescue_reason: RescueReason | None = None
    no_batch: str | None = None
    dropped: tuple[str, ...] = ()
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS  # shown in the header when it is not chat
    venue: str | None = None
    hold_until: datetime | None = None
    venue_body: Mapping[str, Any] = field(default_factory=dict)
    considered: tuple[Considered, ...] = ()
    eta: float | None = None
    eta_p90: float | None = None
    cache_too_short: tuple[int, int] | None = None

    def header_value(self) -> str:
        parts = [f"lane={self.lane}", f"rule={self.rule}"]
        if self.lane == "sync" and self.deferred:
            parts.append("deferred=true")
        if self.shadow:
            parts.append("shadow=true")
            if self.shadow_lane:
                parts.append(f"shadow_lane={self.shadow_lane}")
        if self.endpoint is not Endpoint.CHAT_COMPLETIONS:
            parts.append(f"endpoint={self.endpoint.value}")
        if self.no_batch:
            parts.append(f'reason="{self.no_batch}"')
        if self.dropped:
            parts.append(f'dropped="{", ".join(self.dropped)}"')
        if self.venue is not None and self.venue != self.lane:  # a built-in venue is named by its lane
            parts.append(f"venue={self.venue}")
        if self.hold_until is not None:
            parts.append(f"hold_until={format_instant(self.hold_until)}")
        if self.deadline is not None:
            parts.append(f"deadline={format_instant(self.deadline)}")
        if self.eta is not None and self.eta_p90 is not None:
            parts.append(f"eta={int(self.eta)}; eta_p90={int(self.eta_p90)}")
        if self.cache_too_short is not None:
            parts.append(f"cache=too_short({self.cache_too_short[0]}<{self.cache_too_short[1]})")
        return "; ".join(parts)
