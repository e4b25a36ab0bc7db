"""A small HTTP client for the inference server's routes, for the deployment asset, the
benchmark and the tests. No Dagster."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx


class ServingError(RuntimeError):
    """The server refused or could not be reached; the message says which and what to do."""


@dataclass
class ServingClient:
    url: str
    token: str = ""
    timeout: float = 30.0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = httpx.request(
                method,
                f"{self.url.rstrip('/')}{path}",
                timeout=self.timeout,
                headers={**self._headers(), **kw.pop("headers", {})},
                **kw,
            )
        except httpx.HTTPError as e:
            raise ServingError(
                f"inference server {self.url} did not answer {method} {path}: {e}. Start it "
                "(`mlops serve`, or scripts/run.sh) or set MLOPS_SERVING_URL"
            ) from e
        if r.status_code == 401:
            raise ServingError(
                f"inference server {self.url} refused the admin token: set MLOPS_SERVING_TOKEN "
                "to the server's token"
            )
        return r

    def deployment(self, model: str) -> dict:
        r = self._call("GET", f"/admin/deployments/{model}")
        self._ok(r)
        return r.json()

    def deploy(self, model: str, **state) -> dict:
        r = self._call("PUT", f"/admin/deployments/{model}", json=state)
        self._ok(r)
        return r.json()

    def report_monitoring(self, model: str, version: str, **figures: float) -> dict:
        r = self._call("PUT", f"/admin/monitoring/{model}", json={"version": version, **figures})
        self._ok(r)
        return r.json()

    def stats(self, model: str) -> dict:
        r = self._call("GET", f"/admin/stats/{model}")
        self._ok(r)
        return r.json()

    def reset_stats(self, model: str) -> None:
        self._ok(self._call("POST", f"/admin/stats/{model}/reset"))

    def predict(self, model: str, records: list[dict], version: str | None = None) -> dict:
        headers = {"X-Model-Version": version} if version else {}  # _call adds the token
        r = self._call(
            "POST", "/predict", json={"model": model, "records": records}, headers=headers
        )
        return {"status": r.status_code, **(r.json() if r.content else {})}

    def _ok(self, r: httpx.Response) -> None:
        if r.status_code >= 400:
            raise ServingError(f"inference server {self.url}: {r.status_code} {r.text[:500]}")


class Replay:
    """Send rows as traffic from a few threads until stopped (a rollout's holdout replay, or
    pinned smoke traffic), marked ``X-Mlops-Synthetic: replay`` or ``smoke``."""

    def __init__(
        self,
        client: ServingClient,
        model: str,
        rows: list[dict],
        threads: int = 4,
        version: str | None = None,
    ):
        self.client, self.model, self.rows, self.version = client, model, rows, version
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, offset: int) -> None:
        i = offset
        with httpx.Client(base_url=self.client.url, timeout=30.0) as http:
            # Not a client's traffic: marked, so the prediction log keeps it out of monitoring.
            # Pinning a version is an admin's act (blue-green smoke traffic): it has the token.
            headers = (
                {
                    "X-Model-Version": self.version,
                    "X-Mlops-Synthetic": "smoke",
                    **self.client._headers(),
                }
                if self.version
                else {"X-Mlops-Synthetic": "replay"}
            )
            while not self._stop.is_set():
                row = self.rows[i % len(self.rows)]
                i += len(self._threads)
                try:
                    r = http.post(
                        "/predict", json={"model": self.model, "records": [row]}, headers=headers
                    )
                    self.sent += 1
                    self.failed += r.status_code >= 500
                except httpx.HTTPError:
                    self.failed += 1

    def __enter__(self) -> Replay:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
