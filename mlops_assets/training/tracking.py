"""MLflow: experiments, the training run's contents, the registry and its aliases.

No Dagster here (the Dagster resource in ``defs/training/resources.py`` wraps this), and MLflow
is imported inside functions because ``import mlflow`` takes seconds.

The registry uses aliases, not stages (deprecated in MLflow 2.9): ``production`` is the
champion that serves, ``challenger`` the last model that passed the gate. Moving an alias is
a single registry call, so a switch is atomic.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from mlops_assets.specs import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops_assets.settings import Settings

PRODUCTION = "production"
CHALLENGER = "challenger"
PREVIOUS = "previous_production"
MODEL_ARTIFACT = "model"
# The only types outside skops' own safe set that our pipelines contain (every estimator kind;
# test_tracking checks this list against freshly built pipelines). A model file naming any other
# type is refused before loading: skops would call it, so a module-wide allow-list
# ("builtins.", "numpy.") would let a tampered artifact run code such as builtins.eval.
TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)

T = TypeVar("T")


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer; the message names its URI and what to do."""


class RegistryError(RuntimeError):
    """The registry refused an operation (a missing version, an untrusted model file)."""


@dataclass
class Tracking:
    """Where MLflow is and how hard to try. ``artifact_root`` is set for the embedded store
    (a folder); a tracking server decides its own artifact location."""

    tracking_uri: str
    artifact_root: str = ""
    experiment_prefix: str = "mlops-assets/"
    ui_url: str = ""
    max_retries: int = 4
    backoff_seconds: int = 1
    timeout_seconds: float = 30.0
    _ready: bool = field(default=False, repr=False)

    # ---- connection ---------------------------------------------------------------------

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def configure(self) -> None:
        """Point MLflow at this store with this retry policy (process-wide, as MLflow is)."""
        import mlflow

        # MLflow's HTTP client retries connection errors and 429/5xx with exponential backoff
        # (backoff_seconds x 1, 2, 4, ...); these settings bound how long it tries.
        from mlops_assets.settings import export_mlflow_http

        export_mlflow_http(self.max_retries, self.backoff_seconds, self.timeout_seconds)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if not self._ready:
            self._prepare()
            self._ready = True

    def _prepare(self) -> None:
        """Create the embedded database once, under a lock: two processes creating the same
        SQLite schema at the same time would fail."""
        if not self.tracking_uri.startswith("sqlite:///"):
            self.call("connect", lambda c: c.search_experiments(max_results=1))
            return
        db = Path(self.tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.call("create the tracking database", lambda c: c.search_experiments(max_results=1))

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)``; a server that does not answer becomes one clear error."""
        try:
            return fn(self.client())
        except Exception as e:  # MLflow raises MlflowException, requests and urllib3 errors
            if _is_unreachable(e):
                raise TrackingUnavailable(
                    f"MLflow tracking server {self.tracking_uri} did not answer ({what}), "
                    f"retrying up to {self.max_retries} times with {self.backoff_seconds}s "
                    f"exponential backoff: {type(e).__name__}: {str(e)[:300]}. Check that the "
                    "server is up and MLFLOW_TRACKING_URI is right."
                ) from e
            raise

    # ---- experiments and links ----------------------------------------------------------

    def experiment_name(self, spec: ModelSpec, suffix: str = "") -> str:
        return f"{self.experiment_prefix}{spec.name}{suffix}"

    def ensure_experiment(self, spec: ModelSpec, suffix: str = "") -> str:
        """The spec's experiment id, created (with the embedded artifact folder) if missing."""
        name = self.experiment_name(spec, suffix)

        def get_or_create(c) -> str:
            exp = c.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = None
            if self.artifact_root:
                folder = f"{spec.name}{suffix.replace('/', '-')}"
                location = Path(self.artifact_root, folder).resolve().as_uri()
            try:
                return c.create_experiment(name, artifact_location=location)
            except Exception:  # created by a concurrent step in the meantime
                exp = c.get_experiment_by_name(name)
                if exp is None:
                    raise
                return exp.experiment_id

        return self.call(f"get experiment {name!r}", get_or_create)

    def _ui(self) -> str:
        if self.ui_url:
            return self.ui_url.rstrip("/")
        return self.tracking_uri.rstrip("/") if self.is_server else ""

    def run_url(self, experiment_id: str, run_id: str) -> str:
        ui = self._ui()
        return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if ui else ""

    def version_url(self, name: str, version: str) -> str:
        ui = self._ui()
        return f"{ui}/#/models/{quote(name)}/versions/{version}" if ui else ""

    def log_report(
        self, spec: ModelSpec, path: Path, metrics: dict[str, float], tags: dict[str, str]
    ) -> tuple[str, str]:
        """Keep a monitoring report (an HTML file) as an MLflow run of the experiment
        ``<prefix><spec>/monitoring``, with its figures as metrics, so the UI can link to it
        over HTTP. Returns the run's URL and the report's URL ("" without a UI)."""
        experiment = self.ensure_experiment(spec, "/monitoring")

        def log(c) -> str:
            run = c.create_run(experiment, tags={"mlflow.runName": path.stem, **tags})
            run_id = run.info.run_id
            try:
                for key, value in metrics.items():
                    c.log_metric(run_id, key, value)
                c.log_artifact(run_id, str(path))
            except Exception:
                c.set_terminated(run_id, "FAILED")
                raise
            c.set_terminated(run_id)
            return run_id

        run_id = self.call(f"log report {path.name}", log)
        ui = self._ui()
        report = f"{ui}/get-artifact?path={quote(path.name)}&run_uuid={run_id}" if ui else ""
        return self.run_url(experiment, run_id), report

    # ---- registry -----------------------------------------------------------------------

    def version_by_alias(self, name: str, alias: str):
        """The model version holding ``alias``, or None if the alias (or model) does not exist."""

        def get(c):
            try:
                return c.get_model_version_by_alias(name, alias)
            except Exception as e:
                if _is_not_found(e):
                    return None
                raise

        return _str_version(self.call(f"read alias {alias!r} of {name!r}", get))

    def version(self, name: str, version: str):
        def get(c):
            try:
                return c.get_model_version(name, str(version))
            except Exception as e:
                if _is_not_found(e):
                    raise RegistryError(
                        f"registered model {name!r} has no version {version!r}: list them with "
                        f"`mlops models {name}`"
                    ) from None
                raise

        return _str_version(self.call(f"read version {version} of {name!r}", get))

    def versions(self, name: str) -> list:
        found = self.call(
            f"list versions of {name!r}",
            lambda c: c.search_model_versions(f"name = '{name}'", max_results=1000),
        )
        return sorted((_str_version(v) for v in found), key=lambda v: int(v.version))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``: one registry call, so readers see old or new."""
        self.call(
            f"set alias {alias!r} of {name!r} to version {version}",
            lambda c: c.set_registered_model_alias(name, alias, str(version)),
        )

    def promote(self, name: str, version: str) -> str | None:
        """Make ``version`` the champion; remember the one it replaces for rollback.

        Returns the previous champion's version, if there was one.
        """
        previous = self.version_by_alias(name, PRODUCTION)
        self.set_alias(name, PRODUCTION, version)
        if previous is not None and previous.version != str(version):
            self.set_alias(name, PREVIOUS, previous.version)
            return previous.version
        return None

    def tag_version(self, name: str, version: str, tags: dict[str, str]) -> None:
        def put(c):
            for k, v in tags.items():
                c.set_model_version_tag(name, str(version), k, str(v))

        self.call(f"tag version {version} of {name!r}", put)

    def model_state(self, name: str) -> tuple[str | None, dict[str, str]]:
        """The ``production`` version and the registered model's tags, read in one call (so
        a reader never pairs an old alias with a new tag). ``(None, {})`` for no model."""

        def get(c):
            try:
                return c.get_registered_model(name)
            except Exception as e:
                if _is_not_found(e):
                    return None
                raise

        model = self.call(f"read registered model {name!r}", get)
        if model is None:
            return None, {}
        production = (model.aliases or {}).get(PRODUCTION)
        return (None if production is None else str(production)), dict(model.tags or {})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.call(
            f"set tag {key!r} of registered model {name!r}",
            lambda c: c.set_registered_model_tag(name, key, value),
        )

    def delete_model_tag(self, name: str, key: str) -> None:
        """Remove a registered-model tag; a tag (or model) already gone is not an error."""

        def delete(c):
            try:
                c.delete_registered_model_tag(name, key)
            except Exception as e:
                if not _is_not_found(e):
                    raise

        self.call(f"delete tag {key!r} of registered model {name!r}", delete)

    def load_model(self, name: str, version: str, trusted: frozenset[str] = frozenset()):
        """The registered sklearn Pipeline, loaded from its skops file with a fixed allow-list
        of types plus ``trusted`` (the types of the pipeline its reviewed spec builds:
        ``pipeline.spec_types``), never from the list the artifact itself declares."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = self.call(
                f"download version {version} of {name!r}",
                lambda c: mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}",
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                ),
            )
            files = sorted(Path(local).rglob("*.skops"))
            if not files:
                raise RegistryError(
                    f"version {version} of {name!r} has no skops model file: it was not logged "
                    "by this platform (models are stored with skops, never pickle)"
                )
            return load_skops(files[0], f"version {version} of {name!r}", trusted)


def load_skops(path: Path, what: str, trusted: frozenset[str] = frozenset()):
    """Load a skops file only if every type it needs is one our pipelines use (the fixed list,
    plus ``trusted``: the types of the pipeline built from the model's reviewed spec)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = sorted(set(untrusted) - TRUSTED_TYPES - trusted)
    if refused:
        raise RegistryError(
            f"{what}: the model file needs types this platform never produces: {refused}; "
            "refusing to load it (it may have been tampered with)"
        )
    return sio.load(path, trusted=untrusted)


def tracking_from_env(settings: Settings | None = None) -> Tracking:
    """Tracking outside Dagster (the CLI, ``mlflow run``, the server): MLFLOW_TRACKING_URI, or
    the embedded store."""
    from mlops_assets.settings import Settings

    s = settings or Settings.from_env()
    if s.tracking_uri:
        return Tracking(tracking_uri=s.tracking_uri, ui_url=s.mlflow_ui_url)
    uri, artifacts = s.embedded_tracking()
    return Tracking(tracking_uri=uri, artifact_root=str(artifacts), ui_url=s.mlflow_ui_url)


def model_bytes(pipeline) -> tuple[bytes, list[str]]:
    """The skops serialization of a pipeline and the types it needs trusted to load."""
    import skops.io as sio

    data = sio.dumps(pipeline)
    return data, sio.get_untrusted_types(data=data)


def log_model(pipeline, example: pd.DataFrame, answers: np.ndarray, trusted: list[str]):
    """Log the pipeline to the active run with skops (never pickle), signature and example."""
    import mlflow
    from mlflow.models import infer_signature

    from mlops_assets.training.lineage import pip_requirements

    signature = infer_signature(example, answers)
    return mlflow.sklearn.log_model(
        pipeline,
        name=MODEL_ARTIFACT,
        serialization_format="skops",
        skops_trusted_types=trusted,
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict",
        # Stated, so MLflow does not infer them (a subprocess that loads the model, ~5 s).
        pip_requirements=pip_requirements(),
    )


def log_model_file(tracking: Tracking, model_id: str, name: str, text: str) -> None:
    """Store ``text`` as the file ``name`` among a logged model's own artifacts, so every
    version registered from it carries the file (``models:/<name>/<version>/<file>``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, name)
        path.write_text(text)
        tracking.call(
            f"store {name} with model {model_id}",
            lambda c: c.log_model_artifact(model_id, str(path)),
        )


def read_model_file(tracking: Tracking, name: str, version: str, file: str) -> str:
    """The text of the file ``file`` stored with version ``version`` of ``name``."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = tracking.call(
            f"read {file} of version {version} of {name!r}",
            lambda c: mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/{file}",
                dst_path=tmp,
                tracking_uri=tracking.tracking_uri,
            ),
        )
        return Path(local).read_text()


def append_to_model_file(tracking: Tracking, name: str, version: str, file: str, text: str):
    """Append ``text`` to the file ``file`` of version ``version`` of ``name`` (the gate's
    decision to the model card). The file is rewritten in the logged model's artifacts."""
    mv = tracking.version(name, version)
    model_id = model_id_of(mv)
    if not model_id:
        raise RegistryError(
            f"version {version} of {name!r} was not registered from an MLflow 3 logged model "
            f"(its source is {mv.source!r}), so it has no {file} to append to"
        )
    current = read_model_file(tracking, name, version, file)
    log_model_file(tracking, model_id, file, current.rstrip("\n") + "\n" + text)


def model_id_of(mv) -> str | None:
    """The LoggedModel a version was registered from: its ``model_id``, which a REST registry
    may leave empty, else the id in its ``models:/<model_id>`` source."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = str(mv.source or "")
    rest = source.removeprefix("models:/")
    return rest if rest != source and rest.startswith("m-") and "/" not in rest else None


def registered_from_run(tracking: Tracking, name: str, run_id: str):
    """The version of ``name`` already registered from ``run_id``, if any."""
    found = tracking.call(
        f"look up versions of {name!r} from run {run_id}",
        lambda c: c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"),
    )
    return _str_version(min(found, key=lambda v: int(v.version))) if found else None


def register(tracking: Tracking, name: str, model_uri: str, run_id: str, tags: dict[str, str]):
    """A new registered version with its lineage tags, created in one call (tags included).

    Idempotent per run: MLflow's client retries a POST whose answer was lost, and a step may be
    re-run, so an existing version from the same run is returned instead of a second one.
    """
    import mlflow

    existing = registered_from_run(tracking, name, run_id)
    if existing is not None:
        return existing

    def create(_):
        # No fixed wait: MLflow's own wait sleeps in steps whenever it waits at all. A registry
        # that creates versions asynchronously answers PENDING_REGISTRATION, polled below.
        return mlflow.register_model(model_uri, name, tags=tags, await_registration_for=0)

    try:
        return _str_version(_until_ready(tracking, tracking.call(f"register {name!r}", create)))
    except TrackingUnavailable as e:
        raise TrackingUnavailable(
            f"{e} Registering {name!r} from run {run_id} may or may not have completed; "
            "materializing again reuses a version from the same run instead of adding one."
        ) from e


def _until_ready(tracking: Tracking, mv, timeout: float = 60.0, every: float = 0.2):
    """The version once READY: at once from a registry that creates versions synchronously (the
    open-source stores), else polled every ``every`` s for up to ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while str(getattr(mv, "status", "READY")) != "READY":
        if str(mv.status) == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(
                f"version {mv.version} of {mv.name!r} is {mv.status} after {timeout:g}s "
                f"({getattr(mv, 'status_message', '') or 'no message'}): check the registry, "
                "then materialize again (the version from the same run is reused)"
            )
        time.sleep(every)
        mv = tracking.version(mv.name, str(mv.version))
    return mv


def _str_version(mv):
    """The SQLite store returns versions as int, the REST store as str: make them all str."""
    if mv is not None:
        mv._version = str(mv._version)
    return mv


def _is_unreachable(e: BaseException) -> bool:
    import requests

    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        text = str(cause)
        if any(
            s in text
            for s in ("Max retries exceeded", "Connection refused", "timed out", "Read timed out")
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _is_not_found(e: BaseException) -> bool:
    """A missing model, version or alias: MLflow's own error codes, not any "not found" text
    (a proxy's 404 page must not read as "there is no champion")."""
    code = getattr(e, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return (
        code == "INVALID_PARAMETER_VALUE"
        and "alias" in str(e).lower()
        and ("not found" in str(e).lower())
    )
