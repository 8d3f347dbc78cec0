"""Glue between the config file and the pure decision: LaneFacts for a model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.endpoints import Endpoint, endpoint_of
from proxy.policy.facts import LaneFacts
from proxy.providers.lane_fields import batch_blocker, dropped_fields
from proxy.providers.registry import batch_api, no_batch_reason
from proxy.responses_lanes import responses_blocker
from proxy.settings import Config


def lane_facts(config: Config, model_name: str, *, batch_turnaround: float | None = None) -> LaneFacts:
    """The lanes of a configured model, or of a queue group (`proxy/endpoints.py`: an endpoint other than chat has
    no flex tier, and the batch lane only where its provider's batch API takes it); `batch_turnaround` overrides
    the configured estimate."""
    deployment = config.deployment(model_name)
    endpoint = endpoint_of(model_name)
    estimate = config.batch_knobs(model_name).turnaround_estimate
    no_batch = no_batch_reason(deployment, endpoint) if deployment is not None else None
    return LaneFacts(
        batch_turnaround=estimate if batch_turnaround is None else batch_turnaround,
        supports_flex=bool(deployment and deployment.supports_flex and endpoint is Endpoint.CHAT_COMPLETIONS),
        flex_turnaround=config.worker.flex_turnaround,
        safety_margin=config.worker.safety_margin,
        batchable=no_batch is None,
        no_batch_reason=no_batch or "",
    )


def batch_blocker_for(
    config: Config, model_name: str, body: Mapping[str, Any], endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS
) -> str | None:
    """The field of `body` the model's batch lane cannot carry as its sync lane does (None: it carries all); a
    Responses call that depends on the provider's stored state names that (proxy/responses_lanes.py)."""
    deployment = config.deployment(model_name)
    if deployment is not None and endpoint is Endpoint.RESPONSES:
        return responses_blocker(body)
    return None if deployment is None else batch_blocker(body, batch_api(deployment))


def dropped_fields_for(config: Config, model_name: str, body: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields of `body` the model's provider answers without on every lane (docs/field-lanes.md, "dropped")."""
    deployment = config.deployment(model_name)
    return () if deployment is None else dropped_fields(body, deployment.litellm_params.provider)
