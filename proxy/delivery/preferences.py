"""The `Prefer` request header (RFC 7240): `respond-async` and `wait=N`, and the `Preference-Applied` answer."""

from __future__ import annotations

from dataclasses import dataclass

PREFER_HEADER = "prefer"
APPLIED_HEADER = "Preference-Applied"
MAX_DELTA_SECONDS = 2_147_483_648  # RFC 9111 §1.2.2: a larger delta-seconds is read as this
MAX_WAIT_DIGITS = len(str(MAX_DELTA_SECONDS))  # more digits than this is larger anyway


@dataclass(frozen=True, slots=True)
class Preferences:
    """What the caller prefers. `wait` is seconds (None: not asked); unknown preferences are ignored (RFC 7240 §2)."""

    respond_async: bool = False
    wait: float | None = None

    @property
    def stated(self) -> bool:
        return self.respond_async or self.wait is not None


def parse_prefer(values: list[str]) -> Preferences:
    """Every `Prefer` header line, comma-separated preferences each; the first occurrence of a name wins (§2).

    `wait` must be a non-negative integer of ASCII digits (delta-seconds); a larger one than MAX_DELTA_SECONDS
    counts as that (RFC 9111 §1.2.2), and callers clamp it to `delivery.max_wait`. A malformed value (`wait=²`,
    `wait=-1`) is ignored, as RFC 7240 asks of preferences a server does not understand, rather than refusing
    the call.
    """
    respond_async = False
    wait: float | None = None
    seen: set[str] = set()
    for value in values:
        for item in _split_outside_quotes(value, ","):
            name, _, token = item.split(";", 1)[0].partition("=")
            name = name.strip().lower()
            if not name or name in seen:
                continue
            seen.add(name)
            token = token.strip().strip('"')
            if name == "respond-async":
                respond_async = True
            elif name == "wait" and token.isascii() and token.isdigit():
                wait = _delta_seconds(token)
    return Preferences(respond_async=respond_async, wait=wait)


def _delta_seconds(digits: str) -> float:
    significant = digits.lstrip("0")
    if len(significant) > MAX_WAIT_DIGITS:
        return float(MAX_DELTA_SECONDS)
    return float(min(int(significant or "0"), MAX_DELTA_SECONDS))


def applied(*, respond_async: bool = False, wait: float | None = None) -> dict[str, str]:
    """The `Preference-Applied` header for what was honoured (empty when nothing was)."""
    parts = []
    if respond_async:
        parts.append("respond-async")
    if wait is not None:
        parts.append(f"wait={int(wait)}")
    return {APPLIED_HEADER: ", ".join(parts)} if parts else {}


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]
