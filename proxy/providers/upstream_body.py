"""What of a caller's chat-completions body goes upstream, on every path (fast, litellm, batch line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def without_unstored_metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The body without `metadata` unless it sets `store: true`, and the same mapping when nothing is dropped.

    batchgate reads a caller's `metadata` for policy matching; OpenAI refuses it without `store: true` (a 400,
    and inside a batch line a failed line), so a rule keyed on metadata must not turn into provider errors.
    """
    if "metadata" in body and body.get("store") is not True:
        return {key: value for key, value in body.items() if key != "metadata"}
    return body
