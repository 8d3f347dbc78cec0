"""Dependency aliases that keep handler signatures short and let tests build apps inline."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from proxy.auth import Caller
from proxy.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_caller(request: Request, runtime: RuntimeDep) -> Caller:
    caller = runtime.keys.caller_for(request.headers.get("authorization"))
    request.state.team = caller.team
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
