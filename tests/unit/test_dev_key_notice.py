"""The development-key notice at start: said only when the development key is really in force."""

from __future__ import annotations

import logging

import pytest

from proxy.errors import Unauthorized
from proxy.runtime import build_runtime
from proxy.settings import DEV_MASTER_KEY, Config, Settings

NOTICE = "no master key is set and every model is simulated"
SIMULATED = {"model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}


@pytest.mark.parametrize(("auth", "said"), [({}, True), ({"master_key": "sk-operator-master"}, False)])
async def test_the_development_key_notice_follows_the_master_key(
    caplog: pytest.LogCaptureFixture, auth: dict[str, str], said: bool
) -> None:
    config = Config.model_validate({**SIMULATED, "auth": auth})
    settings = Settings(redis_url="redis://127.0.0.1:1/0", simulator_url="http://127.0.0.1:1")  # never contacted
    with caplog.at_level(logging.WARNING):
        runtime = build_runtime(settings, config)
    await runtime.providers.aclose()
    await runtime.redis.aclose()
    assert any(NOTICE in record.getMessage() for record in caplog.records) is said
    if said:
        assert runtime.keys.caller_for(f"Bearer {DEV_MASTER_KEY}")
    else:
        with pytest.raises(Unauthorized):
            runtime.keys.caller_for(f"Bearer {DEV_MASTER_KEY}")
