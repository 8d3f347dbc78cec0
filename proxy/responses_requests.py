"""Reading and validating a `/v1/responses` body (OpenAI's CreateResponse) before anything else touches it: 400
in OpenAI's shape naming the `param`, like chat and embeddings bodies (`proxy/requests.py`).

Only what batchgate itself reads is checked (model, input's outer shape, stream, metadata, nesting); every
other field goes to the provider as sent, which answers for it.
"""

from __future__ import annotations

from typing import Any

from proxy.endpoints import Endpoint
from proxy.errors import InvalidRequest, NotFound
from proxy.requests import ChatRequest, body_and_model, check_metadata, check_model_served
from proxy.settings import Config

STORED_ID_PREFIX = "resp_"  # the id of a response stored at the provider


def parse_responses_request(payload: Any, size: int, config: Config) -> ChatRequest:
    """The validated call (`endpoint` RESPONSES; `stream` when `stream: true`). Raises InvalidRequest / NotFound
    (an unknown model)."""
    payload, model = body_and_model(payload)
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
    check_model_served(model, config)
    return ChatRequest(body=payload, model=model, stream=stream is True, size=size, endpoint=Endpoint.RESPONSES)


def stored_response_id(response_id: str) -> str:
    """`response_id` when it names a stored response (`resp_...`, URL-safe); else NotFound, as the provider
    answers an id it never gave."""
    if not response_id.startswith(STORED_ID_PREFIX) or not response_id.replace("_", "").replace("-", "").isalnum():
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return response_id
