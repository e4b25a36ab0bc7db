"""The automation condition of the loop (kept apart so asset modules can import it)."""

import dagster as dg

# eager: run when a dependency updated (or the asset went missing), not while anything
# upstream is missing or running; and only if every blocking check upstream passed.
LOOP = (
    dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager, blocking checks passed")
