"""The automation condition of the loop and the freshness policies (kept apart so asset
modules can import them)."""

import datetime as dt

import dagster as dg

from mlops_assets.specs import ModelSpec

# eager: run when a dependency updated (or the asset went missing), not while anything
# upstream is missing or running; and only if every blocking check upstream passed.
LOOP = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, blocking checks passed")


def freshness_policy(max_age_hours: float, spec: ModelSpec) -> dg.FreshnessPolicy:
    """Fails ``max_age_hours`` after the last materialization, warns at the spec's fraction."""
    fail = dt.timedelta(hours=max_age_hours)
    return dg.FreshnessPolicy.time_window(
        fail_window=fail, warn_window=fail * spec.freshness.warn_fraction
    )
