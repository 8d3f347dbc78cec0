"""The headers real providers send with every chat answer: a request id and the caller's rate-limit state.

OpenAI: `x-request-id: req_…` and `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a duration
such as `17ms` or `6m0s`). Anthropic: `request-id: req_…` and `anthropic-ratelimit-{requests,tokens}-{limit,
remaining,reset}` (reset as an RFC 3339 instant). Limits are per minute, in fixed one-minute windows, shared by
both faces; the simulator never refuses a call for exceeding them (faults are injected separately).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

REQUESTS_PER_MINUTE = 10_000
TOKENS_PER_MINUTE = 30_000_000
WINDOW_S = 60.0


def request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class RateState:
    remaining_requests: int
    remaining_tokens: int
    reset_in: float  # seconds until the window resets
    reset_at: float  # epoch seconds

    def openai_headers(self) -> dict[str, str]:
        reset = _openai_duration(self.reset_in)
        return {
            "x-request-id": request_id(),
            "x-ratelimit-limit-requests": str(REQUESTS_PER_MINUTE),
            "x-ratelimit-remaining-requests": str(self.remaining_requests),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-limit-tokens": str(TOKENS_PER_MINUTE),
            "x-ratelimit-remaining-tokens": str(self.remaining_tokens),
            "x-ratelimit-reset-tokens": reset,
        }

    def anthropic_headers(self) -> dict[str, str]:
        reset = datetime.fromtimestamp(self.reset_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {
            "request-id": request_id(),
            "anthropic-ratelimit-requests-limit": str(REQUESTS_PER_MINUTE),
            "anthropic-ratelimit-requests-remaining": str(self.remaining_requests),
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": str(TOKENS_PER_MINUTE),
            "anthropic-ratelimit-tokens-remaining": str(self.remaining_tokens),
            "anthropic-ratelimit-tokens-reset": reset,
        }


@dataclass(slots=True)
class RateWindow:
    """Requests and tokens used in the current minute."""

    clock: Callable[[], float] = time.time
    started: float = 0.0
    requests: int = 0
    tokens: int = 0

    def note(self, *, requests: int, tokens: int) -> RateState:
        """Count a call (`requests` 0 for one refused before it counted) and return the state after it."""
        now = self.clock()
        if now - self.started >= WINDOW_S:
            self.started, self.requests, self.tokens = now, 0, 0
        self.requests += requests
        self.tokens += tokens
        reset_at = self.started + WINDOW_S
        return RateState(
            remaining_requests=max(0, REQUESTS_PER_MINUTE - self.requests),
            remaining_tokens=max(0, TOKENS_PER_MINUTE - self.tokens),
            reset_in=max(0.0, reset_at - now),
            reset_at=reset_at,
        )


def _openai_duration(seconds: float) -> str:
    """OpenAI's reset format: `250ms`, `12s`, `6m0s`."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    whole = int(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
