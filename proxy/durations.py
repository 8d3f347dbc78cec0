"""Durations ("90s", "10m", "4h", "7d", "1h30m") and instants (RFC 3339) as the config and headers write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration string; a bare number is seconds. Raises ValueError on anything else."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 90s, 10m, 4h or 7d, got {text!r}")
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("expected a duration such as 90s, 10m, 4h or 7d, got an empty string")
    try:
        return float(compact) if float(compact) >= 0 else _reject(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(compact) or position == 0:
        raise ValueError(f"expected a duration such as 90s, 10m, 4h or 7d, got {text!r}")
    return total


def _reject(text: str) -> float:
    raise ValueError(f"a duration cannot be negative: {text!r}")


def parse_instant(text: str) -> datetime:
    """An RFC 3339 time with an offset (or Z), as an aware UTC datetime. Raises ValueError otherwise."""
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    moment = datetime.fromisoformat(candidate)
    if moment.tzinfo is None:
        raise ValueError(f"an RFC 3339 time needs an offset or Z: {text!r}")
    return moment.astimezone(UTC)


def format_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
