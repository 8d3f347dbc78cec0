"""The `Prefer` request header (RFC 7240): `respond-async` and `wait=N`, and the `Preference-Applied` answer."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import InvalidRequest

PREFER_HEADER = "prefer"
PREFER_PARAM = "Prefer"
APPLIED_HEADER = "Preference-Applied"
MAX_DELTA_SECONDS = 2_147_483_648  # RFC 9111 §1.2.2: the largest delta-seconds a recipient must hold
MAX_WAIT_DIGITS = len(str(MAX_DELTA_SECONDS))  # more significant digits than this is larger anyway


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

    `wait` must be delta-seconds: ASCII digits (optionally quoted), at most MAX_DELTA_SECONDS; callers then cap
    it at `delivery.max_wait`. Raises InvalidRequest (400, param "Prefer", code "invalid_prefer") for a malformed
    (`wait=²`, `wait=-1`, `wait=1.5`, `wait=`) or larger `wait`, so a caller's typo is not silently read as
    "no wait". Preferences batchgate does not know are ignored (RFC 7240 §2).
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
            if name == "respond-async":
                respond_async = True
            elif name == "wait":
                wait = _delta_seconds(_unquoted(token.strip()))
    return Preferences(respond_async=respond_async, wait=wait)


def _unquoted(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def _delta_seconds(digits: str) -> float:
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidRequest(
            "Prefer: wait must be a whole number of seconds written in ASCII digits (e.g. wait=30).",
            param=PREFER_PARAM, code="invalid_prefer",
        )  # fmt: skip
    significant = digits.lstrip("0")
    if len(significant) > MAX_WAIT_DIGITS or int(significant or "0") > MAX_DELTA_SECONDS:
        raise InvalidRequest(
            f"Prefer: wait may be at most {MAX_DELTA_SECONDS} seconds (it is then capped at delivery.max_wait).",
            param=PREFER_PARAM, code="invalid_prefer",
        )  # fmt: skip
    return float(int(significant or "0"))


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
