"""Glue between the config file and the pure decision: LaneFacts for a model."""

from __future__ import annotations

from proxy.policy.facts import LaneFacts
from proxy.providers.registry import no_batch_reason
from proxy.settings import Config


def lane_facts(config: Config, model_name: str, *, batch_turnaround: float | None = None) -> LaneFacts:
    """The lanes of a configured model; `batch_turnaround` overrides the configured estimate."""
    deployment = config.deployment(model_name)
    estimate = config.batch_knobs(model_name).turnaround_estimate
    no_batch = no_batch_reason(deployment) if deployment is not None else None
    return LaneFacts(
        batch_turnaround=estimate if batch_turnaround is None else batch_turnaround,
        supports_flex=bool(deployment and deployment.supports_flex),
        flex_turnaround=config.worker.flex_turnaround,
        safety_margin=config.worker.safety_margin,
        batchable=no_batch is None,
        no_batch_reason=no_batch or "",
    )
