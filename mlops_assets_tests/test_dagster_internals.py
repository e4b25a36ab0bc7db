"""The Dagster internals behind mlops_assets/defs/dagster_internals.py still exist and behave
as it expects: this fails loudly on an upgrade that moves them, before a sensor does."""

import dagster as dg

from mlops_assets.defs.dagster_internals import freshness_failed, latest_check_evaluation


def test_the_internal_names_still_exist():
    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    assert {"SUCCEEDED", "FAILED"} <= set(AssetCheckExecutionRecordStatus.__members__)
    assert freshness_failed(FreshnessState.FAIL) and not freshness_failed(FreshnessState.PASS)


def test_the_latest_completed_check_evaluation_is_found():
    @dg.asset
    def thing():
        return 1

    @dg.asset_check(asset=thing)
    def positive(thing):
        return dg.AssetCheckResult(passed=thing > 0, description="positive")

    with dg.instance_for_test() as instance:
        key = dg.AssetCheckKey(thing.key, "positive")
        assert latest_check_evaluation(instance, key) == (None, None)
        assert dg.materialize([thing, positive], instance=instance).success
        record, evaluation = latest_check_evaluation(instance, key)
        assert record is not None and evaluation.passed and evaluation.description == "positive"
