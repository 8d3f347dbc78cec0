"""Budget headroom as Prometheus gauges, read from Redis when /metrics is scraped (so every process reports the
shared truth, and a new period shows its full headroom at once).

batchgate_budget_limit_usd{scope,name,period} and batchgate_budget_headroom_usd{scope,name,period}: scope is team
or key, period day or month; headroom is the limit less what was spent and reserved this period (negative when a
settlement went past it). deploy/prometheus/rules.yml alerts on headroom under 10% of the limit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from proxy.budgets import Budgets
from proxy.settings import Config

LABELS = ("scope", "name", "period")


class BudgetGauges:
    """The two gauges, refreshed from the budget store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.limit = Gauge("batchgate_budget_limit_usd", "Configured spending limit", LABELS, registry=registry)
        self.headroom = Gauge(
            "batchgate_budget_headroom_usd", "Spending limit left this period (USD)", LABELS, registry=registry
        )

    async def refresh(self, budgets: Budgets, config: Config) -> None:
        """Set every configured budget's gauges (and drop those of budgets no longer configured)."""
        found = await budgets.headroom(config)
        self.limit.clear()
        self.headroom.clear()
        for limit, left in found:
            labels = (limit.scope, limit.name, limit.period)
            self.limit.labels(*labels).set(float(limit.usd))
            self.headroom.labels(*labels).set(float(left))
