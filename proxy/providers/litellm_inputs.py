"""The input steps `litellm.completion` runs on an OpenAI chat call before any provider's translation, shared by
the translations that call litellm's steps directly (anthropic_translation.py, gemini_translation.py)."""

from __future__ import annotations

import copy
from typing import Any

# Never sent upstream by any lane: batchgate's own keys and the stream switches (a batch line is one answer).
NOT_SENT = frozenset({"model", "stream", "stream_options"})
# Deployment params that are litellm's own settings, never part of the translated request.
NOT_SENT_EXTRA = frozenset(
    {"api_base", "api_key", "api_version", "timeout", "stream_timeout", "max_retries", "rpm", "tpm"}
)


def checked_inputs(call: dict[str, Any], model: str) -> list[Any]:
    """The call's messages as litellm checks and fixes them; `tools`, `tool_choice` and `stop` are checked and
    replaced in `call` (the messages are taken out of it). Raises what litellm raises for a call it refuses.
    litellm must be imported (import_litellm)."""
    from litellm.utils import (  # noqa: PLC0415 - litellm is imported on first use
        validate_and_fix_openai_messages,
        validate_and_fix_openai_tools,
        validate_chat_completion_tool_choice,
        validate_openai_optional_params,
    )

    messages: list[Any] = validate_and_fix_openai_messages(messages=copy.deepcopy(call.pop("messages", None) or []))
    if "tools" in call:
        call["tools"] = validate_and_fix_openai_tools(tools=call["tools"])
    if "tool_choice" in call:
        call["tool_choice"] = validate_chat_completion_tool_choice(tool_choice=call["tool_choice"], model=model)
    if "stop" in call:
        call["stop"] = validate_openai_optional_params(stop=call["stop"])
    return messages
