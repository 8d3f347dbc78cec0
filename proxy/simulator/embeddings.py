"""The simulated `/v1/embeddings`: validation, deterministic vectors and honest usage.

Each input gets a unit vector seeded by a digest of (model, input): the same input always embeds the same, two
inputs differ. prompt_tokens = the sum over inputs of ceil(utf-8 bytes / 4) for a text, or its length for a
token array (completion tokens: none). The dimension is `dimensions` when given, else the model's own
(3,072 for text-embedding-3-large, 1,536 otherwise). `encoding_format: base64` gives the little-endian float32
bytes in base64, as OpenAI does (the openai client asks for it by default and decodes it).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.simulator.answers import Answer, EmbeddingSpec, count_tokens

ENDPOINT = "/v1/embeddings"
AZURE_ENDPOINT = "/embeddings"  # Azure's batch endpoint and line url, without /v1 (as its chat endpoint)
BATCH_ENDPOINTS = frozenset({ENDPOINT, AZURE_ENDPOINT})
MAX_INPUTS = 2048
MAX_BATCH_INPUTS = 50_000  # across all lines of one /v1/embeddings batch (OpenAI's API reference)
MODEL_DIMENSIONS = {"text-embedding-3-large": 3072}
DEFAULT_DIMENSIONS = 1536


def inputs_of(body: Mapping[str, Any]) -> list[Any]:
    """The inputs of a valid body, one per vector: a string or a token array stands alone."""
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and _is_token(value[0])):
        return [value]
    return list(value) if isinstance(value, list) else []


def embedding_problem(body: Any) -> tuple[str, str | None] | None:
    """(message, param) for a body OpenAI refuses with a 400, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", "model"
    return _input_problem(body.get("input")) or _options_problem(body)


def _input_problem(value: Any) -> tuple[str, str | None] | None:
    if isinstance(value, str):
        return ("'input' cannot be an empty string.", "input") if not value else None
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        return f"'input' must be a string or an array of 1 to {MAX_INPUTS} items.", "input"
    shapes_ok = (
        all(isinstance(item, str) and item for item in value)
        or all(_is_token(item) for item in value)
        or all(isinstance(item, list) and item and all(_is_token(token) for token in item) for item in value)
    )
    return None if shapes_ok else ("'input' is not a valid embedding input.", "input")


def _options_problem(body: Mapping[str, Any]) -> tuple[str, str | None] | None:
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "encoding_format must be 'float' or 'base64'.", "encoding_format"
    dimensions = body.get("dimensions")
    native = native_dimensions(str(body["model"]))
    if dimensions is not None and (not _is_token(dimensions) or not 1 <= dimensions <= native):
        return f"dimensions must be an integer from 1 to the model's own {native}.", "dimensions"
    return None


def native_dimensions(model: str) -> int:
    """The length of the model's own vectors (OpenAI refuses `dimensions` above it)."""
    return MODEL_DIMENSIONS.get(model.rsplit("/", 1)[-1], DEFAULT_DIMENSIONS)


def embedding_answer(body: Mapping[str, Any]) -> Answer:
    """The answer to a valid body: its usage and what its vectors are made from."""
    model = str(body["model"])
    inputs = inputs_of(body)
    tokens = sum(len(item) if isinstance(item, list) else count_tokens(item) for item in inputs)
    dimensions = body.get("dimensions") or native_dimensions(model)
    digests = tuple(hashlib.sha256(orjson.dumps([model, item])).hexdigest() for item in inputs)
    spec = EmbeddingSpec(digests, int(dimensions), str(body.get("encoding_format") or "float"))
    return Answer(content="", prompt_tokens=tokens, completion_tokens=0, finish_reason="stop", embedding=spec)


def vector(digest: str, dimensions: int) -> list[float]:
    """A unit vector seeded by `digest`."""
    rng = random.Random(digest)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [value / norm for value in raw]


def embedding_response(model: str, answer: Answer) -> dict[str, Any]:
    """OpenAI's CreateEmbeddingResponse for an embeddings answer."""
    spec = answer.embedding
    assert spec is not None
    data = []
    for index, digest in enumerate(spec.digests):
        values = vector(digest, spec.dimensions)
        encoded: list[float] | str = values
        if spec.encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
