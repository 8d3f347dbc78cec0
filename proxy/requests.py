"""Reading and validating a chat-completions request body before anything else touches it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from proxy.errors import InvalidRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from proxy.settings import Config

_NUMBER_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    size: int

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


async def read_json_body(request: Request, max_bytes: int) -> tuple[Any, int]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            "Unsupported content type: send the request body as JSON with 'Content-Type: application/json'."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return orjson.loads(raw), size
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None


def parse_chat_request(payload: Any, size: int, config: Config) -> ChatRequest:
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    model = payload.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise InvalidRequest("model must be a string", param="model", code="invalid_type")
    _check_messages(payload.get("messages"))
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream", code="invalid_type")
    _check_scalars(payload)
    if config.deployment(model) is None:
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
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


def _check_scalars(payload: dict[str, Any]) -> None:
    for name in _NUMBER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"{name} must be a number", param=name, code="invalid_type")
    for name in _INTEGER_FIELDS:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"{name} must be an integer", param=name, code="invalid_type")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be an object", param="metadata", code="invalid_type")
