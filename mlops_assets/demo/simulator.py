"""Demo data without the internet: realistic daily batches, drift scenarios and bad batches.

Each generator makes one day of rows for one spec: numeric and categorical features, a target
with a learnable relationship, noise, and weekly/yearly seasonality. Drift scenarios change the
world the way production data changes:

- ``covariate_shift``: the feature distributions move (the relationship stays).
- ``concept_drift``: the relationship between features and target changes.

Faults make a batch that must be rejected by the write-audit-publish ingestion, one per rule,
so the demo (and the tests) can show a bad batch never reaching main.

Plain library code: no Dagster import. Deterministic for a given (spec, day, seed, scenario).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Callable

import numpy as np
import pandas as pd

DRIFTS = ("none", "covariate_shift", "concept_drift")
FAULTS = (
    "missing_column",
    "wrong_dtype",
    "nulls",
    "out_of_range",
    "unknown_category",
    "duplicate_keys",
    "empty_file",
    "not_utf8",
)


def _rng(name: str, day: dt.date, seed: int, drift: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{name}|{day.isoformat()}|{seed}|{drift}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _season(day: dt.date) -> float:
    """Yearly seasonality in [-1, 1], peaking mid-summer."""
    return float(np.sin(2 * np.pi * (day.timetuple().tm_yday - 80) / 365.25))


def _churn(
    day: dt.date, rows: int, rng: np.random.Generator, drift: str
) -> tuple[pd.DataFrame, np.ndarray]:
    shifted = drift == "covariate_shift"
    plan = rng.choice(
        ["basic", "standard", "premium"],
        size=rows,
        p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.35, 0.15],
    )
    region = rng.choice(["north", "south", "east", "west"], size=rows, p=[0.3, 0.2, 0.25, 0.25])
    tenure = np.clip(rng.gamma(2.0, 6.0 if shifted else 12.0, rows), 0, 240).round().astype(int)
    base_charge = pd.Series(plan).map({"basic": 25.0, "standard": 55.0, "premium": 95.0}).to_numpy()
    charges = np.clip(base_charge * (1.4 if shifted else 1.0) + rng.normal(0, 8, rows), 1, 999)
    tickets = rng.poisson(2.5 if shifted else 1.2, rows)
    # Usage follows the season; what signals churn is using less than is usual for the season,
    # so the churn rate (about 24%) and the signal hold on every day of the year.
    usual = 40 + 15 * _season(day)
    usage = np.clip(rng.normal(usual, 15, rows), 0, 744)
    actual = usage.copy()  # what the customer used; the metered column may miss it
    usage[rng.random(rows) < 0.02] = np.nan  # usage metering sometimes misses a customer
    # Strong enough that a first model on a few days of data ranks churners well (true ROC AUC
    # about 0.92): mlops_assets_tests/test_demo/test_demo_signal.py sweeps every day of a year.
    logit = (
        -1.0
        - 0.15 * tenure
        + 0.06 * (charges - 50)
        + 1.3 * tickets
        - 0.08 * (actual - usual)
        + 1.2 * (plan == "basic")
    )
    if drift == "concept_drift":
        # Loyalty stops protecting: long-tenure customers now churn on support trouble.
        logit = -2.5 + 0.06 * tenure + 0.8 * tickets - 0.03 * (charges - 50)
    truth = 1 / (1 + np.exp(-logit))
    churned = (rng.random(rows) < truth).astype(int)
    stamp = day.strftime("%Y%m%d")
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{stamp}-{i:05d}" for i in range(rows)],
            "snapshot_date": day.isoformat(),
            "tenure_months": tenure,
            "monthly_charges": charges.round(2),
            "support_tickets": tickets,
            "usage_hours": usage.round(1),
            "plan": plan,
            "region": region,
            "churned": churned,
        }
    )
    return frame, truth


def _demand(
    day: dt.date, rows: int, rng: np.random.Generator, drift: str
) -> tuple[pd.DataFrame, np.ndarray]:
    shifted = drift == "covariate_shift"
    store_type = rng.choice(["mall", "street", "outlet"], size=rows, p=[0.4, 0.4, 0.2])
    temp = rng.normal(12 + 10 * _season(day) + (9 if shifted else 0), 4, rows)
    price = np.clip(rng.lognormal(np.log(8.0 if shifted else 5.0), 0.3, rows), 0.01, 499)
    promotion = (rng.random(rows) < (0.5 if shifted else 0.2)).astype(int)
    dow = np.full(rows, day.weekday())
    weekend = (dow >= 5).astype(float)
    base = pd.Series(store_type).map({"mall": 120.0, "street": 80.0, "outlet": 60.0}).to_numpy()
    units = base * (1 + 0.3 * weekend) + 2.5 * temp - 6.0 * price + 35 * promotion
    if drift == "concept_drift":
        # Shoppers become price-insensitive and promotions stop working.
        units = base * (1 + 0.3 * weekend) + 2.5 * temp - 0.5 * price + 0 * promotion + 40
    truth = np.clip(units, 0, None)
    units = np.clip(units + rng.normal(0, 10, rows), 0, None)
    stamp = day.strftime("%Y%m%d")
    frame = pd.DataFrame(
        {
            "record_id": [f"R{stamp}-{i:05d}" for i in range(rows)],
            "sale_date": day.isoformat(),
            "temperature_c": temp.round(1),
            "price": price.round(2),
            "promotion": promotion,
            "day_of_week": dow,
            "store_type": store_type,
            "units_sold": units.round(1),
        }
    )
    return frame, truth


TEAMS = ("account", "billing", "technical")  # sorted: the order of a model's classes_


def _tickets(
    day: dt.date, rows: int, rng: np.random.Generator, drift: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Support tickets and the team that resolved each: account, billing or technical
    (multiclass). The truth is P(team) per row, one column per team in TEAMS order."""
    shifted = drift == "covariate_shift"
    channel = rng.choice(
        ["email", "chat", "phone"], size=rows, p=[0.2, 0.6, 0.2] if shifted else [0.5, 0.3, 0.2]
    )
    plan = rng.choice(["free", "pro", "enterprise"], size=rows, p=[0.5, 0.35, 0.15])
    words = np.clip(rng.lognormal(np.log(160 if shifted else 60), 0.5, rows), 1, 5000).round()
    errors = rng.poisson(2.2 if shifted else 0.8, rows)
    attachments = rng.poisson(1.8 if shifted else 0.6, rows)
    # An amount is quoted in about a third of tickets (an invoice, a refund, a charge).
    quoted = rng.random(rows) < 0.35
    amount = np.where(quoted, np.clip(rng.lognormal(np.log(40), 0.8, rows), 1, 10_000), 0.0)
    age = np.clip(rng.gamma(1.5, 1000.0 if shifted else 500.0, rows), 0, 5000)
    metered = age.copy()
    metered[rng.random(rows) < 0.02] = np.nan  # the account lookup sometimes fails
    # Early in the month invoices go out, and billing questions with them: a seasonality that
    # moves the mix of teams, never the signal (test_demo_signal.py sweeps every day of a year).
    invoices = 0.6 if day.day <= 5 else 0.0
    billing = -1.5 + invoices + 6.0 * quoted + 1.2 * (plan != "free") - 1.0 * errors
    technical = -2.4 + 3.0 * errors + 1.5 * attachments + 1.0 * (channel == "chat")
    account = 2.4 - age / 200 + 1.5 * (plan == "free") - 0.8 * attachments
    if drift == "concept_drift":
        # A payments outage: error codes now mean a failed charge (billing), and quoted amounts
        # come with account lockouts.
        billing = -0.5 + 1.4 * errors
        technical = -0.2 + 0.3 * attachments - 1.5 * quoted
        account = -0.4 + 2.5 * quoted - age / 2000
    logits = np.column_stack([account, billing, technical])
    truth = np.exp(logits - logits.max(axis=1, keepdims=True))
    truth /= truth.sum(axis=1, keepdims=True)
    drawn = (rng.random(rows)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    team = np.asarray(TEAMS)[np.minimum(drawn, len(TEAMS) - 1)]
    stamp = day.strftime("%Y%m%d")
    frame = pd.DataFrame(
        {
            "ticket_id": [f"T{stamp}-{i:05d}" for i in range(rows)],
            "opened_date": day.isoformat(),
            "channel": channel,
            "plan": plan,
            "message_words": words.astype(int),
            "error_codes": errors,
            "attachments": attachments,
            "amount_quoted": amount.round(2),
            "account_age_days": metered.round(0),
            "team": team,
        }
    )
    return frame, truth


Generator = Callable[[dt.date, int, np.random.Generator, str], tuple[pd.DataFrame, np.ndarray]]
GENERATORS: dict[str, Generator] = {
    "churn": _churn,
    "demand": _demand,
    "tickets": _tickets,
}


def simulate_batch(
    simulator: str, day: dt.date, rows: int = 500, seed: int = 0, drift: str = "none"
) -> pd.DataFrame:
    """One day of data for ``simulator`` (a spec's ``simulator`` name)."""
    return simulate_with_truth(simulator, day, rows, seed, drift)[0]


def simulate_with_truth(
    simulator: str, day: dt.date, rows: int = 500, seed: int = 0, drift: str = "none"
) -> tuple[pd.DataFrame, np.ndarray]:
    """The same day of data as :func:`simulate_batch`, with the truth each row was drawn from:
    P(target = 1) for a classifier's data, the expected target before noise for a regression,
    P(class) for a multiclass one (one column per class, in sorted order of the classes).

    The truth is what the best possible model would answer, so it bounds what a model can reach
    on this data: the demo-signal test sweeps it over every day of a year.
    """
    if simulator not in GENERATORS:
        raise ValueError(
            f"no demo-data simulator {simulator!r}; known: {', '.join(sorted(GENERATORS))}"
        )
    if drift not in DRIFTS:
        raise ValueError(f"unknown drift scenario {drift!r}; choose one of {', '.join(DRIFTS)}")
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    return GENERATORS[simulator](day, rows, _rng(simulator, day, seed, drift), drift)


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def inject_fault(df: pd.DataFrame, fault: str, key: str, target: str) -> bytes:
    """Turn a good batch into CSV bytes that break exactly one ingestion rule."""
    df = df.copy()
    numeric = [c for c in df.columns if pd.api.types.is_float_dtype(df[c]) and c != target]
    column = numeric[0]
    if fault == "missing_column":
        df = df.drop(columns=[column])
    elif fault == "wrong_dtype":
        df[column] = df[column].astype(object)
        df.loc[df.index[:3], column] = "n/a"
    elif fault == "nulls":
        df[key] = df[key].astype(object)
        df.loc[df.index[:5], key] = None
    elif fault == "out_of_range":
        df.loc[df.index[:4], column] = -1e9
    elif fault == "unknown_category":
        cat = next(
            c for c in df.columns if df[c].dtype == object and c != key and 1 < df[c].nunique() < 10
        )
        df.loc[df.index[:2], cat] = "unknown"
    elif fault == "duplicate_keys":
        df.loc[df.index[1:4], key] = df.loc[df.index[0], key]
    elif fault == "empty_file":
        return b""
    elif fault == "not_utf8":
        return to_csv_bytes(df).replace(b"\n", "\n\u00e9".encode("latin-1"), 3)
    else:
        raise ValueError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
