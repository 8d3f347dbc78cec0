"""Everything one simulator app instance holds (stored on `app.state.simulator`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from proxy.simulator.engine import Engine
from proxy.simulator.files import FileStore
from proxy.simulator.google_tokens import IssuedTokens
from proxy.simulator.rate_headers import RateWindow

ResultFiles = tuple[str | None, str | None]  # (output_file_id, error_file_id)


@dataclass(slots=True)
class SimulatorState:
    engine: Engine
    files: FileStore = field(default_factory=FileStore)
    result_files: dict[str, ResultFiles] = field(default_factory=dict)  # batch id -> its written result files
    result_files_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rates: RateWindow = field(default_factory=RateWindow)  # for the rate-limit headers of chat answers
    in_flight: Counter[str] = field(default_factory=Counter)  # last user text -> synchronous calls being answered
    gemini_uploads: dict[str, tuple[int, str]] = field(default_factory=dict)  # upload id -> (bytes, name)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)  # stored Response objects, by id
    last_create: dict[str, float] = field(default_factory=dict)  # face -> when it last created a batch (monotonic s)
    google_tokens: IssuedTokens = field(default_factory=IssuedTokens)  # access tokens granted at /token


def simulator_state(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state
