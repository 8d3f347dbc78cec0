"""The one OpenAI <-> Anthropic Messages translation, shared by the sync lane and the batch lane.

Both directions are litellm's own: a batch line's `params` are the body litellm would POST to `/v1/messages`
for the same call, and a batch result's `message` becomes a ChatCompletion through
`AnthropicConfig.transform_parsed_response`, the step litellm's sync answer and its own batch results go
through. So a field is carried, mapped or dropped the same way on both lanes (docs/field-lanes.md).

The request is built by calling the steps `litellm.completion` runs for an Anthropic call directly: its input
checks, `get_optional_params`, `AnthropicConfig.validate_environment` (the `anthropic-beta` features) and
`transform_request`, and the beta filter. Going through `litellm.utils.return_raw_request` instead costs about
60 ms of CPU a line, nearly all of it in litellm's failure logging of the request it aborts; the direct steps cost
about 2 ms. A call carrying a field outside FAST_FIELDS (or a deployment param outside them or NOT_SENT_EXTRA)
still goes through `return_raw_request`, so no field takes a path litellm's parity with `completion` was not
checked on (tests/unit/test_anthropic_translation.py compares the two).

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
from proxy.providers.litellm_inputs import NOT_SENT, NOT_SENT_EXTRA, checked_inputs
from proxy.providers.upstream_body import without_unstored_metadata

PROVIDER_PREFIX = "anthropic/"
BETA_HEADER = "anthropic-beta"
# The chat fields the direct steps take as `litellm.completion` would (its named OpenAI params).
FAST_FIELDS = frozenset(
    {
        "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "logit_bias", "user", "reasoning_effort", "response_format", "seed", "tools",
        "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "thinking",
    }
)  # fmt: skip


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
    call = {key: value for key, value in without_unstored_metadata(body).items() if key not in NOT_SENT}
    extra = {key: value for key, value in extra_params.items() if key not in NOT_SENT_EXTRA}
    upstream = model.removeprefix(PROVIDER_PREFIX)
    if call.keys() <= FAST_FIELDS and extra.keys() <= FAST_FIELDS:
        return direct_request({**call, **extra}, upstream)
    return raw_request({**call, **extra_params}, upstream)


def direct_request(call: dict[str, Any], model: str) -> MessagesRequest:
    """The steps `litellm.completion` runs for an Anthropic call, called directly (see the module docstring)."""
    from litellm.anthropic_beta_headers_manager import update_request_with_filtered_beta  # noqa: PLC0415
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig  # noqa: PLC0415
    from litellm.utils import get_optional_params  # noqa: PLC0415

    try:
        messages = checked_inputs(call, model)
        config = AnthropicConfig()
        messages = config.translate_developer_role_to_system_role(messages=messages)
        optional = get_optional_params(
            model=model, custom_llm_provider="anthropic", drop_params=True, messages=messages, **call
        )
        for handler_only in ("stream", "json_mode"):  # what litellm's Anthropic handler pops before translating
            optional.pop(handler_only, None)
        optional["is_vertex_request"] = False
        headers = config.validate_environment(
            api_key="placeholder",
            headers={},
            model=model,
            messages=messages,
            optional_params=optional,
            litellm_params={},
        )
        params = config.transform_request(
            model=model, messages=messages, optional_params=optional, litellm_params={}, headers=headers
        )
        headers, params = update_request_with_filtered_beta(headers=headers, request_data=params, provider="anthropic")
    except ClaudeRefusal:
        raise
    except KeyError as exc:  # litellm indexes a field the call lacks (a json_schema response_format without one)
        raise ClaudeRefusal(f"The request does not translate for {model}: `{exc.args[0]}` is missing.") from None
    except Exception as exc:  # litellm raises many types for a call it will not translate
        raise ClaudeRefusal(public_message(str(exc), 400, None)) from None
    return _request(params, headers)


def raw_request(call: dict[str, Any], model: str) -> MessagesRequest:
    """The request `litellm.completion` builds, through `return_raw_request` (slow; see the module docstring)."""
    from litellm.types.utils import CallTypes  # noqa: PLC0415 - litellm is imported on first use
    from litellm.utils import return_raw_request  # noqa: PLC0415

    call.update(model=PROVIDER_PREFIX + model, drop_params=True)
    call.pop("api_key", None)  # return_raw_request passes its own placeholder key; ours never enters a line
    raw = return_raw_request(CallTypes.completion, call)
    params = raw.get("raw_request_body")
    if not isinstance(params, dict) or not params:
        detail = str(raw.get("error") or "the call does not translate")
        raise ClaudeRefusal(public_message(detail, 400, None))
    return _request(params, raw.get("raw_request_headers") or {})


def _request(params: dict[str, Any], headers: Any) -> MessagesRequest:
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
