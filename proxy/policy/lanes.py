"""Glue between the config file and the pure decision: LaneFacts for a model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy.endpoints import Endpoint, endpoint_of, model_of
from proxy.policy.facts import LaneFacts
from proxy.policy.model import PolicyConfig
from proxy.policy.venue import Venue
from proxy.pricing import ModelPrices
from proxy.providers.lane_fields import batch_blocker, dropped_fields
from proxy.providers.registry import batch_api, no_batch_reason
from proxy.responses_lanes import responses_blocker
from proxy.settings import Config
from proxy.venues import configured_venue, matches, tier_share


def lane_facts(
    config: Config,
    model_name: str,
    *,
    batch_turnaround: float | None = None,
    venues: VenueInputs | None = None,
    batch_level: float | None = None,
) -> LaneFacts:
    """The lanes of a configured model, or of a queue group (`proxy/endpoints.py`: an endpoint other than chat has
    no flex tier, and the batch lane only where its provider's batch API takes it); `batch_turnaround` overrides
    the configured estimate. With `venues`, and a policy that has an `auto` lane, the venues it chooses from."""
    deployment = config.deployment(model_name)
    endpoint = endpoint_of(model_name)
    estimate = config.batch_knobs(model_name).turnaround_estimate
    no_batch = no_batch_reason(deployment, endpoint) if deployment is not None else None
    facts = LaneFacts(
        batch_turnaround=estimate if batch_turnaround is None else batch_turnaround,
        supports_flex=bool(deployment and deployment.supports_flex and endpoint is Endpoint.CHAT_COMPLETIONS),
        flex_turnaround=config.worker.flex_turnaround,
        safety_margin=config.worker.safety_margin,
        batchable=no_batch is None,
        no_batch_reason=no_batch or "",
        batch_level=None if batch_turnaround is None else batch_level,
    )
    if venues is None or not uses_auto(config.policy):
        return facts
    return dataclasses.replace(facts, venues=venue_list(config, model_name, facts, venues))


@dataclass(frozen=True, slots=True)
class VenueInputs:
    """What pricing the venues of one call needs: its model's prices, the moment, its token counts, and the
    batch venue's median turnaround (seconds; None: the turnaround at confidence)."""

    prices: ModelPrices | None
    now: datetime
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_median: float | None = None


def uses_auto(policy: PolicyConfig) -> bool:
    """Whether any action of the policy sets `lane: auto` (the venues are priced only then)."""
    return policy.has_auto


def venue_list(config: Config, model_name: str, lanes: LaneFacts, inputs: VenueInputs) -> tuple[Venue, ...]:
    """Every venue that may answer a call of `model_name`: batch, flex (where the model has it), the declared
    venues that match it, and sync."""
    tokens = {"prompt": inputs.prompt_tokens, "completion": inputs.completion_tokens}
    policy = config.policy
    found = [
        Venue(
            "batch",
            "batch",
            tier_share(inputs.prices, "batch", **tokens),
            inputs.batch_median if inputs.batch_median is not None else lanes.batch_turnaround,
            lanes.batch_turnaround,
            unavailable=None if lanes.batchable else lanes.no_batch_reason or "the model has no batch lane",
        )
    ]
    if lanes.supports_flex:
        rate = policy.flex_unavailable_rate
        share = (1 - rate) * tier_share(inputs.prices, "flex", **tokens) + rate
        found.append(Venue("flex", "flex", share, lanes.flex_turnaround, lanes.flex_turnaround))
    deployment = config.deployment(model_name)
    if deployment is not None and endpoint_of(model_name) is Endpoint.CHAT_COMPLETIONS:
        provider = deployment.litellm_params.provider
        confidence = config.worker.turnaround_confidence
        for declared in policy.venues:
            if matches(declared, model_of(model_name), provider):
                found.append(configured_venue(declared, inputs.prices, inputs.now, confidence=confidence, **tokens))
    found.append(Venue("sync", "sync", 1.0, 0.0, 0.0))
    return tuple(found)


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
