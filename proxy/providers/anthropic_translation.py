"""The one OpenAI <-> Anthropic Messages translation, shared by the sync lane and the batch lane.

Both directions are litellm's own: a batch line's `params` are the body litellm would POST to `/v1/messages`
for the same call (`litellm.utils.return_raw_request` runs `litellm.completion`'s whole request pipeline and
stops before the network), and a batch result's `message` becomes a ChatCompletion through
`AnthropicConfig.transform_parsed_response`, the step litellm's sync answer and its own batch results go
through. So a field is carried, mapped or dropped the same way on both lanes (docs/field-lanes.md).

On top of litellm, Claude's rules (claude_rules.py) are asked first on both lanes. Empty text blocks are never
sent: litellm leaves them out, and an empty assistant text beside tool calls becomes litellm's placeholder text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from proxy.providers.claude_rules import ClaudeRefusal, refusal
from proxy.providers.litellm_completion import import_litellm, public_message
from proxy.providers.upstream_body import without_unstored_metadata

PROVIDER_PREFIX = "anthropic/"
BETA_HEADER = "anthropic-beta"
# Never sent upstream by either lane: batchgate's own keys and the stream switches (a batch line is one answer).
NOT_SENT = frozenset({"model", "stream", "stream_options"})


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A translated call: the Messages `params` and the `anthropic-beta` features they need (may be empty)."""

    params: dict[str, Any]
    betas: frozenset[str]


def messages_request(body: Mapping[str, Any], *, model: str, extra_params: Mapping[str, Any]) -> MessagesRequest:
    """The Messages request litellm sends for the OpenAI chat `body` on upstream `model` (no `anthropic/`
    prefix needed); `extra_params` are the deployment's litellm params the sync lane passes too. Blocking
    (CPU only, no network). Raises ClaudeRefusal when Claude's rules or litellm refuse the call."""
    problem = refusal(body, model)
    if problem is not None:
        raise problem
    import_litellm()
    from litellm.types.utils import CallTypes  # noqa: PLC0415 - litellm is imported on first use
    from litellm.utils import return_raw_request  # noqa: PLC0415

    call = {key: value for key, value in without_unstored_metadata(body).items() if key not in NOT_SENT}
    call.update(extra_params)
    call.update(model=PROVIDER_PREFIX + model.removeprefix(PROVIDER_PREFIX), drop_params=True)
    call.pop("api_key", None)  # return_raw_request passes its own placeholder key; ours never enters a line
    raw = return_raw_request(CallTypes.completion, call)
    params = raw.get("raw_request_body")
    if not isinstance(params, dict) or not params:
        detail = str(raw.get("error") or "the call does not translate")
        raise ClaudeRefusal(public_message(detail, 400, None))
    headers = raw.get("raw_request_headers") or {}
    beta = str(headers.get(BETA_HEADER, "")) if isinstance(headers, Mapping) else ""
    return MessagesRequest(params, frozenset(item.strip() for item in beta.split(",") if item.strip()))


def chat_completion(message: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI `chat.completion` litellm makes of an Anthropic `message` object, as the sync lane dumps
    it. JSON mode is on, as litellm sets it for a `response_format` call: it only turns litellm's own
    response-format tool call back into the answer's content."""
    import_litellm()
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig  # noqa: PLC0415
    from litellm.types.utils import ModelResponse  # noqa: PLC0415

    raw = httpx.Response(200, content=orjson.dumps(message), headers={"content-type": "application/json"})
    response = AnthropicConfig().transform_parsed_response(
        completion_response=dict(message), raw_response=raw, model_response=ModelResponse(), json_mode=True
    )
    dumped: dict[str, Any] = orjson.loads(orjson.dumps(response.model_dump(exclude_none=False), default=str))
    return dumped
