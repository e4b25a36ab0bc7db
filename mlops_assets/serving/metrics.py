"""Prometheus metrics in text exposition format, without a dependency: counters and
histograms keyed by label tuples. Single-threaded use from the event loop; the prediction
log's counters are kept by its own threads and read when /metrics is rendered."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from mlops_assets.serving.state import LATENCY_BUCKETS

# help, type (counter or gauge), label names, label values -> value
LogCounter = tuple[str, str, tuple[str, ...], dict[tuple, float]]
PREDICTION_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 10, 100, 1000)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts: dict[tuple, list[int]] = defaultdict(lambda: [0] * (len(buckets) + 1))
        self.sums: dict[tuple, float] = defaultdict(float)

    def observe(self, labels: tuple, value: float) -> None:
        self.counts[labels][bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def observe_many(self, labels: tuple, values: np.ndarray) -> None:
        """Many observations at once (a batch of predictions), vectorised."""
        idx = np.searchsorted(self.buckets, values, side="left")
        counts = np.bincount(idx, minlength=len(self.buckets) + 1)
        row = self.counts[labels]
        for i, c in enumerate(counts.tolist()):
            row[i] += c
        self.sums[labels] += float(np.sum(values))


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple, int] = defaultdict(int)  # (route, model, version, code)
        self.errors: dict[tuple, int] = defaultdict(int)  # (route, kind)
        self.latency = Histogram(LATENCY_BUCKETS)  # (route, model, version)
        self.predictions = Histogram(PREDICTION_BUCKETS)  # (model, version)
        self.rows: dict[tuple, int] = defaultdict(int)  # (model, version)
        # What Dagster's monitoring found, pushed by its assets: model -> figures
        self.monitoring: dict[str, dict] = {}
        self.violations: dict[tuple, int] = defaultdict(int)  # (model, field, rule): flagged
        self.batch_retries: dict[tuple, int] = defaultdict(int)  # (model, version)
        self.load_failures: dict[str, int] = defaultdict(int)  # model
        self.runtimes: dict[tuple[str, str], str] = {}  # (model, version) -> onnxruntime | skops
        # The prediction log's counters: (metric name, labels dict) -> value, read at render
        self.log_counters: Callable[[], dict[str, LogCounter]] | None = None

    def request(self, route, model, version, code, seconds) -> None:
        self.requests[(route, model, version, str(code))] += 1
        self.latency.observe((route, model, version), seconds)

    def error(self, route: str, kind: str) -> None:
        self.errors[(route, kind)] += 1

    def flagged(self, model: str, field: str, rule: str, rows: int) -> None:
        self.violations[(model, field, rule)] += rows

    def batch_retried(self, model: str, version: str) -> None:
        self.batch_retries[(model, version)] += 1

    def load_failed(self, model: str) -> None:
        self.load_failures[model] += 1

    def loaded(self, model: str, version: str, runtime: str) -> None:
        self.runtimes[(model, version)] = runtime

    def unloaded(self, model: str, version: str) -> None:
        self.runtimes.pop((model, version), None)

    def predicted(self, model: str, version: str, values: np.ndarray) -> None:
        self.rows[(model, version)] += len(values)
        self.predictions.observe_many((model, version), np.asarray(values, dtype="float64"))

    def monitored(self, model: str, figures: dict) -> None:
        self.monitoring[model] = {**self.monitoring.get(model, {}), **figures}

    def render(self, now: float | None = None) -> str:
        out: list[str] = []

        def labels(names, values) -> str:
            return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))

        out += [
            "# HELP mlops_requests_total Requests answered, by route, model, version and status.",
            "# TYPE mlops_requests_total counter",
        ]
        for k, v in sorted(self.requests.items()):
            out.append(
                f"mlops_requests_total{{{labels(('route', 'model', 'version', 'code'), k)}}} {v}"
            )
        out += [
            "# HELP mlops_errors_total Requests refused or failed, by route and kind.",
            "# TYPE mlops_errors_total counter",
        ]
        for k, v in sorted(self.errors.items()):
            out.append(f"mlops_errors_total{{{labels(('route', 'kind'), k)}}} {v}")
        out += [
            "# HELP mlops_rows_predicted_total Rows predicted, by model and version.",
            "# TYPE mlops_rows_predicted_total counter",
        ]
        for k, v in sorted(self.rows.items()):
            out.append(f"mlops_rows_predicted_total{{{labels(('model', 'version'), k)}}} {v}")
        out += self._counter(
            "mlops_input_rule_violations_total",
            "Rows served although they broke a rule of the spec (serving.input_rules: flag), "
            "by model, field and rule (null, finite, float32, range, allowed).",
            self.violations,
            ("model", "field", "rule"),
            labels,
        )
        out += self._counter(
            "mlops_batch_retries_total",
            "Micro-batches whose predict call failed and were answered request by request.",
            self.batch_retries,
            ("model", "version"),
            labels,
        )
        out += self._counter(
            "mlops_model_load_failures_total",
            "Times a model's registry version could not be loaded (startup or poll).",
            {(m,): v for m, v in self.load_failures.items()},
            ("model",),
            labels,
        )
        out += self._counter(
            "mlops_model_runtime",
            "1 for each loaded model version, labelled with the runtime that answers it: "
            "onnxruntime (its ONNX graph passed the gate's parity check) or skops.",
            {(m, v, r): 1 for (m, v), r in self.runtimes.items()},
            ("model", "version", "runtime"),
            labels,
            "gauge",
        )
        if self.log_counters is not None:
            for name, (help_, kind, names, values) in self.log_counters().items():
                out += self._counter(name, help_, values, names, labels, kind)
        out += self._histogram(
            "mlops_request_seconds",
            "Request latency in seconds.",
            self.latency,
            ("route", "model", "version"),
            labels,
        )
        out += self._histogram(
            "mlops_prediction_value",
            "Distribution of predicted values (P(class 1) for classifiers, the highest class "
            "probability for multiclass models).",
            self.predictions,
            ("model", "version"),
            labels,
        )
        out += self._gauges(labels, time.time() if now is None else now)
        return "\n".join(out) + "\n"

    def _gauges(self, labels, now: float) -> list[str]:
        """Monitoring figures for alerting: drift share, live score change, model age, and the
        stale-model alert."""
        out: list[str] = []
        # (metric, the figure it shows, help); the model's age is computed from its creation
        gauges = (
            (
                "mlops_drift_share",
                "drift_share",
                "Share of drifted features in the last drift report.",
            ),
            (
                "mlops_live_score_change",
                "live_score_change",
                "Live score vs the evaluated score, relative (negative: worse for a score).",
            ),
            (
                "mlops_model_age_seconds",
                "model_created",
                "Seconds since the serving version was registered.",
            ),
            (
                "mlops_model_stale_without_new_data",
                "stale_without_new_data",
                "1 while the model fails its freshness policy and main holds nothing it has not "
                "learned (the stale-model sensor's alert, no retraining); 0 once that ends.",
            ),
        )
        for name, key, help_ in gauges:
            rows = [(m, f) for m, f in sorted(self.monitoring.items()) if key in f]
            if not rows:
                continue
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
            for model, f in rows:
                value = now - f[key] if key == "model_created" else f[key]
                out.append(
                    f"{name}{{{labels(('model', 'version'), (model, f['version']))}}} {value}"
                )
        return out

    @staticmethod
    def _counter(name, help_, values: dict, names, labels, kind: str = "counter") -> list[str]:
        out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for k, v in sorted(values.items()):
            out.append(f"{name}{{{labels(names, k)}}} {v}" if names else f"{name} {v}")
        return out

    @staticmethod
    def _histogram(name, help_, hist: Histogram, names, labels) -> list[str]:
        out = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        for key in sorted(hist.counts):
            counts = hist.counts[key]
            base = labels(names, key)
            total = 0
            for bound, c in zip((*hist.buckets, "+Inf"), counts, strict=True):
                total += c
                out.append(f'{name}_bucket{{{base},le="{bound}"}} {total}')
            out.append(f"{name}_sum{{{base}}} {hist.sums[key]}")
            out.append(f"{name}_count{{{base}}} {total}")
        return out


def _escape(value: object) -> str:
    """Label values in the text format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
