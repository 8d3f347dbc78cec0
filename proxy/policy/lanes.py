"""Glue between the config file and the pure decision: LaneFacts for a model, and a queue's batching knobs."""

from __future__ import annotations

from proxy.policy.decision import Decision
from proxy.policy.facts import LaneFacts
from proxy.providers.registry import batch_api
from proxy.settings import BatchKnobs, Config


def lane_facts(config: Config, model_name: str, *, batch_turnaround: float | None = None) -> LaneFacts:
    """The lanes of a configured model; `batch_turnaround` overrides the configured estimate."""
    deployment = config.deployment(model_name)
    estimate = config.batch_knobs(model_name).turnaround_estimate
    return LaneFacts(
        batch_turnaround=estimate if batch_turnaround is None else batch_turnaround,
        supports_flex=bool(deployment and deployment.supports_flex),
        flex_turnaround=config.worker.flex_turnaround,
        safety_margin=config.worker.safety_margin,
        batchable=deployment is None or batch_api(deployment) is not None,
    )


def batch_knobs_for(config: Config, model_name: str, decision: Decision) -> BatchKnobs:
    """The queue's knobs tightened by the rule that deferred this job: a rule can only make its jobs wait less
    or flush in smaller batches, never hold a shared queue longer than its own configuration allows."""
    knobs = config.batch_knobs(model_name)
    update: dict[str, float | int] = {}
    if decision.max_wait is not None and decision.max_wait < knobs.max_wait:
        update["max_wait"] = decision.max_wait
    if decision.max_requests is not None and decision.max_requests < knobs.max_requests:
        update["max_requests"] = decision.max_requests
    return knobs.model_copy(update=update) if update else knobs
