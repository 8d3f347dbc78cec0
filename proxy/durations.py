"""Durations ("90s", "10m", "4h", "7d", "1h30m") and instants (RFC 3339) as the config and headers write them."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", re.ASCII)
_NUMBER = re.compile(r"[+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?", re.ASCII)
MAX_TEXT = 64  # characters of a duration or instant; anything longer is not one
MAX_DURATION = 100 * 365 * 86400.0  # seconds: a century, far past any deadline, window or range batchgate keeps


class DurationOutOfRange(ValueError):
    """A well-formed duration longer than the bound (or infinite)."""


def parse_duration(text: str | float | int, *, maximum: float = MAX_DURATION) -> float:
    """Seconds in a duration string; a bare number is seconds. Only ASCII digits count, the text is at most
    MAX_TEXT characters, and the result is finite, non-negative and at most `maximum` seconds.
    Raises DurationOutOfRange (a ValueError) past `maximum`, ValueError on anything else (never OverflowError)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return _bounded(float(text), maximum, text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 90s, 10m, 4h or 7d, got {text!r}")
    if len(text) > MAX_TEXT:
        raise ValueError(f"a duration is at most {MAX_TEXT} characters, got {len(text)}")
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("expected a duration such as 90s, 10m, 4h or 7d, got an empty string")
    if compact.startswith("-") and _NUMBER.fullmatch(compact[1:]):
        raise ValueError(f"a duration cannot be negative: {text!r}")
    if _NUMBER.fullmatch(compact):
        return _bounded(float(compact), maximum, text)
    position, total = 0, 0.0
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(compact) or position == 0:
        raise ValueError(f"expected a duration such as 90s, 10m, 4h or 7d, got {text!r}")
    return _bounded(total, maximum, text)


def _bounded(seconds: float, maximum: float, shown: object) -> float:
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {shown!r}")
    if not math.isfinite(seconds) or seconds > maximum:
        raise DurationOutOfRange(f"a duration may be at most {maximum:g} seconds: {shown!r}")
    return seconds


def parse_instant(text: str) -> datetime:
    """An RFC 3339 time with an offset (or Z), as an aware UTC datetime (years 1 to 9999 in UTC). Raises
    ValueError otherwise."""
    if len(text) > MAX_TEXT or not text.isascii():
        raise ValueError(f"not an RFC 3339 time: {text[:MAX_TEXT]!r}")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    moment = datetime.fromisoformat(candidate)
    if moment.tzinfo is None:
        raise ValueError(f"an RFC 3339 time needs an offset or Z: {text!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 once in UTC") from None


def format_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_duration(seconds: float) -> str:
    """4h, 1h30m, 90s, 2d3h: the largest two units, rounded down to the second."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])
