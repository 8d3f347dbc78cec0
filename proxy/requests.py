"""Reading and validating a chat-completions request body before anything else touches it.

Poison never enters: a body is refused at the door (400, OpenAI's shape, naming the `param`) when it nests deeper
than MAX_DEPTH levels (orjson refuses to write more than 254, so a deeper body would fail every later step),
is not valid UTF-8 (orjson refuses lone surrogates on reading), or a field OpenAI documents has the wrong type
(`openai.types.chat.completion_create_params`). A deferred call's body must also make a batch line its
provider takes (`check_batch_line`): one that could not would fail in a worker, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from proxy.endpoints import Endpoint, queue_group
from proxy.errors import InvalidRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from proxy.providers.base import ProviderError
from proxy.providers.registry import encode_batch_line
from proxy.settings import Config
from proxy.store.keys import new_job_id

MAX_DEPTH = 64  # levels of objects and arrays, the body itself being the first
SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_logprobs")
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens")
_TYPED_FIELDS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("logprobs", bool, "a boolean"),
    ("parallel_tool_calls", bool, "a boolean"),
    ("store", bool, "a boolean"),
    ("user", str, "a string"),
    ("prompt_cache_key", str, "a string"),
    ("safety_identifier", str, "a string"),
    ("reasoning_effort", str, "a string"),
    ("verbosity", str, "a string"),
    ("response_format", dict, "an object"),
    ("stream_options", dict, "an object"),
    ("logit_bias", dict, "an object"),
    ("audio", dict, "an object"),
    ("prediction", dict, "an object"),
    ("web_search_options", dict, "an object"),
    ("tools", list, "an array"),
    ("functions", list, "an array"),
    ("modalities", list, "an array"),
    ("tool_choice", (str, dict), "a string or an object"),
    ("stop", (str, list), "a string or an array of strings"),
)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated call body; `endpoint` says which endpoint it was sent to (chat unless stated)."""

    body: dict[str, Any]
    model: str
    stream: bool
    size: int
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS

    @property
    def group(self) -> str:
        """Its queue group: the model's name for chat, `<model>#<endpoint>` else (proxy/endpoints.py)."""
        return queue_group(self.model, self.endpoint)

    @property
    def metadata(self) -> dict[str, str]:
        raw = self.body.get("metadata")
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    @property
    def user(self) -> str | None:
        user = self.body.get("user")
        return user if isinstance(user, str) else None

    @property
    def prompt_tokens_estimate(self) -> int:
        """About four bytes a token: cheap, and good enough to route on."""
        return self.size // 4


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body as it streams in; `PayloadTooLarge` (413) as soon as it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_body(request: Request, max_bytes: int) -> tuple[Any, int]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            "Unsupported content type: send the request body as JSON with 'Content-Type: application/json'."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    raw = await read_body(request, max_bytes)
    try:
        return orjson.loads(raw), len(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object of valid UTF-8 "
            f"text, nested at most {MAX_DEPTH} levels deep.",
            code="invalid_json",
        ) from None


def body_and_model(payload: Any) -> tuple[dict[str, Any], str]:
    """The body as a JSON object (nesting checked) and its `model` string; InvalidRequest otherwise. The first
    checks of every endpoint's body (chat, embeddings, Responses)."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    check_depth(payload)
    model = payload.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise InvalidRequest("model must be a string", param="model", code="invalid_type")
    return payload, model


def check_model_served(model: str, config: Config) -> None:
    """NotFound (`model_not_found`, as OpenAI answers) unless `config` has a deployment for `model`."""
    if config.deployment(model) is None:
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


def parse_chat_request(payload: Any, size: int, config: Config) -> ChatRequest:
    """A chat-completions body (`payload`, parsed JSON; `size`: its bytes) checked as OpenAI checks it before any
    lane takes it: InvalidRequest (400) for a body that is not an object, a missing or malformed `messages`, or a
    field of the wrong type or range; NotFound (404, `model_not_found`) for a model `config` does not serve."""
    payload, model = body_and_model(payload)
    _check_messages(payload.get("messages"))
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream", code="invalid_type")
    _check_scalars(payload)
    check_model_served(model, config)
    return ChatRequest(body=payload, model=model, stream=bool(stream), size=size)


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest(
            "you must provide a messages parameter", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages", code="invalid_type")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{index}] must be an object with a string 'role'",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"messages[{index}].content must be a string or an array",
                param=f"messages[{index}].content",
                code="invalid_type",
            )


def _check_scalars(payload: dict[str, Any]) -> None:
    for name in _NUMBER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"{name} must be a number", param=name, code="invalid_type")
    for name in _INTEGER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"{name} must be an integer", param=name, code="invalid_type")
    for name in _OUTPUT_CAPS:  # refused now, as OpenAI does, rather than accepted and failed in a batch later
        value = payload.get(name)
        if isinstance(value, int) and value < 1:
            raise InvalidRequest(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
    for name, kind, shown in _TYPED_FIELDS:
        value = payload.get(name)
        if value is not None and not isinstance(value, kind):
            raise InvalidRequest(f"{name} must be {shown}", param=name, code="invalid_type")
    stop = payload.get("stop")
    if isinstance(stop, list) and not all(isinstance(item, str) for item in stop):
        raise InvalidRequest("stop must be a string or an array of strings", param="stop", code="invalid_type")
    tier = payload.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise InvalidRequest(
            f"service_tier must be one of {', '.join(sorted(SERVICE_TIERS))}",
            param="service_tier",
            code="invalid_value",
        )
    check_metadata(payload.get("metadata"))


def check_metadata(metadata: Any) -> None:
    """OpenAI's `metadata`: an object of at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be an object", param="metadata", code="invalid_type")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata takes at most {MAX_METADATA_PAIRS} pairs", param="metadata", code="invalid_value"
        )
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise InvalidRequest(f"metadata values must be strings ({key!r})", param="metadata", code="invalid_type")
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata keys are at most {MAX_METADATA_KEY} characters and values at most "
                f"{MAX_METADATA_VALUE} ({key[:MAX_METADATA_KEY]!r})",
                param="metadata",
                code="invalid_value",
            )


def check_depth(payload: dict[str, Any]) -> None:
    """Refuse a body nested deeper than MAX_DEPTH levels, naming the top-level field that goes too deep."""
    for name, value in payload.items():
        if isinstance(value, dict | list) and _deeper_than(value, MAX_DEPTH - 1):
            raise InvalidRequest(
                f"{name} is nested too deeply: a request body may nest objects and arrays at most {MAX_DEPTH} "
                "levels deep",
                param=name,
                code="invalid_value",
            )


def _deeper_than(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether `value` (one level itself) nests more than `limit` levels of objects and arrays."""
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                pending.append((child, depth + 1))
    return False


def check_batch_line(chat: ChatRequest, config: Config) -> None:
    """A deferred call's body must make a batch line its model's provider takes: one that encodes, within the
    provider's byte limit and the model's `batching.max_bytes` (the line has to fit in one batch). Nothing to
    check for a model with no batch lane. Raises InvalidRequest naming the param (the largest field)."""
    deployment = config.deployment(chat.model)
    if deployment is None:
        return
    try:
        encoded = encode_batch_line(deployment, chat.body, custom_id=new_job_id(chat.group), endpoint=chat.endpoint)
    except ProviderError as exc:
        raise InvalidRequest(exc.message, param=_largest_field(chat.body), code="invalid_batch_line") from None
    if encoded is None:
        return
    line, provider_limit = encoded
    limit = min(provider_limit, config.batch_knobs(chat.model).max_bytes)
    if len(line) > limit:
        raise InvalidRequest(
            f"This request makes a batch line of {len(line)} bytes; a batch line of model `{chat.model}` may be "
            f"at most {limit} bytes. Send it without X-Batch-Deadline (synchronously), or make it smaller.",
            param=_largest_field(chat.body),
            code="request_too_large",
        )


def _largest_field(body: Mapping[str, Any]) -> str | None:
    """The top-level field that weighs most once encoded (a field that cannot be encoded weighs most)."""
    sizes: dict[str, float] = {}
    for name, value in body.items():
        try:
            sizes[name] = len(orjson.dumps(value))
        except TypeError:
            sizes[name] = float("inf")
    return max(sizes, key=sizes.__getitem__, default=None)
