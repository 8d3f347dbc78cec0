"""Reading and validating a `/v1/responses` body (OpenAI's CreateResponse) before anything else touches it: 400
in OpenAI's shape naming the `param`, like chat and embeddings bodies (`proxy/requests.py`).

Only what batchgate itself reads is checked (model, input's outer shape, stream, metadata, nesting); every
other field goes to the provider as sent, which answers for it.
"""

from __future__ import annotations

from typing import Any

from proxy.endpoints import Endpoint
from proxy.errors import InvalidRequest, NotFound
from proxy.requests import ChatRequest, check_depth, check_metadata
from proxy.settings import Config

STORED_ID_PREFIX = "resp_"  # the id of a response stored at the provider


def parse_responses_request(payload: Any, size: int, config: Config) -> ChatRequest:
    """The validated call (`endpoint` RESPONSES; `stream` when `stream: true`). Raises InvalidRequest / NotFound
    (an unknown model)."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    check_depth(payload)
    model = payload.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise InvalidRequest("model must be a string", param="model", code="invalid_type")
    value = payload.get("input")
    if value is not None and not isinstance(value, str | list):
        raise InvalidRequest("'input' must be a string or an array of input items.", param="input", code="invalid_type")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream", code="invalid_type")
    for name in ("background", "store"):
        if payload.get(name) is not None and not isinstance(payload[name], bool):
            raise InvalidRequest(f"{name} must be a boolean", param=name, code="invalid_type")
    check_metadata(payload.get("metadata"))
    if config.deployment(model) is None:
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return ChatRequest(body=payload, model=model, stream=stream is True, size=size, endpoint=Endpoint.RESPONSES)


def stored_response_id(response_id: str) -> str:
    """`response_id` when it names a stored response (`resp_...`, URL-safe); else NotFound, as the provider
    answers an id it never gave."""
    if not response_id.startswith(STORED_ID_PREFIX) or not response_id.replace("_", "").replace("-", "").isalnum():
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return response_id
