"""POST /v1/embeddings: authenticate, validate, decide the lane, then forward or defer, as chat does
(proxy/routes/calls.py, the path every non-chat endpoint takes).

The synchronous answer is the provider's bytes (OpenAI-shaped providers) or litellm's answer made OpenAI's
CreateEmbeddingResponse; a deferred call goes to its model's embeddings queue (`<model>#embeddings`, a batch
holds one endpoint) and comes back by any delivery mode as an ordinary CreateEmbeddingResponse.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from proxy.embedding_requests import parse_embeddings_request
from proxy.endpoints import Endpoint
from proxy.routes.calls import decide_call, serve_call
from proxy.routes.dependencies import RuntimeDep

PATH = Endpoint.EMBEDDINGS.path
decide_embeddings = decide_call  # the name this module gave it first

router = APIRouter()


@router.post(PATH)
async def embeddings(request: Request, runtime: RuntimeDep) -> Response:
    return await serve_call(request, runtime, parse_embeddings_request)
