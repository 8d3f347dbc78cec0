"""Which Responses API calls the batch lane cannot honour (pure, no I/O).

A batch line is answered hours later, by itself, with nothing kept on the provider's side (OpenAI does not
store batch responses for later retrieval). A call that depends on state on the provider's side at the moment
of the call, or that asks for such state to be kept, is therefore answered synchronously, and the decision
header and `batchgate policy explain --endpoint responses --body ...` say which field kept it there:

- `previous_response_id` and `conversation`: a chain on stored responses / a stored conversation, which must be
  read (and extended) now, in order;
- `background: true`: the provider's own deferred mode, polled by the caller at the provider;
- `store: true`: the caller wants to GET / cancel / delete the response at the provider afterwards (an unset
  `store` defers: the deferred job is the caller's handle, kept by batchgate);
- tools that run on the provider's side against live state or the caller's own loop (hosted search, file
  search, code interpreter containers, computer use, remote MCP servers, image generation): batchgate's
  conservative reading of what a batch line can carry; function and custom tools run on the caller's side and
  defer.
(`stream: true` is kept synchronous by the policy itself, as for chat.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROVIDER_SIDE_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer_use",
        "mcp",
        "image_generation",
    }
)


def responses_blocker(body: Mapping[str, Any]) -> str | None:
    """The field of a Responses body that keeps it off the batch lane, and why; None when it can be deferred."""
    if body.get("previous_response_id") is not None:
        return "`previous_response_id` (a chain on a response stored at the provider, read at the call)"
    if body.get("conversation") is not None:
        return "`conversation` (a conversation stored at the provider, read and extended at the call)"
    if body.get("background") is True:
        return "`background: true` (the provider's own background mode, polled at the provider)"
    if body.get("store") is True:
        return "`store: true` (batch responses are not stored for retrieval at the provider)"
    tools = body.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind in PROVIDER_SIDE_TOOLS:
            return f"tools[{index}] of type `{kind}` (a tool that runs on the provider's side at the call)"
    return None
