import pandas as pd

from mlops_assets.featurize import SPLIT, build_features, reference_profile
from mlops_assets.quality import load_dataset


def _dataset(store, spec, ref):
    files = {p: store.get(ref, p) for p in store.list(ref, spec.dataset.prefix)}
    df, problems = load_dataset(files, spec.dataset)
    assert problems == []
    return df


def test_features_are_deterministic_and_split_by_key(seeded, spec):
    store, head = seeded
    ds = _dataset(store, spec, head)
    a = build_features(ds, spec)
    b = build_features(ds.sample(frac=1, random_state=1), spec)  # row order must not matter
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == [
        spec.dataset.key,
        spec.dataset.timestamp,
        *spec.features,
        spec.target,
        SPLIT,
    ]
    share = (a[SPLIT] == "holdout").mean()
    assert abs(share - spec.split.holdout_fraction) < 0.08


def test_a_row_keeps_its_split_as_data_grows(seeded, spec):
    store, head = seeded
    ds = _dataset(store, spec, head)
    small = build_features(ds.iloc[: len(ds) // 2], spec).set_index(spec.dataset.key)[SPLIT]
    full = build_features(ds, spec).set_index(spec.dataset.key)[SPLIT]
    assert (full.loc[small.index] == small).all()


def test_reference_profile_describes_the_training_split(seeded, spec):
    store, head = seeded
    table = build_features(_dataset(store, spec, head), spec)
    profile = reference_profile(table, spec)
    train = table[table[SPLIT] == "train"]
    assert profile["rows"] == len(train)
    col = spec.numeric_features[0]
    assert abs(profile["columns"][col]["mean"] - train[col].mean()) < 1e-5
    cat = spec.categorical_features[0]
    assert abs(sum(profile["columns"][cat]["frequencies"].values()) - 1) < 1e-4
    assert profile == reference_profile(table, spec)
