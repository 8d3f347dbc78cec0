"""The Azure OpenAI face: the OpenAI face's handlers at Azure's v1 and legacy paths (rules: azure_auth)."""

from __future__ import annotations

from fastapi import FastAPI

from proxy.simulator import openai_face


def mount(app: FastAPI) -> None:
    """Chat completions and embeddings (v1: the deployment as `model`; legacy: in the URL), files and batches,
    both styles."""
    app.add_route("/openai/v1/chat/completions", openai_face.chat_completions, methods=["POST"])
    app.add_route("/openai/deployments/{deployment}/chat/completions", openai_face.chat_completions, methods=["POST"])
    app.add_route("/openai/deployments/{deployment}/embeddings", openai_face.embeddings, methods=["POST"])
    app.include_router(openai_face.router, prefix="/openai/v1")
    app.include_router(openai_face.router, prefix="/openai")
