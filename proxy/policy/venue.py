"""A venue as a decision sees it (the data only; pricing and picking are in proxy/venues.py). No imports of the
policy's other modules, so the decision and its facts can hold venues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Venue:
    """One venue as a decision sees it now.

    price: the expected share of the list price paid (1.0 = list). eta / need: seconds from now to the answer,
    median and at the configured confidence (both include `hold`). hold: seconds the call waits before it is sent
    (off-peak hours). body: fields added to the request body. unavailable: why it cannot take this call at all.
    """

    name: str
    lane: Literal["sync", "batch", "flex"]  # how its job is run
    price: float
    eta: float
    need: float
    hold: float = 0.0
    body: Mapping[str, Any] = field(default_factory=dict)
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class Considered:
    """A venue the `auto` lane looked at, whether it keeps the deadline, and why (for `policy explain`)."""

    venue: Venue
    fits: bool
    note: str
