"""OpenAI `/v1/embeddings` <-> Gemini batch embeddings (`models/{m}:asyncBatchEmbedContent`).

A Gemini EmbedContentRequest embeds one content, so an OpenAI body of N inputs becomes N batch requests, built by
litellm's own translation for the sync lane's `batchEmbedContents` call (`transform_openai_input_gemini_content`:
`dimensions` -> `outputDimensionality`, `task_type` -> `taskType`). Their keys are `<custom_id>#<i>-<n>-<format>`,
so the N answers are joined back into the one CreateEmbeddingResponse of the job (`format`: the caller's
`encoding_format`, `base64` vectors being OpenAI's little-endian float32). Usage is each response's
`usageMetadata.promptTokenCount` summed (a response without one counts none: the input is not at hand then).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.providers.gemini_translation import PROVIDER_PREFIX, GeminiRefusal
from proxy.providers.litellm_completion import import_litellm, public_message

KEY_SEPARATOR = "#"
EMBED_FIELDS = ("dimensions", "task_type")  # the embeddings options litellm maps for Gemini


@dataclass(frozen=True, slots=True)
class PartKey:
    """One batch request's place in its job: the job's custom_id, the input's index, how many inputs, format."""

    custom_id: str
    index: int
    count: int
    encoding: str

    def text(self) -> str:
        return f"{self.custom_id}{KEY_SEPARATOR}{self.index}-{self.count}-{self.encoding}"


def part_key(key: str) -> PartKey | None:
    """The PartKey a batch request's key spells, or None when it is not one."""
    custom_id, separator, place = key.rpartition(KEY_SEPARATOR)
    pieces = place.split("-")
    if not separator or not custom_id or len(pieces) != 3 or not all(p.isdigit() for p in pieces[:2]):
        return None
    index, count = int(pieces[0]), int(pieces[1])
    return PartKey(custom_id, index, count, pieces[2]) if 0 <= index < count else None


def embed_requests(custom_id: str, body: Mapping[str, Any], *, model: str) -> list[tuple[str, dict[str, Any]]]:
    """(key, EmbedContentRequest) per input of an OpenAI embeddings `body`, as litellm translates them.
    Blocking (CPU only). Raises GeminiRefusal when litellm refuses the input."""
    import_litellm()
    from litellm.llms.vertex_ai.gemini_embeddings.batch_embed_content_transformation import (  # noqa: PLC0415
        transform_openai_input_gemini_content,
    )

    upstream = model.removeprefix(PROVIDER_PREFIX).removeprefix("models/")
    options = {name: body[name] for name in EMBED_FIELDS if body.get(name) is not None}
    given: Any = body.get("input")  # litellm checks its shape
    try:
        translated = transform_openai_input_gemini_content(given, upstream, options)
    except Exception as exc:  # litellm raises many types for an input it will not translate
        raise GeminiRefusal(public_message(str(exc), 400, None)) from None
    requests = [dict(request) for request in translated["requests"]]
    encoding = "base64" if body.get("encoding_format") == "base64" else "float"
    return [
        (PartKey(custom_id, index, len(requests), encoding).text(), request) for index, request in enumerate(requests)
    ]


@dataclass(slots=True)
class JoinedEmbedding:
    """The answers of one job's batch requests, as they arrive (in any order)."""

    key: PartKey
    vectors: dict[int, list[float]] = field(default_factory=dict)
    prompt_tokens: int = 0

    @property
    def complete(self) -> bool:
        return len(self.vectors) == self.key.count

    def add(self, index: int, response: Mapping[str, Any]) -> None:
        embedding = response.get("embedding")
        values = embedding.get("values") if isinstance(embedding, Mapping) else None
        if not isinstance(values, list):
            raise ValueError("an EmbedContentResponse without embedding.values")
        self.vectors[index] = [float(value) for value in values]
        usage = response.get("usageMetadata")
        tokens = usage.get("promptTokenCount") if isinstance(usage, Mapping) else None
        self.prompt_tokens += int(tokens) if isinstance(tokens, int) else 0

    def response(self, model: str) -> dict[str, Any]:
        """OpenAI's CreateEmbeddingResponse of the joined answers."""
        data = [
            {"object": "embedding", "index": index, "embedding": _encoded(self.vectors[index], self.key.encoding)}
            for index in range(self.key.count)
        ]
        usage = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding != "base64":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
