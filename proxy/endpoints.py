"""The OpenAI endpoints batchgate serves, and how a queue group names one (pure, no I/O).

A provider batch holds requests of one endpoint only (OpenAI's `endpoint` is per batch), so deferred calls queue
per (model, endpoint): the queue group of a chat call is its model's name, as it always was; that of another
endpoint is `<model>#<endpoint>` (`queue_group`). Every lookup by group (the deployment, its knobs, its clients,
prices) reads the model back with `split_group`. The Responses API is one more member (`<model>#responses`).
"""

from __future__ import annotations

from enum import StrEnum

SEPARATOR = "#"


class Endpoint(StrEnum):
    """An endpoint, by its metric-label name (small, closed set)."""

    CHAT_COMPLETIONS = "chat_completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"

    @property
    def path(self) -> str:
        """The URL path callers use, and the `url` of an OpenAI batch line."""
        return PATHS[self]

    @property
    def deferred_object(self) -> str:
        """The `object` of a deferred job of this endpoint (its result is the endpoint's ordinary answer)."""
        return DEFERRED_OBJECTS[self]


PATHS = {
    Endpoint.CHAT_COMPLETIONS: "/v1/chat/completions",
    Endpoint.EMBEDDINGS: "/v1/embeddings",
    Endpoint.RESPONSES: "/v1/responses",
}
DEFERRED_OBJECTS = {
    Endpoint.CHAT_COMPLETIONS: "chat.completion.deferred",
    Endpoint.EMBEDDINGS: "embedding.deferred",
    Endpoint.RESPONSES: "response.deferred",
}


def queue_group(model: str, endpoint: Endpoint) -> str:
    """The queue group of `model`'s calls to `endpoint`: the model's name for chat, `<model>#<endpoint>` else."""
    return model if endpoint is Endpoint.CHAT_COMPLETIONS else f"{model}{SEPARATOR}{endpoint.value}"


def split_group(group: str) -> tuple[str, Endpoint]:
    """(model, endpoint) of a queue group; a name with no known endpoint suffix is a chat group."""
    model, separator, suffix = group.rpartition(SEPARATOR)
    if separator and suffix in _BY_VALUE and suffix != Endpoint.CHAT_COMPLETIONS.value:
        return model, _BY_VALUE[suffix]
    return group, Endpoint.CHAT_COMPLETIONS


def model_of(group: str) -> str:
    """The configured model name of a queue group."""
    return split_group(group)[0]


def endpoint_of(group: str) -> Endpoint:
    return split_group(group)[1]


_BY_VALUE = {endpoint.value: endpoint for endpoint in Endpoint}
