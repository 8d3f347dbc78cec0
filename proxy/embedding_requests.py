"""Reading and validating a `/v1/embeddings` body (OpenAI's CreateEmbeddingRequest) before anything else
touches it: 400 in OpenAI's shape naming the `param`, like chat bodies (`proxy/requests.py`).

`input` is kept exactly as sent (a string, an array of strings, of token ids or of token-id arrays, at most
2,048 items); the provider counts its tokens.
"""

from __future__ import annotations

from typing import Any

from proxy.endpoints import Endpoint
from proxy.errors import InvalidRequest
from proxy.requests import ChatRequest, body_and_model, check_metadata, check_model_served
from proxy.settings import Config

MAX_INPUTS = 2048
ENCODING_FORMATS = frozenset({"float", "base64"})


def parse_embeddings_request(payload: Any, size: int, config: Config) -> ChatRequest:
    """The validated call (`endpoint` EMBEDDINGS, never streamed). Raises InvalidRequest / NotFound (model)."""
    payload, model = body_and_model(payload)
    check_input(payload.get("input"))
    _check_options(payload)
    check_metadata(payload.get("metadata"))
    check_model_served(model, config)
    return ChatRequest(body=payload, model=model, stream=False, size=size, endpoint=Endpoint.EMBEDDINGS)


def check_input(value: Any) -> None:
    """OpenAI's four shapes of `input`: a non-empty string, or 1..2048 items all strings, all token ids, or all
    non-empty arrays of token ids."""
    if value is None:
        raise InvalidRequest("you must provide an input parameter", param="input", code="missing_required_parameter")
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' cannot be an empty string.", param="input", code="invalid_value")
        return
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of strings or token ids.", param="input", code="invalid_type"
        )
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' may hold at most {MAX_INPUTS} items; it holds {len(value)}.", param="input", code="invalid_value"
        )
    if all(isinstance(item, str) and item for item in value) or all(_token(item) for item in value):
        return
    if all(isinstance(item, list) and item and all(_token(token) for token in item) for item in value):
        return
    raise InvalidRequest(
        "'input' must be a string, an array of non-empty strings, an array of token ids, or an array of non-empty "
        "arrays of token ids.",
        param="input",
        code="invalid_type",
    )


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_options(payload: dict[str, Any]) -> None:
    encoding = payload.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        raise InvalidRequest(
            "encoding_format must be 'float' or 'base64'", param="encoding_format", code="invalid_value"
        )
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not _token(dimensions) or dimensions < 1):
        raise InvalidRequest("dimensions must be an integer of at least 1", param="dimensions", code="invalid_value")
    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("user must be a string", param="user", code="invalid_type")
    if payload.get("stream"):
        raise InvalidRequest("Embeddings cannot be streamed.", param="stream", code="invalid_value")
