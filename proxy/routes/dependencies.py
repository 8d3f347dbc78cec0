"""Dependency aliases that keep handler signatures short and let tests build apps inline."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from proxy.auth import Caller
from proxy.runtime import ConfigSnapshot, Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_live(runtime: RuntimeDep) -> ConfigSnapshot:
    """The config snapshot of this request: read once (FastAPI caches a dependency per request)."""
    return runtime.live


LiveDep = Annotated[ConfigSnapshot, Depends(get_live)]


async def get_caller(request: Request, live: LiveDep) -> Caller:
    caller = live.keys.caller_for(request.headers.get("authorization"))
    request.state.team = caller.team
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
