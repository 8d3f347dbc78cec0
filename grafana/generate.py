"""Generate batchgate's Grafana dashboards from code (grafana-foundation-sdk).

    python grafana/generate.py            # rewrite grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 when the committed JSON is not current

Every query is PromQL over the `batchgate_` metrics (docs/metrics.md). Counters from many processes are
summed; queue and batch gauges describe shared Redis state that every worker reports, so they use max.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
RANGE = "$__range"
TEAM = 'team=~"$team"'
DEFERRED_TEAM = f'lane!="sync",{TEAM}'
FULL_WIDTH = 24

PanelKind = Literal["stat", "timeseries"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: Sequence[Query]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    decimals: int | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: Sequence[Panel] = field(default_factory=tuple)


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    rows: Sequence[Row]
    team_filter: bool = False


def rate(metric: str, selector: str = "", window: str = RATE) -> str:
    return f"rate({metric}{{{selector}}}[{window}])"


def increase(metric: str, selector: str = "", window: str = RANGE) -> str:
    return f"increase({metric}{{{selector}}}[{window}])"


def quantile(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))"


SAVINGS = Board(
    uid="batchgate-savings",
    title="batchgate: savings",
    description="What batchgate saved: list price of every finished request versus what was paid in its lane.",
    team_filter=True,
    rows=(
        Row(
            "Over the selected range",
            (
                Panel(
                    "Saved",
                    (
                        Query(
                            f"sum({increase('batchgate_saved_usd_total', TEAM)})"
                            f" - (sum({increase('batchgate_waste_usd_total', TEAM)}) or vector(0))"
                        ),
                    ),
                    unit="currencyUSD",
                    kind="stat",
                    width=6,
                    height=5,
                    decimals=2,
                    description="List minus paid minus waste (docs/metrics.md).",
                ),
                Panel(
                    "Paid",
                    (Query(f"sum({increase('batchgate_paid_usd_total', TEAM)})"),),
                    unit="currencyUSD",
                    kind="stat",
                    width=6,
                    height=5,
                    decimals=2,
                ),
                Panel(
                    "Savings, % of list",
                    (
                        Query(
                            f"100 * sum({increase('batchgate_saved_usd_total', TEAM)})"
                            f" / sum({increase('batchgate_list_usd_total', TEAM)})"
                        ),
                    ),
                    unit="percent",
                    kind="stat",
                    width=6,
                    height=5,
                    decimals=1,
                ),
                Panel(
                    "Traffic deferred",
                    (
                        Query(
                            f"100 * sum({increase('batchgate_requests_total', DEFERRED_TEAM)})"
                            f" / sum({increase('batchgate_requests_total', TEAM)})"
                        ),
                    ),
                    unit="percent",
                    kind="stat",
                    width=6,
                    height=5,
                    decimals=1,
                    description="Share of finished requests answered by the batch or flex lane.",
                ),
            ),
        ),
        Row(
            "Over time",
            (
                Panel(
                    "Saved per hour, by team",
                    (Query(f"3600 * sum by (team) ({rate('batchgate_saved_usd_total', TEAM)})", "{{team}}"),),
                    unit="currencyUSD",
                ),
                Panel(
                    "Savings, % of list",
                    (
                        Query(
                            f"100 * sum({rate('batchgate_saved_usd_total', TEAM)})"
                            f" / sum({rate('batchgate_list_usd_total', TEAM)})",
                            "savings %",
                        ),
                    ),
                    unit="percent",
                ),
                Panel(
                    "List versus paid per hour, by lane",
                    (
                        Query(f"3600 * sum by (lane) ({rate('batchgate_list_usd_total', TEAM)})", "list {{lane}}"),
                        Query(f"3600 * sum by (lane) ({rate('batchgate_paid_usd_total', TEAM)})", "paid {{lane}}"),
                    ),
                    unit="currencyUSD",
                ),
                Panel(
                    "Share of traffic by lane",
                    (
                        Query(
                            f"sum by (lane) ({rate('batchgate_requests_total', TEAM)})"
                            f" / ignoring (lane) group_left sum({rate('batchgate_requests_total', TEAM)})",
                            "{{lane}}",
                        ),
                    ),
                    unit="percentunit",
                ),
                Panel(
                    "Saved by model (range)",
                    (Query(f"sum by (model) ({increase('batchgate_saved_usd_total', TEAM)})", "{{model}}"),),
                    unit="currencyUSD",
                ),
                Panel(
                    "Saved by endpoint (range)",
                    (Query(f"sum by (endpoint) ({increase('batchgate_saved_usd_total', TEAM)})", "{{endpoint}}"),),
                    unit="currencyUSD",
                    description="List minus paid per API endpoint (chat completions, embeddings, ...).",
                ),
                Panel(
                    "Shadow mode: would have saved (range)",
                    (Query(f"sum by (model) ({increase('batchgate_shadow_saved_usd_total', TEAM)})", "{{model}}"),),
                    unit="currencyUSD",
                    description="Calls a shadow rule forwarded synchronously (paid at list): what deferring would "
                    "have saved.",
                ),
                Panel(
                    "Budget headroom",
                    (
                        Query(
                            "min by (scope, name, period) (batchgate_budget_headroom_usd)",
                            "{{scope}} {{name}} ({{period}})",
                        ),
                    ),
                    unit="currencyUSD",
                    description="What each team's and key's daily and monthly budget leaves this period (UTC); "
                    "a call whose worst-case cost does not fit is refused with 429 budget_exceeded.",
                ),
                Panel(
                    "Paid, saved and waste per hour",
                    (
                        Query(f"3600 * sum({rate('batchgate_paid_usd_total', TEAM)})", "paid"),
                        Query(f"3600 * sum({rate('batchgate_saved_usd_total', TEAM)})", "list - paid"),
                        Query(f"3600 * sum({rate('batchgate_waste_usd_total', TEAM)}) or vector(0)", "waste"),
                    ),
                    unit="currencyUSD",
                    description="Waste: billed answers no job took. Saved = list - paid - waste.",
                ),
                Panel(
                    "Waste by reason, model and lane (range)",
                    (
                        Query(
                            f"sum by (reason, model, lane) ({increase('batchgate_waste_usd_total', TEAM)})"
                            " or vector(0)",
                            "{{reason}} {{model}} {{lane}}",
                        ),
                    ),
                    unit="currencyUSD",
                    description="answered_elsewhere: the job was rescued or answered by another lane; cancelled: "
                    "the caller cancelled after the line ran; duplicate: another batch answered it.",
                ),
                Panel(
                    "Forfeited savings by rescue reason (range)",
                    (
                        Query(
                            f"sum by (reason) ({increase('batchgate_forfeited_savings_usd_total', TEAM)}) or vector(0)",
                            "{{reason}}",
                        ),
                    ),
                    unit="currencyUSD",
                    description="Rescues paid at list: what they paid above the batch (or flex) price they left.",
                ),
                Panel(
                    "Reconciliation: batches billed versus recorded (range)",
                    (
                        Query(
                            f"sum by (result) ({increase('batchgate_reconciliations_total')})",
                            "{{result}}",
                        ),
                        Query(
                            f"sum({increase('batchgate_reconciliation_difference_usd_total')})",
                            "difference USD",
                        ),
                    ),
                    description="Each ended batch's usage and request counts against what batchgate recorded; "
                    "any mismatch is also logged and shown by `batchgate status`.",
                ),
                Panel(
                    "Requests of unknown cost (range)",
                    (
                        Query(
                            f"sum by (model) ({increase('batchgate_unknown_cost_requests_total')}) or vector(0)",
                            "{{model}}",
                        ),
                    ),
                    description="Models with no price in litellm's map nor in the config: counted, never guessed.",
                ),
            ),
        ),
    ),
)

OPERATIONS = Board(
    uid="batchgate-operations",
    title="batchgate: operations",
    description="Queues, batches, deadlines and errors.",
    rows=(
        Row(
            "Queues and batches",
            (
                Panel("Queue depth", (Query("max by (queue) (batchgate_queue_depth)", "{{queue}}"),)),
                Panel(
                    "Oldest queued job age",
                    (Query("max by (queue) (batchgate_queue_oldest_age_seconds)", "{{queue}}"),),
                    unit="s",
                ),
                Panel(
                    "Open batches by state",
                    (Query("sum by (state) (max by (queue, state) (batchgate_batches))", "{{state}}"),),
                ),
                Panel(
                    "Oldest open batch age versus expected turnaround",
                    (
                        Query("max by (queue) (batchgate_batch_oldest_open_age_seconds)", "age {{queue}}"),
                        Query("max by (queue) (batchgate_batch_turnaround_estimate_seconds)", "expected {{queue}}"),
                    ),
                    unit="s",
                ),
                Panel(
                    "Batch turnaround",
                    (
                        Query(quantile(0.5, "batchgate_batch_turnaround_seconds"), "p50"),
                        Query(quantile(0.95, "batchgate_batch_turnaround_seconds"), "p95"),
                    ),
                    unit="s",
                ),
                Panel(
                    "Batch size",
                    (
                        Query(quantile(0.5, "batchgate_batch_size_requests"), "p50"),
                        Query(quantile(0.95, "batchgate_batch_size_requests"), "p95"),
                    ),
                ),
                Panel(
                    "Enqueued tokens versus budget",
                    (
                        Query("max by (queue) (batchgate_enqueued_tokens)", "enqueued {{queue}}"),
                        Query("max by (queue) (batchgate_enqueued_token_headroom)", "headroom {{queue}}"),
                    ),
                    description="Estimated prompt tokens of open batches, and what the provider's enqueued-token "
                    "limit (config or reported) leaves for the next batch; at 0 the queue is held.",
                ),
                Panel(
                    "Capacity refusals (range)",
                    (
                        Query(
                            f"sum by (queue) ({increase('batchgate_capacity_refusals_total')}) or vector(0)",
                            "{{queue}}",
                        ),
                    ),
                    description="Batches the provider refused for its enqueued-token limit (retried, never failed).",
                ),
            ),
        ),
        Row(
            "Deadlines and answers",
            (
                Panel(
                    "Time to answer p95, by lane",
                    (Query(quantile(0.95, "batchgate_time_to_answer_seconds", "lane"), "{{lane}}"),),
                    unit="s",
                ),
                Panel(
                    "Deadline margin p5, by lane",
                    (Query(quantile(0.05, "batchgate_deadline_margin_seconds", "lane"), "{{lane}}"),),
                    unit="s",
                    description="Seconds left before the deadline when answered; near zero means cutting it close.",
                ),
                Panel(
                    "Deadline misses",
                    (Query(f"sum by (lane) (increase(batchgate_deadline_misses_total[{RATE}]))", "{{lane}}"),),
                ),
                Panel(
                    "Rescues, by reason",
                    (Query(f"sum by (reason) ({rate('batchgate_rescues_total')})", "{{reason}}"),),
                    unit="reqps",
                ),
            ),
        ),
        Row(
            "Errors and traffic",
            (
                Panel(
                    "Upstream errors, by status class",
                    (Query(f"sum by (status_class) ({rate('batchgate_upstream_errors_total')})", "{{status_class}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Webhook deliveries, by outcome",
                    (Query(f"sum by (outcome) ({rate('batchgate_webhook_deliveries_total')})", "{{outcome}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Requests, by lane and outcome",
                    (Query(f"sum by (lane, outcome) ({rate('batchgate_requests_total')})", "{{lane}} {{outcome}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Requests, by endpoint and lane",
                    (Query(f"sum by (endpoint, lane) ({rate('batchgate_requests_total')})", "{{endpoint}} {{lane}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Policy decisions, by lane",
                    (Query(f"sum by (lane) ({rate('batchgate_policy_decisions_total')})", "{{lane}}"),),
                    unit="reqps",
                ),
            ),
        ),
    ),
)

BOARDS = (SAVINGS, OPERATIONS)


def build(board: Board) -> dict[str, Any]:
    builder = (
        dashboard.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags(["batchgate"])
        .refresh("30s")
        .time("now-24h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    if board.team_filter:
        builder = builder.with_variable(
            dashboard.QueryVariable("team")
            .label("Team")
            .datasource(DATASOURCE)
            .query("label_values(batchgate_requests_total, team)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
    panel_id = 1
    for row in board.rows:
        builder = builder.with_row(dashboard.Row(row.title).id(panel_id))
        panel_id += 1
        for panel in row.panels:
            builder = builder.with_panel(_panel(panel, panel_id))
            panel_id += 1
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(builder.build()))
    return encoded


def _panel(spec: Panel, panel_id: int) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = (
            stat.Panel()
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .graph_mode(BigValueGraphMode.NONE)
        )
    else:
        builder = (
            timeseries.Panel()
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM)
                .calcs([])
            )
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI))
        )
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .height(spec.height)
        .span(spec.width)
    )
    if spec.decimals is not None:
        builder = builder.decimals(spec.decimals)
    for index, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        builder = builder.with_target(target)
    return builder


def render(board: Board) -> str:
    return json.dumps(build(board), indent=2, sort_keys=True) + "\n"


def outputs() -> dict[Path, str]:
    return {DASHBOARDS_DIR / f"{board.uid}.json": render(board) for board in BOARDS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is not current")
    args = parser.parse_args(argv)
    stale = [path for path, text in outputs().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is not current: run python grafana/generate.py", file=sys.stderr)
        return 1 if stale else 0
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in outputs().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
