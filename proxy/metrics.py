"""Every Prometheus metric batchgate exposes, defined once (`batchgate_` prefix), in a registry passed in.

Each process (API replica or worker) serves its own registry on /metrics and Prometheus sums across them
(docs/metrics.md explains why this beats prometheus-client's multiprocess mode here). Label values are
bounded: model, team and rule names come from the config, anything else is "other"; ids never are labels.

Queue and batch gauges describe shared state in Redis, not the process: the worker refreshes a
`QueueSnapshot` and a custom collector renders it on scrape (dashboards aggregate them with max, not sum).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.endpoints import Endpoint, endpoint_of, model_of, queue_group
from proxy.pricing import Cost, Usage
from proxy.reasons import RescueReason, WasteReason, WebhookOutcome
from proxy.settings import Config

OTHER = "other"
LANES = frozenset({"sync", "batch", "flex"})
OUTCOMES = frozenset({"completed", "failed", "cancelled", "expired", "rejected"})
TOKEN_KINDS = ("input", "output", "cached")
RESCUE_REASONS = frozenset(reason.value for reason in RescueReason)
WASTE_REASONS = frozenset(reason.value for reason in WasteReason)
WEBHOOK_OUTCOMES = frozenset(outcome.value for outcome in WebhookOutcome)
# what a worker task was doing (batchgate_worker_task_failures, batchgate_worker_leases_lost)
WORKER_STAGES = ("scan", "flush", "batch", "cancel", "guard", "sync", "webhook")
BATCH_STATES = frozenset(
    {
        "submitting",
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    }
)
STATUS_CLASSES = frozenset({"429", "4xx", "5xx", "timeout", "connection"})
# codes of batchgate_provider_account_problem (providers/base.py ACCOUNT_CODES, and a bare 401/402/403)
ACCOUNT_PROBLEM_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "billing_error", "authentication_error", "permission_error",
     "invalid_api_key", "account_deactivated", "http_401", "http_402", "http_403"}
)  # fmt: skip

TIME_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
    43200,
    86400,
)
MARGIN_BUCKETS = (0, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000)
TURNAROUND_BUCKETS = (10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400)


class LabelGuard:
    """Keeps a label's values to a known finite set; anything else is reported as "other"."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed = frozenset(allowed)

    def __call__(self, value: str | None) -> str:
        return value if value is not None and value in self._allowed else OTHER

    def replace(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)

    @property
    def allowed(self) -> frozenset[str]:
        return self._allowed


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue group's shared state, read from Redis by the worker."""

    queue: str
    depth: int
    oldest_enqueued_at: float | None = None
    batches_by_state: Mapping[str, int] = field(default_factory=dict)
    oldest_open_batch_created_at: float | None = None
    turnaround_estimate_seconds: float | None = None
    # learned batch turnaround (proxy/jobs/turnaround.py): (band, quantile) -> seconds, learned bands only
    turnaround_quantiles: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    taken_at: float
    queues: tuple[QueueStats, ...] = ()


class QueueCollector(Collector):
    """Renders the latest QueueSnapshot; ages are computed at scrape time so they grow between refreshes."""

    def __init__(self, queue_label: LabelGuard) -> None:
        self._queue_label = queue_label
        self._snapshot: QueueSnapshot | None = None
        self._lock = threading.Lock()

    def update(self, snapshot: QueueSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._snapshot
        if snapshot is None:
            return
        now = time.time()
        depth = GaugeMetricFamily("batchgate_queue_depth", "Deferred jobs waiting for a batch", labels=["queue"])
        oldest = GaugeMetricFamily(
            "batchgate_queue_oldest_age_seconds",
            "Age of the oldest job waiting for a batch",
            labels=["queue"],
        )
        batches = GaugeMetricFamily(
            "batchgate_batches", "Provider batches not yet ingested, by state", labels=["queue", "state"]
        )
        open_age = GaugeMetricFamily(
            "batchgate_batch_oldest_open_age_seconds",
            "Age of the oldest open provider batch",
            labels=["queue"],
        )
        turnaround = GaugeMetricFamily(
            "batchgate_batch_turnaround_estimate_seconds",
            "Configured expected batch turnaround (batch.turnaround_estimate)",
            labels=["queue"],
        )
        learned = GaugeMetricFamily(
            "batchgate_batch_turnaround_learned_seconds",
            "Learned batch turnaround (submission to end) at a quantile, per batch-size band (`all`: every size)",
            labels=["queue", "band", "quantile"],
        )
        for stats in snapshot.queues:
            queue = self._queue_label(stats.queue)
            for (band, quantile), seconds in stats.turnaround_quantiles.items():
                learned.add_metric([queue, band, quantile], seconds)
            depth.add_metric([queue], stats.depth)
            oldest.add_metric([queue], _age(now, stats.oldest_enqueued_at))
            open_age.add_metric([queue], _age(now, stats.oldest_open_batch_created_at))
            for state, count in stats.batches_by_state.items():
                batches.add_metric([queue, state if state in BATCH_STATES else OTHER], count)
            if stats.turnaround_estimate_seconds is not None:
                turnaround.add_metric([queue], stats.turnaround_estimate_seconds)
        snapshot_age = GaugeMetricFamily(
            "batchgate_queue_snapshot_age_seconds", "Seconds since the worker last read the queues from Redis"
        )
        snapshot_age.add_metric([], max(now - snapshot.taken_at, 0.0))
        yield from (depth, oldest, batches, open_age, turnaround, learned, snapshot_age)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _age(now: float, since: float | None) -> float:
    return 0.0 if since is None else max(now - since, 0.0)


class Metrics:
    """The catalogue. Record through the methods: they apply the label guards."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        models: Iterable[str] = (),
        teams: Iterable[str] = (),
        rules: Iterable[str] = (),
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.model = LabelGuard(models)
        self.queue = LabelGuard(queue_groups(models))  # a queue is a model's, or a model's endpoint's
        self.team = LabelGuard(teams)
        self.rule = LabelGuard(rules)
        r = self.registry
        self.requests = Counter(
            "batchgate_requests", "Finished requests", ["lane", "outcome", "model", "team", "endpoint"], registry=r
        )
        self.tokens = Counter(
            "batchgate_tokens", "Tokens of finished requests", ["kind", "lane", "model", "endpoint"], registry=r
        )
        self.list_usd = Counter(
            "batchgate_list_usd", "What finished requests cost at synchronous list prices", _MONEY, registry=r
        )
        self.paid_usd = Counter("batchgate_paid_usd", "What finished requests cost in their lane", _MONEY, registry=r)
        self.saved_usd = Counter("batchgate_saved_usd", "List minus paid", _MONEY, registry=r)
        self.shadow_saved_usd = Counter(
            "batchgate_shadow_saved_usd",
            "Shadow mode: what deferring would have saved (list minus the would-be lane's price)",
            _COST,
            registry=r,
        )
        self.waste_usd = Counter(
            "batchgate_waste_usd",
            "Billed answers no job took (answered elsewhere, cancelled, duplicate), in the lane that billed them",
            [*_COST, "reason"],
            registry=r,
        )
        self.forfeited_usd = Counter(
            "batchgate_forfeited_savings_usd",
            "Rescues at list price: what they paid above the lane they left (batch, or flex)",
            ["model", "team", "reason"],
            registry=r,
        )
        self.reconciliations = Counter(
            "batchgate_reconciliations",
            "Ended batches compared with their own billing data (matched, mismatched, unchecked: no data)",
            ["model", "result"],
            registry=r,
        )
        self.reconciliation_difference_usd = Counter(
            "batchgate_reconciliation_difference_usd",
            "Absolute difference between what batches billed and what batchgate recorded, at batch prices",
            ["model"],
            registry=r,
        )
        self.unknown_cost = Counter(
            "batchgate_unknown_cost_requests",
            "Finished requests of models with no known price",
            ["model"],
            registry=r,
        )
        self.decisions = Counter("batchgate_policy_decisions", "Policy decisions", ["lane", "rule"], registry=r)
        self.time_to_answer = Histogram(
            "batchgate_time_to_answer_seconds",
            "From request to final answer",
            ["lane"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.deadline_margin = Histogram(
            "batchgate_deadline_margin_seconds",
            "Seconds left before the deadline when answered (misses fall in the first bucket)",
            ["lane"],
            buckets=MARGIN_BUCKETS,
            registry=r,
        )
        self.deadline_misses = Counter(
            "batchgate_deadline_misses",
            "Requests answered after their deadline",
            ["lane", "model"],
            registry=r,
        )
        self.rescues = Counter("batchgate_rescues", "Deferred jobs sent synchronously", ["reason"], registry=r)
        self.batch_size = Histogram(
            "batchgate_batch_size_requests",
            "Requests per submitted provider batch",
            ["queue"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_turnaround = Histogram(
            "batchgate_batch_turnaround_seconds",
            "From batch creation to results ingested",
            ["queue", "state"],
            buckets=TURNAROUND_BUCKETS,
            registry=r,
        )
        self.batches_finished = Counter(
            "batchgate_batches_finished",
            "Provider batches ingested, by final state",
            ["queue", "state"],
            registry=r,
        )
        self.batches_stalled = Counter(
            "batchgate_batches_stalled",
            "Provider batches declared stalled (no progress past the learned turnaround) and cancelled",
            ["queue"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "batchgate_webhook_deliveries", "Webhook delivery attempts", ["outcome"], registry=r
        )
        self.upstream_errors = Counter(
            "batchgate_upstream_errors", "Errors from providers", ["lane", "status_class"], registry=r
        )
        self.config_reloads = Counter("batchgate_config_reloads", "Config reloads", ["result"], registry=r)
        self.task_failures = Counter(
            "batchgate_worker_task_failures", "Worker tasks that raised (each retried with backoff)", ["stage"],
            registry=r,
        )  # fmt: skip
        self.leases_lost = Counter(
            "batchgate_worker_leases_lost", "Worker tasks stopped because their lease was lost", ["stage"], registry=r
        )
        self.account_problems = Gauge(
            "batchgate_provider_account_problem",
            "1 while batch submission to a provider group is stopped by an account problem (shared state in Redis, "
            "reported by workers: aggregate with max)",
            ["group", "code"],
            registry=r,
        )
        self.enqueued_tokens = Gauge(
            "batchgate_enqueued_tokens", "Estimated prompt tokens of the queue's open batches", ["queue"], registry=r
        )
        self.enqueued_token_budget = Gauge(
            "batchgate_enqueued_token_budget", "The queue's enqueued-token budget (config or provider-reported)",
            ["queue"], registry=r,
        )  # fmt: skip
        self.enqueued_token_headroom = Gauge(
            "batchgate_enqueued_token_headroom", "Budget minus enqueued tokens: room for the next batches", ["queue"],
            registry=r,
        )  # fmt: skip
        self.capacity_refusals = Counter(
            "batchgate_capacity_refusals", "Batches the provider refused for its enqueued-token limit", ["queue"],
            registry=r,
        )  # fmt: skip
        self.prompt_cache_usd = Counter(
            "batchgate_prompt_cache_usd", "Prompt cache effect on top of the lane's discount: kind=read_saving (reads "
            "below the input price), kind=write_premium (writes above it); net saving = read_saving - write_premium",
            ["kind", "model", "lane"], registry=r,
        )  # fmt: skip
        self.prompt_cache_tokens = Counter(
            "batchgate_prompt_cache_tokens", "Prompt tokens read from or written to a provider's prompt cache",
            ["kind", "model", "lane"], registry=r,
        )  # fmt: skip
        self.prompt_cache_too_short = Counter(
            "batchgate_prompt_cache_prefix_too_short", "Batch lines sharing a prompt prefix below the provider's "
            "minimum cacheable size (not marked for caching)", ["model"], registry=r,
        )  # fmt: skip
        self.queues = QueueCollector(self.queue)
        r.register(self.queues)
        self._initialise_series()

    def set_known(self, *, models: Iterable[str], teams: Iterable[str], rules: Iterable[str] = ()) -> None:
        """Adopt the label sets of a (re)loaded config."""
        models = list(models)
        self.model.replace(models)
        self.queue.replace(queue_groups(models))
        self.team.replace(teams)
        self.rule.replace(rules)
        self._initialise_series()

    def _initialise_series(self) -> None:
        """Create the small, fixed label sets of the event counters at zero, so that `increase()` and the
        alerts see their first event (a series born at 1 shows no increase)."""
        for lane in LANES:
            for model in (*self.model.allowed, OTHER):
                self.deadline_misses.labels(lane, model)
            for status in STATUS_CLASSES:
                self.upstream_errors.labels(lane, status)
        for reason in RESCUE_REASONS:
            self.rescues.labels(reason)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        for model in (*self.model.allowed, OTHER):
            for result in ("matched", "mismatched", "unchecked"):
                self.reconciliations.labels(model, result)
            self.reconciliation_difference_usd.labels(model)
        for result in ("applied", "refused"):
            self.config_reloads.labels(result)
        for stage in WORKER_STAGES:
            self.task_failures.labels(stage)
            self.leases_lost.labels(stage)

    def record_finished(self, *, lane: str, outcome: str, model: str, team: str, usage: Usage, cost: Cost) -> None:
        """One finished request: its count, tokens and money."""
        endpoint = endpoint_of(model).value
        lane, model, team = _lane(lane), self._model(model), self.team(team)
        self.requests.labels(lane, outcome if outcome in OUTCOMES else OTHER, model, team, endpoint).inc()
        self.tokens.labels("input", lane, model, endpoint).inc(usage.prompt_tokens)
        self.tokens.labels("output", lane, model, endpoint).inc(usage.completion_tokens)
        self.tokens.labels("cached", lane, model, endpoint).inc(usage.cached_tokens)
        if not cost.known:
            self.unknown_cost.labels(model).inc()
            return
        self.list_usd.labels(model, team, lane, endpoint).inc(float(cost.list_usd))
        self.paid_usd.labels(model, team, lane, endpoint).inc(float(cost.paid_usd))
        self.saved_usd.labels(model, team, lane, endpoint).inc(float(cost.saved_usd))

    def record_prompt_cache(
        self, *, model: str, lane: str, usage: Usage, read_saving: Decimal, write_premium: Decimal
    ) -> None:
        """Cache reads and writes of one answer and what they saved and cost (proxy/prompt_cache.py)."""
        model, lane = self._model(model), _lane(lane)
        self.prompt_cache_tokens.labels("read", model, lane).inc(usage.cached_tokens)
        self.prompt_cache_tokens.labels("write", model, lane).inc(usage.cache_write_tokens)
        self.prompt_cache_usd.labels("read_saving", model, lane).inc(max(float(read_saving), 0.0))
        self.prompt_cache_usd.labels("write_premium", model, lane).inc(max(float(write_premium), 0.0))

    def record_prefix_too_short(self, *, model: str, lines: int) -> None:
        self.prompt_cache_too_short.labels(self._model(model)).inc(lines)

    def record_shadow(self, *, model: str, team: str, lane: str, cost: Cost) -> None:
        """A shadow-mode request: what it would have saved in `lane` (it was paid at list, counted apart)."""
        if cost.known:
            self.shadow_saved_usd.labels(self._model(model), self.team(team), _lane(lane)).inc(float(cost.saved_usd))

    def record_waste(self, *, model: str, team: str, lane: str, reason: str, cost: Cost) -> None:
        """A billed answer no job took, at the price of the lane that billed it."""
        if cost.known:
            reason = reason if reason in WASTE_REASONS else OTHER
            self.waste_usd.labels(self._model(model), self.team(team), _lane(lane), reason).inc(float(cost.paid_usd))

    def record_forfeited(self, *, model: str, team: str, reason: str, usd: Decimal) -> None:
        """A rescue's paid price above the lane it left (`reason`: its RescueReason)."""
        reason = reason if reason in RESCUE_REASONS else OTHER
        self.forfeited_usd.labels(self._model(model), self.team(team), reason).inc(max(float(usd), 0.0))

    def record_reconciliation(self, *, model: str, difference_usd: Decimal, matched: bool, checked: bool) -> None:
        result = "unchecked" if not checked else "matched" if matched else "mismatched"
        model = self._model(model)
        self.reconciliations.labels(model, result).inc()
        self.reconciliation_difference_usd.labels(model).inc(abs(float(difference_usd)))

    def observe_answer(self, *, lane: str, model: str, seconds: float, deadline_margin: float | None) -> None:
        """Time to answer, and for requests with a deadline the seconds left (negative: a miss)."""
        lane = _lane(lane)
        self.time_to_answer.labels(lane).observe(max(seconds, 0.0))
        if deadline_margin is None:
            return
        self.deadline_margin.labels(lane).observe(deadline_margin)
        if deadline_margin < 0:
            self.deadline_misses.labels(lane, self._model(model)).inc()

    def record_decision(self, *, lane: str, rule: str) -> None:
        self.decisions.labels(_lane(lane), self.rule(rule)).inc()

    def record_rescue(self, reason: RescueReason) -> None:
        self.rescues.labels(reason.value).inc()

    def record_batch_submitted(self, *, queue: str, size: int) -> None:
        self.batch_size.labels(self.queue(queue)).observe(size)

    def record_batch_finished(self, *, queue: str, state: str, turnaround_seconds: float) -> None:
        queue, state = self.queue(queue), state if state in BATCH_STATES else OTHER
        self.batch_turnaround.labels(queue, state).observe(max(turnaround_seconds, 0.0))
        self.batches_finished.labels(queue, state).inc()

    def record_batch_stalled(self, *, queue: str) -> None:
        self.batches_stalled.labels(self.model(queue)).inc()

    def record_capacity(self, *, queue: str, enqueued: int, budget: int | None) -> None:
        """A queue's enqueued-token count and budget as the submitter last read them (budget None: unlimited,
        no budget or headroom series)."""
        queue = self.queue(queue)
        self.enqueued_tokens.labels(queue).set(enqueued)
        if budget is not None:
            self.enqueued_token_budget.labels(queue).set(budget)
            self.enqueued_token_headroom.labels(queue).set(budget - enqueued)

    def record_capacity_refusal(self, queue: str) -> None:
        self.capacity_refusals.labels(self.queue(queue)).inc()

    def record_webhook(self, outcome: WebhookOutcome) -> None:
        self.webhook_deliveries.labels(outcome.value).inc()

    def record_upstream_error(self, *, lane: str, status: int | None = None, timeout: bool = False) -> None:
        """An upstream failure: an HTTP status, a timeout, or (neither) a connection error."""
        self.upstream_errors.labels(_lane(lane), status_class(status, timeout=timeout)).inc()

    def record_task_failure(self, stage: str) -> None:
        self.task_failures.labels(stage if stage in WORKER_STAGES else OTHER).inc()

    def record_lease_lost(self, stage: str) -> None:
        self.leases_lost.labels(stage if stage in WORKER_STAGES else OTHER).inc()

    def record_config_reload(self, *, applied: bool) -> None:
        self.config_reloads.labels("applied" if applied else "refused").inc()

    def update_queues(self, snapshot: QueueSnapshot) -> None:
        self.queues.update(snapshot)

    def set_account_problems(self, problems: Iterable[tuple[str, str]]) -> None:
        """The (group, code) pairs with an account problem now; every other series is dropped."""
        self.account_problems.clear()
        for group, code in problems:
            label = code if code in ACCOUNT_PROBLEM_CODES else OTHER
            self.account_problems.labels(self.queue(group), label).set(1)

    def _model(self, name: str) -> str:
        """The `model` label of a model name or of a queue group (its model: the endpoint is a label of its own)."""
        return self.model(model_of(name))


_COST = ["model", "team", "lane"]
_MONEY = [*_COST, "endpoint"]  # list, paid and saved dollars, per endpoint like the request counters


def queue_groups(models: Iterable[str]) -> list[str]:
    """The `queue` label values of some models: each model's own (chat) and its other endpoints' queues."""
    return [queue_group(model, endpoint) for model in models for endpoint in Endpoint]


def _lane(lane: str) -> str:
    return lane if lane in LANES else OTHER


def status_class(status: int | None, *, timeout: bool = False) -> str:
    if timeout:
        return "timeout"
    if status is None:
        return "connection"
    if status == 429:
        return "429"
    return "5xx" if status >= 500 else "4xx"


def metrics_for_config(config: Config, registry: CollectorRegistry | None = None) -> Metrics:
    """A catalogue whose label guards know the config's models, teams and policy rules."""
    metrics = Metrics(registry)
    metrics.set_known(**known_labels(config))
    return metrics


def known_labels(config: Config) -> dict[str, list[str]]:
    """Model, team and rule names a `proxy.settings.Config` declares (the only values allowed in labels)."""
    teams = {key.team for key in config.auth.keys} | {"master"}
    return {
        "models": [deployment.model_name for deployment in config.model_list],
        "teams": sorted(teams),
        "rules": [rule.name for rule in config.policy.rules] + ["default", "header"],
    }


class MetricsServer:
    """The worker's /metrics endpoint (a small threaded HTTP server, prometheus_client's own)."""

    def __init__(self, metrics: Metrics, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped remotely
        self._server, self._thread = start_http_server(port, addr=addr, registry=metrics.registry)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def metrics_server(metrics: Metrics, port: int, addr: str = "0.0.0.0") -> MetricsServer:  # noqa: S104
    """Serve `metrics` on http://addr:port/metrics in a background thread (BATCHGATE_METRICS_PORT, 9090)."""
    return MetricsServer(metrics, port, addr)
