"""The one OpenAI <-> Gemini `generateContent` translation, shared by the sync lane and the batch lane.

Both directions are litellm's own. A batch request is the body litellm POSTs to `models/{m}:generateContent`
for the same call: the steps `litellm.completion` runs for a `gemini/...` model (its input checks,
`get_optional_params(custom_llm_provider="gemini")` and `transform_request_body`) are called directly, which
costs about a millisecond a line; a call carrying a field outside FAST_FIELDS goes through
`litellm.utils.return_raw_request` instead (slow, but exactly what `completion` would send). A batch result's
GenerateContentResponse becomes a ChatCompletion through `VertexGeminiConfig`'s response transformation, the
step litellm's sync answer goes through. tests/unit/test_gemini_translation.py compares the two request paths.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from proxy.providers.litellm_completion import import_litellm, public_message
from proxy.providers.litellm_inputs import NOT_SENT, NOT_SENT_EXTRA, checked_inputs
from proxy.providers.upstream_body import without_unstored_metadata

PROVIDER_PREFIX = "gemini/"
# The chat fields the direct steps take as `litellm.completion` would (its named OpenAI params).
FAST_FIELDS = frozenset(
    {
        "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "user", "reasoning_effort", "response_format", "seed", "tools", "tool_choice",
        "parallel_tool_calls", "logprobs", "top_logprobs",
    }
)  # fmt: skip


class GeminiRefusal(ValueError):
    """litellm will not translate the call for Gemini (`str()` is a message fit for the caller)."""


def generate_request(
    body: Mapping[str, Any], *, model: str, extra_params: Mapping[str, Any], provider: str = "gemini"
) -> dict[str, Any]:
    """The GenerateContentRequest litellm sends for the OpenAI chat `body` on upstream `model` (with or without
    the `<provider>/` prefix); `extra_params` are the deployment's litellm params the sync lane passes too;
    `provider` is litellm's (`gemini`, or `vertex_ai` for Vertex AI's Gemini models).
    Blocking (CPU only, no network). Raises GeminiRefusal when litellm refuses the call."""
    import_litellm()
    call = {key: value for key, value in without_unstored_metadata(body).items() if key not in NOT_SENT}
    extra = {key: value for key, value in extra_params.items() if key not in NOT_SENT_EXTRA}
    upstream = model.removeprefix(f"{provider}/")
    if call.keys() <= FAST_FIELDS and extra.keys() <= FAST_FIELDS:
        return direct_request({**call, **extra}, upstream, provider=provider)
    return raw_request({**call, **extra}, upstream, provider=provider)


def direct_request(call: dict[str, Any], model: str, *, provider: str = "gemini") -> dict[str, Any]:
    """The steps `litellm.completion` runs for a Gemini call, called directly (see the module docstring)."""
    from litellm.llms.vertex_ai.gemini.transformation import transform_request_body  # noqa: PLC0415
    from litellm.utils import get_optional_params  # noqa: PLC0415

    try:
        messages = checked_inputs(call, model)
        optional = get_optional_params(
            model=model, custom_llm_provider=provider, drop_params=True, messages=messages, **call
        )
        optional.pop("stream", None)  # what litellm's Gemini handler pops before translating
        request: dict[str, Any] = dict(
            transform_request_body(
                messages=messages,
                model=model,
                optional_params=optional,
                custom_llm_provider=provider,  # type: ignore[arg-type]
                litellm_params={},
                cached_content=None,
            )
        )
    except KeyError as exc:  # litellm indexes a field the call lacks
        raise GeminiRefusal(f"The request does not translate for {model}: `{exc.args[0]}` is missing.") from None
    except Exception as exc:  # litellm raises many types for a call it will not translate
        raise GeminiRefusal(public_message(str(exc), 400, None)) from None
    return _plain(request)


def raw_request(call: dict[str, Any], model: str, *, provider: str = "gemini") -> dict[str, Any]:
    """The request `litellm.completion` builds, through `return_raw_request` (slow; see the module docstring)."""
    from litellm.types.utils import CallTypes  # noqa: PLC0415 - litellm is imported on first use
    from litellm.utils import return_raw_request  # noqa: PLC0415

    call.update(model=f"{provider}/{model}", drop_params=True)
    raw = return_raw_request(CallTypes.completion, call)
    params = raw.get("raw_request_body")
    if not isinstance(params, dict) or not params:
        detail = str(raw.get("error") or "the call does not translate")
        raise GeminiRefusal(public_message(detail, 400, None))
    return _plain(params)


def _plain(request: Mapping[str, Any]) -> dict[str, Any]:
    """litellm's TypedDicts and pydantic parts as plain JSON values."""
    plain: dict[str, Any] = orjson.loads(orjson.dumps(request, default=_dump))
    return plain


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    raise TypeError(f"{type(value).__name__} is not JSON")


def chat_completion(response: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """The OpenAI `chat.completion` litellm makes of a Gemini GenerateContentResponse, as the sync lane dumps
    it (`model` names the upstream model when the response carries no `modelVersion`)."""
    import_litellm()
    from litellm.litellm_core_utils.litellm_logging import Logging  # noqa: PLC0415
    from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import VertexGeminiConfig  # noqa: PLC0415
    from litellm.types.utils import ModelResponse  # noqa: PLC0415

    upstream = model.removeprefix(PROVIDER_PREFIX)
    logging_obj = Logging(
        model=upstream,
        messages=[],
        stream=False,
        call_type="completion",
        start_time=datetime.datetime.now(tz=datetime.UTC),
        litellm_call_id="batch",
        function_id="batch",
    )
    logging_obj.optional_params = {}  # the response transformation reads the call's params from the logger
    raw = httpx.Response(200, content=orjson.dumps(response), headers={"content-type": "application/json"})
    converted: Any = VertexGeminiConfig().transform_google_generate_content_to_openai_model_response(
        completion_response=dict(response),
        model_response=ModelResponse(),
        model=upstream,
        logging_obj=logging_obj,
        raw_response=raw,
    )
    dumped: dict[str, Any] = orjson.loads(orjson.dumps(converted.model_dump(exclude_none=False), default=str))
    return dumped
