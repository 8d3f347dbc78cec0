"""The upstream answer's headers that reach the caller: its request id, its rate-limit state and retry hints.

Passed as the upstream sent them: `x-request-id`, `x-ratelimit-*`, `retry-after`, `retry-after-ms` and
`openai-processing-ms`. batchgate's own request id travels separately, as `x-batchgate-request-id` (logs.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

REQUEST_ID = "x-request-id"
EXACT = frozenset({REQUEST_ID, "retry-after", "retry-after-ms", "openai-processing-ms"})
PREFIXES = ("x-ratelimit-",)
LITELLM_RAW_PREFIX = "llm_provider-"  # litellm's name for a raw provider header
NATIVE_REQUEST_IDS = ("request-id", "llm_provider-request-id")  # Anthropic's `request-id`, as litellm keeps it


def is_passed(name: str) -> bool:
    lowered = name.lower()
    return lowered in EXACT or lowered.startswith(PREFIXES)


def passed_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The passed headers among (name, value) pairs, names lowercased."""
    return {name.lower(): value for name, value in headers if is_passed(name)}


def from_litellm(additional: Mapping[str, Any] | None) -> dict[str, str]:
    """The passed headers from litellm's `_hidden_params["additional_headers"]` (or an exception's raw
    `litellm_response_headers`): OpenAI-named rate limits (litellm maps Anthropic's request and token limits to
    them), raw provider headers under `llm_provider-`, and a provider's own request id (`request-id`) as
    `x-request-id`."""
    if not additional:
        return {}
    found: dict[str, str] = {}
    for name, value in additional.items():
        lowered = str(name).lower()
        raw = lowered.removeprefix(LITELLM_RAW_PREFIX)
        if is_passed(raw) and value is not None:
            found.setdefault(raw, str(value))
    if REQUEST_ID not in found:
        native = next((additional[name] for name in NATIVE_REQUEST_IDS if additional.get(name)), None)
        if native is not None:
            found[REQUEST_ID] = str(native)
    return found
