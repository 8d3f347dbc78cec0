"""docs/configuration.md names every setting and every config key outside the policy language; each knob maps
to a test that shows it working (BEHAVIOUR_TESTS)."""

from __future__ import annotations

import ast
import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from proxy.config_scope import key_is_live
from proxy.policy.model import Action
from proxy.settings import Config, Settings

POLICY_LANGUAGE = "policy."  # documented field by field in docs/policies.md


def leaf_keys(model: type[BaseModel]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        candidates = [annotation, *typing.get_args(annotation)]
        for arg in list(candidates):
            candidates.extend(typing.get_args(arg))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if nested:
            for key in leaf_keys(nested[0]):
                yield f"{name}.{key}"
        else:
            yield name


def test_every_environment_setting_is_documented(repo_root: Path) -> None:
    text = (repo_root / "docs" / "configuration.md").read_text()
    missing = [f"BATCHGATE_{name.upper()}" for name in Settings.model_fields if f"BATCHGATE_{name.upper()}" not in text]
    assert not missing


def test_every_config_key_is_documented(repo_root: Path) -> None:
    text = (repo_root / "docs" / "configuration.md").read_text()
    missing = [
        key for key in leaf_keys(Config) if not key.startswith(POLICY_LANGUAGE) and key.rsplit(".", 1)[-1] not in text
    ]
    assert not missing, f"docs/configuration.md does not mention: {missing}"


def documented_reload_markers(text: str) -> dict[str, str]:
    """Each key of the config tables with its `reload` column, as a full path (`worker.lease`, `auth.keys.team`).

    A row's key is relative to its section (the first name in the `## ` heading) unless it already starts with
    one of the heading's names (`## limits and retry` rows read `limits.max_body_bytes`)."""
    markers: dict[str, str] = {}
    names: list[str] = []
    column: int | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            names, column = re.findall(r"`([^`]+)`", line), None
        elif line.startswith("| key |"):
            headers = [cell.strip() for cell in line.strip("|").split("|")]
            column = headers.index("reload") if "reload" in headers else None
        elif line.startswith("| `") and names and column is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            for key in re.findall(r"`([^`]+)`", cells[0]):
                path = key.replace("[]", "")
                full = path if path.split(".")[0] in names else f"{names[0]}.{path}"
                markers[full] = cells[column]
    return markers


def test_each_config_key_has_a_reload_marker_that_matches_the_code(repo_root: Path) -> None:
    markers = documented_reload_markers((repo_root / "docs" / "configuration.md").read_text())
    assert set(markers.values()) == {"live", "restart"}
    wrong = {key: marker for key, marker in markers.items() if key_is_live(key) != (marker == "live")}
    assert not wrong, f"docs/configuration.md marks these keys wrongly: {wrong}"
    unmarked = [
        key
        for key in leaf_keys(Config)
        if not key.startswith(POLICY_LANGUAGE)
        and not any(key == marked or key.startswith(marked + ".") for marked in markers)
    ]
    assert not unmarked, f"docs/configuration.md gives no reload marker for: {unmarked}"
    assert key_is_live("policy")


# Every knob and the test that shows it changing behaviour ("tests/<file>.py::<test function>"). A knob is a
# config key as leaf_keys() spells it, or "policy.action.<field>" for a field of a rule (and of `default`).
# When you add, change or remove a knob, add or move its row here; a knob with no such test yet is listed in
# NOT_YET_MAPPED, so that a new knob cannot go unnoticed.
BEHAVIOUR_TESTS: dict[str, str] = {
    "batching.max_wait": "tests/integration/test_rule_batching.py::"
    "test_a_rules_max_wait_flushes_its_jobs_while_the_queues_own_wait_holds_others",
    "batching.max_requests": "tests/integration/test_worker_batches.py::"
    "test_two_workers_racing_on_one_queue_submit_each_job_once",
    "batching.turnaround_estimate": "tests/integration/test_worker_batches.py::"
    "test_a_deadline_too_short_for_the_batch_lane_is_answered_synchronously",
    "worker.safety_margin": "tests/integration/test_worker_batches.py::"
    "test_a_stalled_batch_is_rescued_before_the_deadline",
    "delivery.max_wait": "tests/integration/test_delivery_hold.py::"
    "test_max_wait_ends_a_hold_with_an_error_naming_the_job",
    "delivery.dedupe_identical_bodies": "tests/integration/test_delivery_hold.py::"
    "test_identical_bodies_attach_when_the_config_allows_it",
    "delivery.attach_client_retries": "tests/integration/test_attach_retries.py::"
    "test_attaching_sdk_retries_can_be_turned_off",
    "delivery.unrequested": "tests/integration/test_unrequested_delivery.py::"
    "test_the_config_can_answer_unrequested_deferrals_202",
    "batching.completion_window": "tests/integration/test_worker_batches.py::"
    "test_the_configured_completion_window_is_what_the_provider_receives",
    "worker.concurrency": "tests/unit/test_scheduler.py::test_the_bound_holds_bounded_items_only",
    "batching.file_expiry": "tests/integration/test_file_hygiene.py::"
    "test_uploads_and_outputs_carry_the_configured_expiry_and_an_ended_batchs_input_is_deleted",
    "worker.account_probe_interval": "tests/integration/test_classify_then_act.py::"
    "test_a_probe_after_the_interval_resumes_submission_once_the_account_is_fixed",
    "batching.enqueued_token_limit": "tests/integration/test_capacity.py::"
    "test_a_backlog_far_over_the_enqueued_token_limit_is_paced_and_answered_at_batch_price",
    "policy.action.max_wait": "tests/integration/test_rule_batching.py::"
    "test_a_job_requeued_after_a_failed_line_is_due_again_by_its_rules_max_wait",
    "pricing.batch_discounts": "tests/integration/test_config_scope_reload.py::"
    "test_a_reload_swaps_the_batch_discount_table_into_the_price_book",
    "model_list.litellm_params.azure_ad_token": "tests/integration/test_azure_batches.py::"
    "test_azure_embeddings_deferred_through_a_global_batch_each_answer_its_own_and_the_books_equal_the_bill",
    "model_list.litellm_params.batch_s3_bucket": "tests/integration/test_bedrock_batches.py::"
    "test_a_mixed_workload_is_answered_from_converse_and_a_bedrock_job_and_reconciles_exactly",
    "model_list.litellm_params.batch_role_arn": "tests/integration/test_bedrock_batches.py::"
    "test_a_mixed_workload_is_answered_from_converse_and_a_bedrock_job_and_reconciles_exactly",
    "model_list.litellm_params.batch_min_records": "tests/integration/test_bedrock_batches.py::"
    "test_a_mixed_workload_is_answered_from_converse_and_a_bedrock_job_and_reconciles_exactly",
    "model_list.litellm_params.batch_deployment": "tests/integration/test_azure_batches.py::"
    "test_azure_models_answer_sync_and_deferred_calls_and_the_books_equal_the_bill",
    "model_list.litellm_params.batch_gcs_bucket": "tests/integration/test_vertex_stack.py::"
    "test_deferred_calls_are_answered_from_a_vertex_job_and_reconcile",
    "limits.redis_idle_timeout": "tests/integration/test_redis_pool_idle.py::"
    "test_a_burst_of_connections_closes_once_idle",
    "worker.turnaround_min_batches": "tests/unit/test_turnaround.py::"
    "test_until_enough_batches_are_seen_the_configured_estimate_answers",
    "worker.turnaround_half_life": "tests/integration/test_learned_turnaround.py::"
    "test_observations_are_shared_through_redis_and_decay_with_the_half_life",
    "worker.turnaround_confidence": "tests/unit/test_turnaround.py::"
    "test_the_guard_keeps_a_job_while_its_batch_ends_in_time_at_the_confidence_and_not_after",
    "worker.lane_rule": "tests/unit/test_expected_cost.py::"
    "test_the_book_gives_the_break_even_level_per_model_and_the_confidence_under_the_confidence_rule",
    "worker.cancel_lead": "tests/integration/test_learned_turnaround.py::"
    "test_a_batch_still_running_near_a_jobs_last_safe_moment_is_cancelled_its_finished_lines_used",
    "worker.stall_quantile": "tests/integration/test_learned_turnaround.py::"
    "test_a_stalled_batch_is_cancelled_and_its_jobs_rebatched_within_their_deadline",
    "auth.keys.budget.daily_usd": "tests/integration/test_budgets_stack.py::"
    "test_a_key_budget_settles_sync_and_deferred_calls_and_refuses_past_its_limit",
    "auth.keys.budget.monthly_usd": "tests/unit/test_budgets.py::"
    "test_the_day_rolls_over_at_utc_midnight_and_the_month_keeps_counting",
    "auth.team_budgets.daily_usd": "tests/unit/test_budgets.py::"
    "test_two_keys_of_one_team_are_kept_apart_and_both_count_against_the_team",
    "auth.team_budgets.monthly_usd": "tests/unit/test_budgets.py::test_headroom_gauges_show_each_budget_and_period",
}

NOT_YET_MAPPED = frozenset(
    """
    model_list.model_name model_list.supports_flex
    model_list.litellm_params.model model_list.litellm_params.api_base model_list.litellm_params.api_key
    model_list.litellm_params.input_cost_per_token model_list.litellm_params.output_cost_per_token
    model_list.litellm_params.input_cost_per_token_batches model_list.litellm_params.output_cost_per_token_batches
    model_list.litellm_params.cache_read_input_token_cost
    model_list.batch.max_wait model_list.batch.max_requests model_list.batch.max_bytes
    model_list.batch.turnaround_estimate model_list.batch.completion_window model_list.batch.file_expiry
    model_list.batch.enqueued_token_limit
    auth.master_key auth.keys.name auth.keys.key auth.keys.team auth.keys.webhook_secret
    limits.max_body_bytes limits.upstream_timeout limits.upstream_connect_timeout
    retry.max_attempts retry.base_delay retry.max_delay retry.budget
    batching.max_bytes
    worker.poll_interval_min worker.poll_interval_max worker.tick worker.lease worker.flex_turnaround
    worker.result_ttl worker.sync_concurrency worker.drain_timeout
    delivery.default delivery.hold_heartbeat delivery.webhook.default_url delivery.webhook.secret
    delivery.webhook.retry_period delivery.webhook.timeout delivery.webhook.allow_hosts
    policy.action.lane policy.action.deadline policy.action.min_deadline policy.action.max_deadline
    policy.action.delivery policy.action.callback_url policy.action.shadow
    """.split()  # noqa: SIM905 - a block of names is easier to edit than a list of quoted strings
)


def every_knob() -> set[str]:
    config_keys = {key for key in leaf_keys(Config) if not key.startswith(POLICY_LANGUAGE)}
    return config_keys | {f"policy.action.{name}" for name in Action.model_fields}


def test_every_knob_has_a_behaviour_test_or_is_listed_as_lacking_one() -> None:
    knobs = every_knob()
    assert not set(BEHAVIOUR_TESTS) & NOT_YET_MAPPED
    assert set(BEHAVIOUR_TESTS) - knobs == set(), "rows for knobs that no longer exist"
    assert NOT_YET_MAPPED - knobs == set(), "NOT_YET_MAPPED names knobs that no longer exist"
    assert knobs - set(BEHAVIOUR_TESTS) - NOT_YET_MAPPED == set(), "knobs in neither BEHAVIOUR_TESTS nor NOT_YET_MAPPED"


def test_each_behaviour_test_exists(repo_root: Path) -> None:
    missing = []
    for knob, node in BEHAVIOUR_TESTS.items():
        path, _, name = node.partition("::")
        file = repo_root / path
        tree = ast.parse(file.read_text()) if file.is_file() else ast.Module(body=[], type_ignores=[])
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if name not in defined:
            missing.append(f"{knob}: {node}")
    assert not missing, f"behaviour tests not found: {missing}"
