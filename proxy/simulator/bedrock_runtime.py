"""The Bedrock runtime face, under `/bedrock-runtime`: the Converse API (`POST /model/{modelId}/converse`), the
synchronous lane of a `bedrock/anthropic.claude-…` model as litellm calls it (point `api_base` here). Streaming
(`converse-stream`, AWS's binary event stream) is not simulated.

Request: `messages` of `{role, content: [{text} | …]}`, `system: [{text}]`, `inferenceConfig {maxTokens, …}`;
answer: `{output: {message: {role: "assistant", content: [{text}]}}, stopReason, usage {inputTokens,
outputTokens, totalTokens}, metrics {latencyMs}}`. Unsigned calls are 403; billed under the model id, sync tier.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Request, Response

from proxy.simulator.answers import answer_for
from proxy.simulator.bedrock_face import AwsError, signed
from proxy.simulator.ledger import Tier
from proxy.simulator.state import simulator_state

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

router = APIRouter(prefix="/bedrock-runtime")


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return str(content or "")


def chat_body(model_id: str, payload: Any) -> dict[str, Any]:
    """The simulator's view of a Converse request (its messages as text); AwsError when it is not one."""
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list) or not messages:
        raise AwsError(400, "ValidationException", "The request must contain at least one message.")
    config = payload.get("inferenceConfig") or {}
    body: dict[str, Any] = {
        "model": model_id,
        "messages": [{"role": str(item.get("role")), "content": _text(item.get("content"))} for item in messages],
    }
    if payload.get("system"):
        body["system"] = _text(payload["system"])
    if isinstance(config.get("maxTokens"), int):
        body["max_tokens"] = config["maxTokens"]
    return body


@router.post("/model/{model_id:path}/converse")
async def converse(request: Request, model_id: str) -> Response:
    signed(request)
    state = simulator_state(request)
    model = unquote(model_id)
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        payload = None
    answer = answer_for(chat_body(model, payload))
    state.engine.bill(model, Tier.SYNC, answer, flavor="bedrock")
    reply = {
        "output": {"message": {"role": "assistant", "content": [{"text": answer.content}]}},
        "stopReason": STOP_REASONS.get(answer.finish_reason, "end_turn"),
        "usage": {
            "inputTokens": answer.prompt_tokens,
            "outputTokens": answer.completion_tokens,
            "totalTokens": answer.total_tokens,
        },
        "metrics": {"latencyMs": 1},
    }
    return Response(orjson.dumps(reply), media_type="application/json")
