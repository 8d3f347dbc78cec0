"""Lenient reading of provider objects: the field readers both batch adapters parse with.

Real providers spell the same thing differently (Azure `"Validating"` and ISO timestamps with 7 fractional digits,
Together `IN_PROGRESS`, counts that are null or absent), so each reader takes what it can and answers None for
what it cannot; an object that cannot be read at all is a `malformed` ProviderError, never a KeyError escaping an
adapter.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from proxy.providers.base import BatchState, ErrorClass, ProviderError

log = logging.getLogger("batchgate.providers")

MALFORMED_CODE = "malformed_response"
ISO_FRACTION = re.compile(r"(\.\d{6})\d+")  # Python 3.11's fromisoformat takes at most 6 fractional digits
UNKNOWN_STATUSES_LOGGED = 256


def malformed(what: str, value: Any) -> ProviderError:
    """A provider object that cannot be read at all: TRANSIENT (look again later; the deadline guard answers the
    jobs in time if it never becomes readable), code `malformed_response`."""
    shown = repr(value)
    shown = shown if len(shown) <= 200 else shown[:200] + "…"
    return ProviderError(
        None, f"unreadable {what} from the provider: {shown}", code=MALFORMED_CODE, classification=ErrorClass.TRANSIENT
    )


def text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def identifier(value: Any) -> str | None:
    """An id as providers send it: a non-empty string (or an integer, as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(value)


def count(value: Any) -> int | None:
    """A non-negative count from an int, an integral float or a numeric string; None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    return None


def timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch seconds (int, float or numeric string) or ISO 8601 text (any number of fractional
    digits, `Z` or an offset; no offset means UTC); None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch(float(value))
    if not isinstance(value, str) or not value.strip():
        return None
    raw = value.strip()
    try:
        return _epoch(float(raw))
    except ValueError:
        return _iso(raw)


def _epoch(number: float) -> float | None:
    return number if math.isfinite(number) and number >= 0 else None


def _iso(raw: str) -> float | None:
    try:
        moment = datetime.fromisoformat(ISO_FRACTION.sub(r"\1", raw.replace("Z", "+00:00").replace("z", "+00:00")))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def status_key(value: Any) -> str | None:
    """A status folded for lookup: `InProgress`, `in_progress`, `IN_PROGRESS` and `in-progress` are one key."""
    if not isinstance(value, str):
        return None
    return "".join(char for char in value.casefold() if char.isalnum()) or None


def batch_state(value: Any, known: Mapping[str, BatchState]) -> BatchState:
    """The state a status names (`known` is keyed by `status_key`); an unknown or missing status is a batch still
    running, logged once per status value per process."""
    key = status_key(value)
    state = known.get(key) if key is not None else None
    if state is None:
        _unknown_status(value if isinstance(value, str) else repr(value))
        return BatchState.IN_PROGRESS
    return state


@functools.lru_cache(maxsize=UNKNOWN_STATUSES_LOGGED)
def _unknown_status(value: str) -> None:
    log.warning("unknown provider batch status %r: taken as still running", value, extra={"status": value})


def skipped_line(why: str, raw: str | bytes) -> None:
    """Log a result line that cannot be joined to a job (it is skipped)."""
    preview = raw[:200] if isinstance(raw, str) else raw[:200].decode(errors="replace")
    log.warning("skipping an unreadable batch result line (%s): %r", why, preview, extra={"reason": why})


def string_pairs(value: Any) -> dict[str, str]:
    """The string-to-string pairs of a mapping (metadata); anything else is dropped."""
    if not isinstance(value, dict):
        return {}
    return {key: item for key, item in value.items() if isinstance(key, str) and isinstance(item, str)}


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
