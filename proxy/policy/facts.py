"""What a decision looks at: the request (RequestFacts) and the lanes of its model (LaneFacts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.endpoints import Endpoint
from proxy.policy.venue import Venue

DEADLINE_HEADER = "x-batch-deadline"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """One chat-completions call as the policy sees it. Header names are lower-cased."""

    caller_name: str
    team: str
    model: str
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    prompt_tokens_estimate: int = 0
    stream: bool = False
    batch_blocker: str | None = None  # the field the model's batch lane cannot carry (it then stays off batch)
    dropped_fields: tuple[str, ...] = ()  # fields the model's provider answers without, on every lane
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS


@dataclass(frozen=True, slots=True)
class LaneFacts:
    """How long each lane of this model takes now (seconds), and the margin kept before a deadline."""

    batch_turnaround: float
    supports_flex: bool
    flex_turnaround: float
    safety_margin: float
    batchable: bool = True  # False when the model's provider has no batch API: the batch lane never fits
    no_batch_reason: str = ""  # why not, naming the provider ("mistral: batchgate does not speak its batch API yet")
    venues: tuple[Venue, ...] = ()  # what the `auto` lane chooses from (proxy/venues.py); empty: as `batch`
    # the probability of ending in time that batch_turnaround stands for (TurnaroundBook.level); None: an estimate
    batch_level: float | None = None
