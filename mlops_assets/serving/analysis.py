"""What a rollout judges on: each version's figures aggregated over every replica. Plain
library code, no Dagster.

Two sources, one answer shape (``{version: {"requests", "errors", "error_rate", "p95_ms",
"mean_prediction"}}``):

- :class:`ReplicaStats` (embedded, tests): every replica's ``/admin/stats`` through a list of
  URLs (``MLOPS_SERVING_REPLICAS``; a ``dns+http://name:port`` entry resolves to every address
  of the name, e.g. a Kubernetes headless Service). Windows are merged by :func:`merge`.
- :class:`PrometheusStats` (production): PromQL over the counters and histograms the replicas
  export at ``/metrics`` (``mlops_requests_total``, ``mlops_request_seconds``,
  ``mlops_prediction_value``), as Flagger and Argo Rollouts do.

No decision is ever made on one replica's view: a configured replica that cannot be read, or a
scrape target that is down, raises :class:`AnalysisError`, and the rollout does not promote.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mlops_assets.serving.state import LATENCY_BUCKETS, Deployment

# httpx (and the client, which uses it) is imported where a request is made: the code location
# imports this module, and must load fast.
if TYPE_CHECKING:
    from mlops_assets.serving.client import ServingClient

# The routes that answer predictions (metric labels are route templates).
PREDICT_ROUTES = "/predict|/v2/models/.+/infer"


class AnalysisError(RuntimeError):
    """Not every replica could be read: no decision may be made on a partial view."""


def replica_urls(entries: Iterable[str]) -> list[str]:
    """Replica URLs from configured entries; ``dns+http://host:port`` becomes one URL per
    address ``host`` resolves to (a headless Service lists every ready pod)."""
    out: list[str] = []
    for entry in entries:
        if not entry.startswith("dns+"):
            out.append(entry.rstrip("/"))
            continue
        parts = urlsplit(entry.removeprefix("dns+"))
        if not parts.hostname:
            raise AnalysisError(f"replica entry {entry!r}: use dns+http://<name>:<port>")
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise AnalysisError(
                f"replica entry {entry!r}: {parts.hostname!r} does not resolve ({e}); check "
                "the headless Service's name in MLOPS_SERVING_REPLICAS"
            ) from None
        for address in sorted({str(info[4][0]) for info in infos}):
            host = f"[{address}]" if ":" in address else address
            netloc = f"{host}:{parts.port}" if parts.port else host
            out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/"))
    return list(dict.fromkeys(out))


def merge(windows: list[dict]) -> dict:
    """One version's windows from several replicas as one: counts add up, the mean prediction
    is weighted by requests, and p95 is the largest replica's p95 (an upper bound of the
    pooled p95: no replica has more than 5 % of its requests above it)."""
    n = sum(w.get("requests", 0) for w in windows)
    errors = sum(w.get("errors", 0) for w in windows)
    p95s = [w["p95_ms"] for w in windows if w.get("p95_ms") is not None]
    weighted = [
        (w["mean_prediction"], w.get("requests", 0) - w.get("errors", 0))
        for w in windows
        if w.get("mean_prediction") is not None
    ]
    weight = sum(k for _, k in weighted)
    le = [w.get("latency_le_ms") for w in windows]
    return {
        "requests": n,
        "errors": errors,
        "error_rate": errors / n if n else 0.0,
        "p95_ms": max(p95s) if p95s else None,
        "mean_prediction": sum(m * k for m, k in weighted) / weight if weight else None,
        "replicas": len(windows),
        # unknown if any replica did not say (then only the fixed-window rule judges latency)
        "latency_le_ms": (
            None
            if not le or any(x is None for x in le)
            else {b: sum(x.get(b, 0) for x in le if x is not None) for b in le[0] or {}}
        ),
    }


def slow_bound(slow_ms: float) -> float | None:
    """The largest latency bound (s) at or under ``slow_ms``: requests over it count as slow
    (an over-count when the limit lies between bounds, never an under-count)."""
    under = [b for b in LATENCY_BUCKETS if b * 1000 <= slow_ms + 1e-9]
    return max(under) if under else None


def slow_count(summary: dict, slow_ms: float) -> int | None:
    """Requests in a merged window slower than ``slow_ms``, if the replicas said."""
    le = summary.get("latency_le_ms")
    if le is None:
        return None
    bound = slow_bound(slow_ms)
    fast = 0 if bound is None else int(le.get(f"{bound * 1000:g}", 0))
    return int(summary.get("requests", 0)) - fast


@dataclass
class ReplicaStats:
    """Every replica's own window, read directly (``/admin/stats``)."""

    entries: list[str]
    token: str = ""
    timeout: float = 10.0

    def clients(self) -> list[ServingClient]:
        from mlops_assets.serving.client import ServingClient

        urls = replica_urls(self.entries)
        if not urls:
            raise AnalysisError(
                "no replicas: set MLOPS_SERVING_REPLICAS to their URLs (or "
                "dns+http://<headless-service>:8080), or MLOPS_PROMETHEUS_URL"
            )
        return [ServingClient(u, self.token, self.timeout) for u in urls]

    def describe(self) -> str:
        return f"{len(self.entries)} replica entries ({', '.join(self.entries)})"

    def reset(self, model: str) -> None:
        """Empty every reachable replica's window (one that is down starts empty anyway)."""
        from mlops_assets.serving.client import ServingError

        for c in self.clients():
            with contextlib.suppress(ServingError):
                c.reset_stats(model)

    def stats(
        self, model: str, since: float, candidate: str | None = None, slow_ms: float | None = None
    ) -> dict[str, dict]:
        from mlops_assets.serving.client import ServingError

        per_version: dict[str, list[dict]] = {}
        for c in self.clients():
            try:
                windows = c.stats(model)
            except ServingError as e:
                raise AnalysisError(
                    f"replica {c.url} could not be read ({e}); no decision on the other "
                    "replicas' view alone"
                ) from None
            for version, summary in windows.items():
                per_version.setdefault(version, []).append(summary)
        out = {v: merge(ws) for v, ws in per_version.items()}
        if slow_ms is not None:
            for summary in out.values():
                summary["slow"] = slow_count(summary, slow_ms)
        return out

    def lagging(self, model: str, wanted: Deployment) -> list[str]:
        """Replicas not (yet) serving ``wanted``, each with what it serves or why unknown."""
        from mlops_assets.serving.client import ServingError

        out = []
        for c in self.clients():
            try:
                state = c.deployment(model)
            except ServingError as e:
                out.append(f"{c.url}: unreachable ({str(e)[:200]})")
                continue
            if state != wanted.as_dict():
                out.append(f"{c.url}: {state}")
        return out


@dataclass
class PrometheusStats:
    """Each version's figures over every scraped replica, from the Prometheus HTTP API."""

    url: str
    selector: str = 'job="mlops-inference"'
    timeout: float = 10.0

    def describe(self) -> str:
        return f"Prometheus {self.url} ({{{self.selector}}})"

    def reset(self, model: str) -> None:
        """Nothing to reset: every query covers the rollout's own time range."""

    def lagging(self, model: str, wanted: Deployment) -> list[str]:
        return []  # replicas are not addressable here; the lease and the figures cover it

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """An instant query; the result vector (``[{"metric": {...}, "value": [t, "v"]}]``).
        Evaluated at Prometheus's own present unless ``at`` is given: the windows are durations
        measured here, so a clock that differs between this job and Prometheus changes nothing.
        """
        import httpx

        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        try:
            r = httpx.get(
                f"{self.url.rstrip('/')}/api/v1/query", params=params, timeout=self.timeout
            )
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise AnalysisError(
                f"Prometheus {self.url} did not answer {promql!r}: {e}; check MLOPS_PROMETHEUS_URL"
            ) from None
        if r.status_code != 200 or body.get("status") != "success":
            raise AnalysisError(
                f"Prometheus {self.url} refused {promql!r}: {r.status_code} "
                f"{body.get('errorType', '')} {body.get('error', '')}"
            )
        result = body["data"]["result"]
        if body["data"].get("resultType") != "vector":
            raise AnalysisError(f"Prometheus {self.url}: {promql!r} is not an instant vector")
        return result

    def _scalar(self, promql: str, at: float | None = None) -> float | None:
        rows = self.query(promql, at)
        if not rows:
            return None
        value = float(rows[0]["value"][1])
        return value if math.isfinite(value) else None

    def targets_up(self, at: float | None = None) -> int:
        """How many replicas are scraped; raises if any is down or none is found."""
        rows = self.query(f"up{{{self.selector}}}", at)
        if not rows:
            raise AnalysisError(
                f"Prometheus {self.url} scrapes no replica matching {{{self.selector}}}: "
                "check MLOPS_PROMETHEUS_SELECTOR and the scrape config"
            )
        down = [r["metric"].get("instance", "?") for r in rows if float(r["value"][1]) < 1]
        if down:
            raise AnalysisError(
                f"replicas {', '.join(sorted(down))} are down in Prometheus {self.url}; no "
                "decision on the other replicas' view alone"
            )
        return len(rows)

    def stats(
        self,
        model: str,
        since: float,
        candidate: str | None = None,
        slow_ms: float | None = None,
        now: float | None = None,
    ) -> dict[str, dict]:
        """Each version's figures since ``since`` (this process's clock: only the elapsed time
        is sent, as the window's length). A failed request exported without its model and
        version (``model=""``, status 5xx) is charged to ``candidate``: a doubt must never
        promote. ``now`` pins the local present (tests); Prometheus evaluates at its own."""
        elapsed = (time.time() if now is None else now) - since
        replicas = self.targets_up()
        window = f"{max(1, math.ceil(elapsed))}s"
        sel = f'{self.selector},model="{model}"'
        req = f'{sel},route=~"{PREDICT_ROUTES}"'
        counts = self.query(
            f"sum by (version, code) (increase(mlops_requests_total{{{req}}}[{window}]))"
        )
        out: dict[str, dict] = {}
        for row in counts:
            version = row["metric"].get("version", "")
            if not version:
                continue
            s = out.setdefault(version, {"requests": 0.0, "errors": 0.0})
            n = float(row["value"][1])
            s["requests"] += n
            if row["metric"].get("code", "").startswith("5"):
                s["errors"] += n
        if candidate is not None:
            orphans = self._scalar(
                f'sum(increase(mlops_requests_total{{{self.selector},model="",code=~"5..",'
                f'route=~"{PREDICT_ROUTES}"}}[{window}]))',
            )
            if orphans and round(orphans) > 0:
                s = out.setdefault(candidate, {"requests": 0.0, "errors": 0.0})
                s["requests"] += orphans
                s["errors"] += orphans
        for version, s in out.items():
            v = f'{sel},version="{version}"'
            s["requests"] = round(s["requests"])
            s["errors"] = round(s["errors"])
            s["error_rate"] = s["errors"] / s["requests"] if s["requests"] else 0.0
            p95 = self._scalar(
                "histogram_quantile(0.95, sum by (le) (increase("
                f'mlops_request_seconds_bucket{{{v},route=~"{PREDICT_ROUTES}"}}[{window}])))',
            )
            s["p95_ms"] = None if p95 is None else p95 * 1000
            s["mean_prediction"] = self._scalar(
                f"sum(increase(mlops_prediction_value_sum{{{v}}}[{window}])) / "
                f"sum(increase(mlops_prediction_value_count{{{v}}}[{window}]))",
            )
            s["replicas"] = replicas
            if slow_ms is not None:
                bound = slow_bound(slow_ms)
                fast = (
                    0.0
                    if bound is None
                    else self._scalar(
                        f"sum(increase(mlops_request_seconds_bucket{{{v},"
                        f'route=~"{PREDICT_ROUTES}",le="{bound}"}}[{window}]))',
                    )
                )
                s["slow"] = None if fast is None else max(0, s["requests"] - round(fast))
        return out
