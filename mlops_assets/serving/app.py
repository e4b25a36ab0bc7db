"""The inference server: a lean ASGI app (run by uvicorn) that serves every model spec.

Routes
- ``POST /predict``: ``{"model": "churn", "records": [{...}, ...]}`` (``model`` may be left out
  when the server has one model; a single object works as one record). Answers predictions,
  probabilities for classifiers, the model version that answered and a request id. A multiclass
  model answers the class and, per row, an object of P(class) keyed by class name (in V2: a
  ``predict`` tensor and one ``predict_proba_<class>`` tensor per class).
- Open Inference Protocol (KServe V2): ``GET /v2/health/live``, ``GET /v2/health/ready``,
  ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``.
- ``GET /metrics``: Prometheus text.
- Admin (``Authorization: Bearer <token>``): ``GET/PUT /admin/deployments/{name}`` (the
  deployment state: production, candidate, weight, mode), ``GET /admin/stats/{name}`` and
  ``POST /admin/stats/{name}/reset`` (per-version window a rollout watches), ``PUT
  /admin/monitoring/{name}`` (drift share, live score change and the serving version's
  registration time, pushed by the monitoring assets and exported as gauges for alerting).

Bad input is a 4xx that names the field (never a 500), and the spec's rules for each column
are enforced per its ``serving.input_rules`` (``serving/schema.py``); a 500 means the model
itself failed, for the request that brought the failure only. Concurrent requests for one
version are answered by one ``predict`` call (micro-batching): the fixed cost of a
scikit-learn pipeline call is paid once per batch, not once per request.

A request is answered once its rows are durable in the prediction log (``serving/predlog.py``,
group commit). ``X-Mlops-Synthetic: replay|smoke|bench|test`` marks traffic that is not a real
client's: logged as such, left out of monitoring. ``X-Model-Version`` pins a deployed version
and needs the admin token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson

from mlops_assets.serving.compiled import runtime_of
from mlops_assets.serving.metrics import Metrics
from mlops_assets.serving.predlog import LogError, PredictionLog
from mlops_assets.serving.reconcile import Desired, reconciled
from mlops_assets.serving.schema import InputError, InputSchema
from mlops_assets.serving.state import Deployment, Window
from mlops_assets.specs import ModelSpec
from mlops_assets.training.train import decision_threshold, positive_class, positive_column

log = logging.getLogger("mlops.serving")

JSON = [(b"content-type", b"application/json")]
# Traffic that is not a real client's (holdout replay, smoke tests, benchmarks) says so in this
# header: its rows are logged with ``synthetic`` set, and monitoring leaves them out.
SYNTHETIC_HEADER = b"x-mlops-synthetic"
SYNTHETIC_KINDS = ("replay", "smoke", "bench", "test")
PROBA_OUTPUT = "predict_proba_"  # multiclass V2 outputs: predict_proba_<class>, one per class


def no_production_message(name: str) -> str:
    """What a client of a model with nothing in production is told, and what to do about it."""
    return (
        f"no production version of {name!r} yet: no registered version has the 'production' "
        f"alias. Train and gate one (dagster asset materialize -m mlops_assets.definitions "
        f"--select '+{name}/model_evaluation'); if the gate refused it, its reason is on the "
        f"{name}/model_evaluation asset in the Dagster UI. The server picks it up by itself."
    )


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        field: str | None = None,
        model: str = "",
        version: str = "",
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.field = status, message, kind, field
        # the model and version that failed, for the request metric's labels (a rollout's
        # Prometheus analysis charges a failure to the version that answered it)
        self.model, self.version = model, version


@dataclass
class Served:
    """One model: its spec, input schema, loaded versions, deployment and windows."""

    spec: ModelSpec
    schema: InputSchema
    pipelines: dict[str, object] = field(default_factory=dict)
    deployment: Deployment = field(default_factory=lambda: Deployment(production=None))
    windows: dict[str, Window] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    deployed_order: list[str] = field(default_factory=list)  # versions, most recent last
    load_error: str | None = None  # why the registry's production version is not served

    def not_ready(self) -> str | None:
        """Why this model cannot answer, or None when it can."""
        if self.deployment.production is not None:
            return None
        return self.load_error or no_production_message(self.spec.name)

    def window(self, version: str) -> Window:
        if version not in self.windows:
            self.windows[version] = Window()
        return self.windows[version]


class Batcher:
    """Collects the requests for one model version that arrive in one turn of the event loop
    (those that queued up while the previous batch was predicted) and answers them with one
    predict call.

    Prediction runs on the event loop itself: it is CPU bound, and measured here a worker
    thread only added GIL hand-offs to the tail latency (p95 at c=8: 40 ms vs 30 ms).
    The batcher holds the pipeline object, so a version taken out of service while requests
    for it are queued still answers them.
    """

    def __init__(self, served: Served, version: str, pipeline, metrics: Metrics | None = None):
        self.served, self.version, self.pipeline = served, version, pipeline
        self.metrics = metrics
        # A classifier's label is decided at the threshold chosen when it was trained.
        self.threshold = decision_threshold(pipeline)
        # A multiclass model answers the most probable of its classes (predict_proba's columns)
        self.classes: np.ndarray | None = None
        if served.spec.task == "multiclass":
            self.classes = np.asarray(pipeline.classes_)
        # A binary one answers its positive class or the other (0/1 for a model without
        # classes_), and P(positive): the predict_proba column of its positive class.
        self.binary, self.positive = np.asarray([0, 1]), 1
        if served.spec.task == "classification":
            self.binary = np.asarray(getattr(pipeline, "classes_", [0, 1]))
            self.positive = positive_column(pipeline)
        self.pending: list[tuple[dict, int, asyncio.Future]] = []
        self.scheduled = False
        self.retried = 0  # batches that failed and were answered request by request

    def submit(self, columns: dict, n: int) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((columns, n, fut))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._run)
        return fut

    def _predict(self, pending):
        served = self.served
        if len(pending) == 1:
            merged = pending[0][0]
        else:
            merged = {f: [v for p in pending for v in p[0][f]] for f in served.schema.features}
        frame = served.schema.frame(merged)
        if self.classes is not None:
            proba = np.asarray(self.pipeline.predict_proba(frame), dtype="float64")
            return self.classes[proba.argmax(axis=1)], proba
        if served.spec.task == "classification":
            proba = np.asarray(self.pipeline.predict_proba(frame))[:, self.positive]
            answer = np.where(proba >= self.threshold, self.positive, 1 - self.positive)
            return self.binary[answer], proba
        return self.pipeline.predict(frame), None

    def _run(self) -> None:
        pending, self.pending, self.scheduled = self.pending, [], False
        try:
            labels, proba = self._predict(pending)
        except Exception as e:
            if len(pending) == 1:
                if not pending[0][2].done():
                    pending[0][2].set_exception(e)
                return
            # One request may have brought what the model cannot take (a number the trees
            # cast to inf in float32): answer each alone, so only the culprit fails.
            self.retried += 1
            if self.metrics is not None:
                self.metrics.batch_retried(self.served.spec.name, self.version)
            for item in pending:
                self._run_one(item)
            return
        start = 0
        for _, n, fut in pending:
            end = start + n
            if not fut.done():
                fut.set_result((labels[start:end], None if proba is None else proba[start:end]))
            start = end

    def _run_one(self, item: tuple[dict, int, asyncio.Future]) -> None:
        fut = item[2]
        try:
            result = self._predict([item])
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
            return
        if not fut.done():
            fut.set_result(result)


class InferenceServer:
    def __init__(
        self,
        specs: list[ModelSpec],
        load_version: Callable[[ModelSpec, str], object],
        token: str,
        prediction_log: PredictionLog | None = None,
        resolve_production: Callable[[ModelSpec], str | None] | None = None,
        max_batch_rows: int = 10_000,
        max_body_bytes: int = 8 * 1024 * 1024,
        poll_seconds: float = 0.0,
    ):
        self.models = {s.name: Served(s, InputSchema(s)) for s in specs}
        self.load_version = load_version
        self.resolve_production = resolve_production
        self.token = token
        self.log = prediction_log
        self.metrics = Metrics()
        if prediction_log is not None:
            self.metrics.log_counters = prediction_log.counters
        self.max_batch_rows = max_batch_rows
        self.max_body_bytes = max_body_bytes
        self.poll_seconds = poll_seconds
        self.started = time.time()
        self._swap_lock: asyncio.Lock | None = None
        self._poller: asyncio.Task | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def startup(self) -> None:
        self._swap_lock = asyncio.Lock()
        self._last_desired: dict[str, Desired | str | None] = {}  # model -> last state read
        if self.resolve_production:
            await self.sync_production()
        if self.poll_seconds > 0 and self.resolve_production:
            self._poller = asyncio.create_task(self._poll())

    async def shutdown(self) -> None:
        if self._poller:
            self._poller.cancel()
        if self.log:
            await asyncio.to_thread(self.log.close)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync_production()
            except Exception as e:
                log.warning("registry poll failed: %s", e)

    async def sync_production(self) -> None:
        """Reconcile every model to the shared desired state (the registry's ``production``
        alias and rollout tag; the rule is ``reconcile.deployment_for``)."""
        resolve = self.resolve_production
        if resolve is None:
            raise RuntimeError(
                "sync_production needs a model registry: create the app with resolve_production"
            )
        for served in self.models.values():
            version = None
            try:  # each model on its own: one that cannot load never holds back the others
                try:
                    desired = await asyncio.to_thread(resolve, served.spec)
                except Exception:
                    # The registry cannot be read: keep applying the state last read from it,
                    # so a canary whose lease runs out still ends, on versions already loaded.
                    last = self._last_desired.get(served.spec.name)
                    offline = None if last is None else reconciled(last, time.time())
                    loaded = served.pipelines.keys()
                    if offline and offline != served.deployment and offline.versions() <= loaded:
                        await self.deploy(served.spec.name, offline)
                    raise
                self._last_desired[served.spec.name] = desired
                wanted = reconciled(desired, time.time())
                version = wanted.production
                if version and wanted != served.deployment:
                    await self.deploy(served.spec.name, wanted)
                served.load_error = None
            except Exception as e:
                self._load_failed(served, version, e)

    def _load_failed(self, served: Served, version: str | None, e: Exception) -> None:
        name = served.spec.name
        what = f"version {version} of " if version else ""
        served.load_error = (
            f"could not load {what}{name!r} from the registry: {type(e).__name__}: {e}; "
            + (
                f"still serving version {served.deployment.production}"
                if served.deployment.production
                else "nothing is served for it; fix or re-register the version"
            )
        )
        self.metrics.load_failed(name)
        log.warning("model %s: %s", name, served.load_error)

    async def deploy(self, name: str, deployment: Deployment) -> Deployment:
        """Load every version the new state needs, then switch in one assignment."""
        served = self.models[name]
        assert self._swap_lock is not None
        async with self._swap_lock:
            for version in deployment.versions() - served.pipelines.keys():
                served.pipelines[version] = await asyncio.to_thread(
                    self.load_version, served.spec, version
                )
                self.metrics.loaded(name, version, runtime_of(served.pipelines[version]))
            previous = served.deployment.versions()
            served.deployment = deployment  # the atomic switch
            for v in (*sorted(previous), *sorted(deployment.versions())):
                if v in served.deployed_order:
                    served.deployed_order.remove(v)
                served.deployed_order.append(v)
            # Keep the versions in service and the ones just taken out (an instant way back);
            # unload older ones. A queued request keeps its pipeline through its Batcher.
            keep = deployment.versions() | previous
            for v in list(served.pipelines):
                if v not in keep and len(served.pipelines) > 3:
                    served.pipelines.pop(v, None)
                    served.batchers.pop(v, None)
                    self.metrics.unloaded(name, v)
        log.info("model %s now serves %s", name, deployment)
        return deployment

    # ---- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        # metric labels are route templates, never raw paths (bounded and safe to print)
        route, model, version, status = _template(path), "", "", 500
        try:
            _, status, body, model, version = await self._route(scope, receive, method, path)
        except HTTPError as e:
            status, model, version = e.status, e.model or model, e.version or version
            self.metrics.error(route, e.kind)
            payload = {"error": e.message}
            if e.field:
                payload["field"] = e.field
            body = _error_body(payload)
        except Exception as e:  # a bug or a failing model: 500, counted, logged
            log.exception("request %s %s failed", method, path)
            status = 500
            self.metrics.error(route, "internal")
            body = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
        headers = [*JSON, (b"content-length", str(len(body)).encode())]
        if isinstance(body, str):
            body = body.encode()
            headers = [
                (b"content-type", b"text/plain; version=0.0.4"),
                (b"content-length", str(len(body)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.request(route, model, version, status, time.perf_counter() - started)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read(self, scope, receive) -> object:
        for k, v in scope["headers"]:
            if k == b"content-length" and int(v) > self.max_body_bytes:
                raise HTTPError(413, f"body over {self.max_body_bytes} bytes", "too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HTTPError(413, f"body over {self.max_body_bytes} bytes", "too_large")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return parse_body(b"".join(chunks))

    def _authorized(self, scope, what: str = "admin routes") -> None:
        """The admin token, as ``Authorization: Bearer <token>`` (a bare token is refused:
        it is what a misconfigured proxy or client sends, and it would be logged as such)."""
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, given = v.partition(b" ")
                if scheme.lower() != b"bearer":
                    raise HTTPError(
                        401,
                        f"{what} need 'Authorization: Bearer <token>'; the header has no "
                        "'Bearer ' scheme",
                        "unauthorized",
                    )
                if self.token and hmac.compare_digest(given.strip(), self.token.encode()):
                    return
                raise HTTPError(  # 401, not 403: the token is invalid (RFC 6750)
                    401,
                    f"{what}: the server refused the admin token; send its MLOPS_SERVING_TOKEN",
                    "unauthorized",
                )
        raise HTTPError(401, f"{what} need 'Authorization: Bearer <token>'", "unauthorized")

    def _served(self, name: str) -> Served:
        if name not in self.models:
            known = ", ".join(sorted(self.models))
            raise HTTPError(404, f"unknown model {name!r}; served: {known}", "unknown_model")
        return self.models[name]

    async def _route(self, scope, receive, method, path):
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["predict"]:
            return await self._predict(scope, receive)
        if parts[:1] == ["v2"]:
            return await self._v2(scope, receive, method, parts)
        if method == "GET" and parts == ["metrics"]:
            return "/metrics", 200, self.metrics.render(), "", ""
        if parts[:1] == ["admin"] and len(parts) >= 3:
            return await self._admin(scope, receive, method, parts)
        raise HTTPError(404, f"no route {method} {path}", "no_route")

    def _row_limit(self, n: int) -> None:
        """Checked on the parsed body before any validation work."""
        if n > self.max_batch_rows:
            raise HTTPError(
                413, f"{n} rows: at most {self.max_batch_rows} per request", "too_many_rows"
            )

    def _validated(self, served: Served, build: Callable[[], dict]) -> tuple[dict, int]:
        """Typed columns and their row count, with the spec's rules applied per its policy."""
        try:
            columns = build()
            flags = served.schema.check(columns)
        except InputError as e:
            raise HTTPError(e.status, str(e), "bad_input", e.field) from None
        for (f, rule), rows in flags.items():
            self.metrics.flagged(served.spec.name, f, rule, rows)
        return columns, len(columns[served.schema.features[0]])

    async def _answer(self, scope, served: Served, columns: dict, n: int):
        self._row_limit(n)
        version = served.deployment.pick()
        synthetic: str | None = None
        for k, v in scope["headers"]:
            if k == SYNTHETIC_HEADER:  # replay, smoke, bench: logged as such, never monitored
                synthetic = v.decode("latin-1").strip().lower()
                if synthetic not in SYNTHETIC_KINDS:
                    raise HTTPError(
                        422,
                        f"X-Mlops-Synthetic must be one of {', '.join(SYNTHETIC_KINDS)}, got "
                        f"{synthetic[:40]!r}",
                        "bad_input",
                        "X-Mlops-Synthetic",
                    )
            elif k == b"x-model-version":  # pin a loaded version (blue-green smoke tests)
                # Pinning reaches a version that is not released (a standby, a candidate at
                # weight 0): only the operator's tooling may do that.
                self._authorized(scope, "pinning a version with X-Model-Version")
                pinned = v.decode("latin-1")
                if pinned not in served.deployment.versions():
                    raise HTTPError(
                        404, f"version {pinned} is not deployed", "unknown_version", "version"
                    )
                version = pinned
        if version is None:
            raise HTTPError(503, served.not_ready() or "not ready", "not_ready")
        if version not in served.batchers:  # no await since the pick: the version is loaded
            served.batchers[version] = Batcher(
                served, version, served.pipelines[version], self.metrics
            )
        batcher = served.batchers[version]
        if self.log is not None and not self.log.alive:
            raise HTTPError(503, "the prediction log is not running; see the server log", "log")
        while self.log is not None and self.log.full():  # backpressure, never drop a row
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        try:
            labels, proba = await batcher.submit(columns, n)
        except Exception as e:  # the model failed, not the request: 500, seen by the rollout
            served.window(version).record(time.perf_counter() - started, True, None)
            log.warning("model %s version %s failed: %s", served.spec.name, version, e)
            raise HTTPError(
                500,
                f"model {served.spec.name} version {version} failed: {type(e).__name__}: {e}",
                "model_error",
                model=served.spec.name,
                version=version,
            ) from None
        values = proba if proba is not None else labels
        if proba is not None and proba.ndim == 2:  # multiclass: the confidence of each answer
            values = proba.max(axis=1)
        served.window(version).record(time.perf_counter() - started, False, float(np.mean(values)))
        self.metrics.predicted(served.spec.name, version, values)
        outputs = {"prediction": labels.tolist()}
        if proba is not None and batcher.classes is not None:  # multiclass: P(class) by name
            names = [str(c) for c in batcher.classes.tolist()]
            outputs["probability"] = [dict(zip(names, row, strict=True)) for row in proba.tolist()]
        elif proba is not None:
            outputs["probability"] = proba.tolist()
        request_id = uuid.uuid4().hex
        if self.log is not None:  # answered only once its rows are durable (group commit)
            try:
                await self.log.write(
                    served.spec.name, version, request_id, columns, outputs, synthetic
                )
            except LogError as e:
                log.error("%s", e)
                raise HTTPError(
                    503, f"{e}; the answer was not recorded, so it is not given: retry", "log"
                ) from None
        return version, request_id, outputs

    async def _predict(self, scope, receive):
        body = await self._read(scope, receive)
        if isinstance(body, dict) and "records" not in body and "model" not in body:
            body = {"records": [body]}
        if not isinstance(body, dict):
            raise HTTPError(422, "body must be an object with 'records'", "bad_input", "records")
        name = body.get("model")
        if name is not None and not isinstance(name, str):
            raise HTTPError(422, "'model' must be a string", "bad_input", "model")
        if name is None:
            if len(self.models) != 1:
                raise HTTPError(422, "say which 'model'", "bad_input", "model")
            name = next(iter(self.models))
        served = self._served(name)
        records = body.get("records")
        self._row_limit(served.schema.count_records(records))
        columns, n = self._validated(served, lambda: served.schema.columns_from_records(records))
        version, request_id, outputs = await self._answer(scope, served, columns, n)
        payload = {
            "model": name,
            "model_version": version,
            "request_id": request_id,
            "predictions": outputs["prediction"],
        }
        if "probability" in outputs:
            payload["probabilities"] = outputs["probability"]
        return "/predict", 200, orjson.dumps(payload), name, version

    async def _v2(self, scope, receive, method, parts):
        if method == "GET" and parts == ["v2"]:
            return (
                "/v2",
                200,
                json.dumps({"name": "mlops-assets", "extensions": []}).encode(),
                "",
                "",
            )
        if method == "GET" and parts == ["v2", "health", "live"]:
            return "/v2/health/live", 200, b'{"live": true}', "", ""
        if method == "GET" and parts == ["v2", "health", "ready"]:
            # Ready when some model answers: a model that cannot load is reported (and its
            # own /ready is 503), but it never takes the others out of the load balancer.
            reasons = {name: s.not_ready() for name, s in self.models.items()}
            not_ready = {name: r for name, r in reasons.items() if r is not None}
            ready = len(not_ready) < len(self.models)
            body = orjson.dumps({"ready": ready, "not_ready": not_ready})
            return "/v2/health/ready", 200 if ready else 503, body, "", ""
        if len(parts) >= 3 and parts[1] == "models":
            served = self._served(parts[2])
            name = served.spec.name
            rest = parts[3:]
            if rest[:2] == ["versions"] and len(rest) >= 2:
                rest = rest[2:]  # /v2/models/{name}/versions/{v}/... : the deployed one answers
            if method == "GET" and rest == []:
                meta = {
                    "name": name,
                    "versions": sorted(served.deployment.versions()),
                    "platform": "scikit-learn",
                    "inputs": served.schema.describe(),
                    "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
                }
                production = served.deployment.production
                if served.spec.task == "multiclass" and production in served.pipelines:
                    meta["outputs"] = multiclass_outputs(served.pipelines[production])
                loaded = [v for v in sorted(served.deployment.versions()) if v in served.pipelines]
                # which runtime answers each version: onnxruntime (parity verified) or skops
                runtimes = {v: runtime_of(served.pipelines[v]) for v in loaded}
                parameters: dict = {"runtimes": runtimes}
                if served.spec.task == "classification":
                    parameters["decision_thresholds"] = {
                        v: decision_threshold(served.pipelines[v]) for v in loaded
                    }
                    # predict_proba is P(this class); predict answers it at the threshold
                    parameters["positive_classes"] = {
                        v: positive_class(served.pipelines[v]) for v in loaded
                    }
                meta["parameters"] = parameters
                return "/v2/models/{name}", 200, json.dumps(meta).encode(), name, ""
            if method == "GET" and rest == ["ready"]:
                reason = served.not_ready()
                ready = reason is None
                answer = {"name": name, "ready": ready}
                if reason is not None:
                    answer["reason"] = reason
                body = orjson.dumps(answer)
                return "/v2/models/{name}/ready", 200 if ready else 503, body, name, ""
            if method == "POST" and rest == ["infer"]:
                body = await self._read(scope, receive)
                if not isinstance(body, dict):
                    raise HTTPError(422, "body must be an object with 'inputs'", "bad_input")
                if "id" in body and not isinstance(body["id"], str):
                    raise HTTPError(422, "'id' must be a string", "bad_input", "id")
                inputs = body.get("inputs")
                if isinstance(inputs, list):
                    for t in inputs:
                        if isinstance(t, dict) and isinstance(t.get("data"), list):
                            self._row_limit(len(t["data"]))
                columns, n = self._validated(served, lambda: served.schema.columns_from_v2(inputs))
                version, request_id, outputs = await self._answer(scope, served, columns, n)
                tensors = [
                    {
                        "name": "predict",
                        "datatype": (
                            _label_datatype(outputs["prediction"])
                            if served.spec.task == "classification"
                            else "FP64"
                        ),
                        "shape": [n],
                        "data": outputs["prediction"],
                    }
                ]
                if served.spec.task == "multiclass":
                    tensors = multiclass_tensors(outputs, n)
                elif "probability" in outputs:
                    tensors.append(
                        {
                            "name": "predict_proba",
                            "datatype": "FP64",
                            "shape": [n],
                            "data": outputs["probability"],
                        }
                    )
                payload = {
                    "model_name": name,
                    "model_version": version,
                    "id": body.get("id") or request_id,
                    "outputs": tensors,
                }
                return "/v2/models/{name}/infer", 200, orjson.dumps(payload), name, version
        raise HTTPError(404, f"no route {method} /{'/'.join(parts)}", "no_route")

    async def _admin(self, scope, receive, method, parts):
        self._authorized(scope)
        kind, name = parts[1], parts[2]
        served = self._served(name)
        if kind == "deployments" and len(parts) == 3:
            if method == "GET":
                return (
                    "/admin/deployments",
                    200,
                    json.dumps(served.deployment.as_dict()).encode(),
                    "",
                    "",
                )
            if method == "PUT":
                body = await self._read(scope, receive)
                try:
                    wanted = Deployment(**body)
                except (TypeError, ValueError) as e:
                    raise HTTPError(422, f"deployment: {e}", "bad_input") from None
                try:
                    state = await self.deploy(name, wanted)
                except Exception as e:
                    raise HTTPError(
                        409,
                        f"could not load {wanted.versions()}: {e}; still serving "
                        f"{served.deployment.as_dict()}",
                        "load_failed",
                    ) from None
                return "/admin/deployments", 200, json.dumps(state.as_dict()).encode(), "", ""
        if kind == "monitoring" and len(parts) == 3 and method == "PUT":
            body = await self._read(scope, receive)
            self.metrics.monitored(name, _monitoring_figures(body))
            return (
                "/admin/monitoring",
                200,
                json.dumps(self.metrics.monitoring[name]).encode(),
                "",
                "",
            )
        if kind == "stats" and len(parts) == 3 and method == "GET":
            stats = {v: w.summary() for v, w in served.windows.items()}
            return "/admin/stats", 200, json.dumps(stats).encode(), "", ""
        if kind == "stats" and parts[3:] == ["reset"] and method == "POST":
            served.windows.clear()
            return "/admin/stats", 200, b"{}", "", ""
        raise HTTPError(404, f"no admin route {method} /{'/'.join(parts)}", "no_route")


def _label_datatype(labels: list) -> str:
    return "INT64" if all(isinstance(c, int) for c in labels) else "BYTES"


def multiclass_outputs(pipeline) -> list[dict]:
    """V2 metadata of a multiclass model's outputs: the class, then P(class) for each class."""
    classes = np.asarray(pipeline.classes_).tolist()
    out = [{"name": "predict", "datatype": _label_datatype(classes), "shape": [-1]}]
    out += [{"name": f"{PROBA_OUTPUT}{c}", "datatype": "FP64", "shape": [-1]} for c in classes]
    return out


def multiclass_tensors(outputs: dict, n: int) -> list[dict]:
    """V2 outputs of a multiclass answer: ``predict`` (the class) and one ``predict_proba_<class>``
    tensor per class, named after it."""
    labels, probability = outputs["prediction"], outputs["probability"]
    tensors = [
        {"name": "predict", "datatype": _label_datatype(labels), "shape": [n], "data": labels}
    ]
    for c in probability[0] if probability else ():
        data = [p[c] for p in probability]
        tensors.append(
            {"name": f"{PROBA_OUTPUT}{c}", "datatype": "FP64", "shape": [n], "data": data}
        )
    return tensors


MAX_DEPTH = 64  # deeper than any request needs; orjson itself stops at 1,024


def parse_body(raw: bytes) -> object:
    """The JSON body, or a 400 that says what is wrong with it: never a RecursionError, and
    never a string the log cannot write (a lone surrogate)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        text = str(e)
        if "depth limit" in text:
            raise HTTPError(400, f"body is nested too deep: {text}", "bad_json") from None
        if "surrogate" in text:
            raise HTTPError(
                400,
                f"body has a lone UTF-16 surrogate escape: {text}; send valid Unicode",
                "bad_json",
            ) from None
        try:  # NaN/Infinity literals and 1e999: parse them, so validation can name the field
            body = json.loads(raw)
        except RecursionError:
            raise HTTPError(400, "body is not valid JSON: nested too deep", "bad_json") from None
        except (ValueError, UnicodeDecodeError) as e2:
            raise HTTPError(400, f"body is not valid JSON: {e2}", "bad_json") from None
        _check_shape(body)  # orjson refuses both itself; the rare fallback path is walked
    return body


def _check_shape(body: object) -> None:
    """No nesting beyond MAX_DEPTH and no string that is not valid Unicode, checked without
    recursion: what orjson refuses by itself, for a body only the json module parsed."""
    stack = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items = list(value.items())
            for k, _ in items:
                _valid_text(k)
            children: list = [v for _, v in items]
        elif isinstance(value, list):
            children = value
        else:
            if isinstance(value, str):
                _valid_text(value)
            continue
        if children and depth + 1 > MAX_DEPTH:
            raise HTTPError(400, f"body is nested more than {MAX_DEPTH} levels deep", "bad_json")
        stack.extend((c, depth + 1) for c in children)


def _valid_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(
            400, "body has a lone UTF-16 surrogate in a string; send valid Unicode", "bad_json"
        ) from None


def _error_body(payload: dict) -> bytes:
    """An error answer that always encodes (a message may quote what the client sent)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload, ensure_ascii=True).encode()


ADMIN = ("deployments", "stats", "monitoring")
MONITORING_FIGURES = ("drift_share", "live_score_change", "model_created", "stale_without_new_data")


def _monitoring_figures(body: object) -> dict:
    """``{"version": "3", "drift_share": 0.5, ...}``: what the monitoring assets report."""
    if not isinstance(body, dict) or not isinstance(body.get("version"), str):
        raise HTTPError(422, "monitoring: a JSON object with a string 'version'", "bad_input")
    out: dict = {"version": body["version"]}
    for key, value in body.items():
        if key == "version":
            continue
        if key not in MONITORING_FIGURES:
            raise HTTPError(
                422,
                f"monitoring: unknown figure {key!r}; known: {', '.join(MONITORING_FIGURES)}",
                "bad_input",
                key,
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise HTTPError(422, f"monitoring: {key!r} must be a number", "bad_input", key)
        out[key] = float(value)
    return out


ROUTES = {
    ("predict",): "/predict",
    ("metrics",): "/metrics",
    ("v2",): "/v2",
    ("v2", "health", "live"): "/v2/health/live",
    ("v2", "health", "ready"): "/v2/health/ready",
}


def _template(path: str) -> str:
    """The route template of a path, for metric labels: a bounded set, never the raw path."""
    parts = tuple(p for p in path.split("/") if p)
    if parts in ROUTES:
        return ROUTES[parts]
    if parts[:2] == ("v2", "models") and len(parts) >= 3:
        tail = parts[3:]
        if tail[:1] == ("versions",):
            tail = tail[2:]
        if tail in ((), ("ready",), ("infer",)):
            return "/v2/models/{name}" + "".join(f"/{t}" for t in tail)
    if parts[:1] == ("admin",) and len(parts) >= 2 and parts[1] in ADMIN:
        return f"/admin/{parts[1]}"
    return "other"
