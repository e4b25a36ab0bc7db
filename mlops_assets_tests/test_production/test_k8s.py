"""Kubernetes without a cluster: the production K8sRunLauncher and k8s_job_executor, built by
dagster-k8s from the production config and run for real against a recording API server
(fake_k8s_api.py). The Jobs they send are validated against the Kubernetes 1.32 schema
(kubernetes-validate, strict: an unknown field fails)."""

import json

import dagster as dg
import kubernetes_validate
import pytest
from dagster._config import process_config
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s import K8sRunLauncher, k8s_job_executor

from mlops_assets.defs.k8s import TRAINING_K8S_TAGS, TRAINING_RESOURCES, executor_for
from mlops_assets.defs.keys import trained_model_key
from mlops_assets.settings import Settings
from mlops_assets_tests.processes import REPO
from mlops_assets_tests.test_production.conftest import NAMESPACE

K8S_VERSION = "1.32"
IMAGE = "registry.example.com/mlops-assets:1.4.0"  # the code server's DAGSTER_CURRENT_IMAGE
LAUNCHER_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
STEP = "churn__trained_model"


@pytest.fixture
def training_job():
    """The churn training asset's job as the code location serves it, image included."""
    repo = ReconstructableRepository.for_module(
        "mlops_assets.definitions", "defs", working_directory=str(REPO), container_image=IMAGE
    )
    recon = repo.get_reconstructable_job("__ASSET_JOB").get_subset(
        asset_selection={trained_model_key("churn")}
    )
    return recon, recon.get_definition()


def _create_run(instance, training_job) -> dg.DagsterRun:
    recon, job_def = training_job
    return instance.create_run_for_job(
        job_def,
        asset_selection=frozenset({trained_model_key("churn")}),
        tags={"mlops/model": "churn"},
        job_code_origin=recon.get_python_origin(),
    )


def _only_job(k8s_api) -> dict:
    assert k8s_api.unexpected == []
    assert len(k8s_api.jobs) == 1, k8s_api.jobs
    namespace, body = k8s_api.jobs[0]
    assert namespace == NAMESPACE
    assert kubernetes_validate.validate(body, K8S_VERSION, strict=True) == K8S_VERSION
    return body


def _inherits_the_launcher_settings(body: dict, postgres) -> dict:
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod["serviceAccountName"] == "dagster-run"
    assert pod["restartPolicy"] == "Never"
    assert container["envFrom"] == [
        {"configMapRef": {"name": "mlops-env"}},
        {"secretRef": {"name": "mlops-secrets"}},
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == "/opt/dagster/home"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "dagster-postgresql-secret", "key": "postgresql-password"}
    }
    assert pod["volumes"] == [
        {"name": "mlops-data", "persistentVolumeClaim": {"claimName": "mlops-data"}}
    ]
    assert container["volumeMounts"] == [{"name": "mlops-data", "mountPath": "/opt/dagster/data"}]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "allowPrivilegeEscalation": False,
    }
    assert pod["securityContext"] == {"fsGroup": 10001}
    assert body["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == (
        "mlops-assets"
    )
    # The instance travels as env references; the database password itself never does.
    assert postgres.password not in json.dumps(body)
    return container


def test_run_launcher_sends_a_valid_job_for_a_training_run(
    production_home, k8s_api, postgres, training_job
):
    with dg.DagsterInstance.from_config(str(production_home.path)) as instance:
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        run = _create_run(instance, training_job)
        instance.launch_run(run.run_id, workspace=None)  # what the daemon does on dequeue
        launched = instance.get_run_by_id(run.run_id)
    assert launched.status == dg.DagsterRunStatus.STARTING
    assert launched.tags["dagster/image"] == IMAGE
    body = _only_job(k8s_api)
    assert body["metadata"]["name"] == f"dagster-run-{run.run_id}"
    assert body["metadata"]["labels"]["dagster/run-id"] == run.run_id
    assert body["metadata"]["labels"]["app.kubernetes.io/component"] == "run_worker"
    container = _inherits_the_launcher_settings(body, postgres)
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    assert container["resources"] == LAUNCHER_RESOURCES
    assert body["spec"]["backoffLimit"] == 0  # a failed run is retried by Dagster, not by K8s


def test_training_step_pod_asks_for_the_training_resources(
    production_home, k8s_api, postgres, training_job, monkeypatch
):
    """MLOPS_EXECUTOR=k8s: the training step gets its own pod with TRAINING_K8S_TAGS' requests,
    through the real k8s_job_executor and its step handler."""
    recon, _ = training_job
    plan = create_execution_plan(recon)
    step_tags = plan.get_step_by_key(STEP).tags
    assert (
        json.loads(step_tags.get("dagster-k8s/config", "{}"))
        == (TRAINING_K8S_TAGS["dagster-k8s/config"])
    ), "trained_model lacks op_tags=TRAINING_K8S_TAGS (mlops_assets/defs/training/assets.py)"
    monkeypatch.setenv("MLOPS_EXECUTOR", "k8s")
    executor_def = executor_for(Settings.from_env().executor)
    config = process_config(executor_def.config_schema.config_type, {})
    assert config.success, config.errors
    with dg.DagsterInstance.from_config(str(production_home.path)) as instance:
        executor = executor_def.executor_creation_fn(
            InitExecutorContext(
                job=recon,
                executor_def=executor_def,
                executor_config=config.value,
                instance=instance,
            )
        )
        run = _create_run(instance, training_job)
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(
                job=recon,
                dagster_run=run,
                instance=instance,
                execution_plan=plan,
                raise_on_error=True,
                retry_mode=RetryMode.DISABLED,
            ),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        )
        step_context = StepHandlerContext(
            instance=instance,
            plan_context=plan_context,
            steps=plan.steps,
            execute_step_args=ExecuteStepArgs(recon.get_python_origin(), run.run_id, [STEP]),
            dagster_run=run,
        )
        # The executor's step handler, as the run worker would call it for this step.
        events = list(executor._step_handler.launch_step(step_context))
    assert [e.event_type_value for e in events] == ["STEP_WORKER_STARTING"]
    body = _only_job(k8s_api)
    labels = body["metadata"]["labels"]
    assert labels["dagster/op"] == STEP and labels["app.kubernetes.io/component"] == "step_worker"
    container = _inherits_the_launcher_settings(body, postgres)
    assert container["args"] == ["dagster", "api", "execute_step"]
    assert container["resources"] == TRAINING_RESOURCES


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, dg.in_process_executor),
        ("", dg.in_process_executor),
        ("in_process", dg.in_process_executor),
        ("multiprocess", dg.multiprocess_executor),
        ("K8s", k8s_job_executor),
    ],
)
def test_executor_for_env(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("MLOPS_EXECUTOR", raising=False)
    else:
        monkeypatch.setenv("MLOPS_EXECUTOR", value)
    assert executor_for(Settings.from_env().executor) is expected


def test_an_unknown_executor_is_refused_with_the_allowed_ones(monkeypatch):
    monkeypatch.setenv("MLOPS_EXECUTOR", "celery")
    with pytest.raises(ValueError) as e:
        executor_for(Settings.from_env().executor)
    message = str(e.value)
    assert "MLOPS_EXECUTOR='celery' is not supported" in message
    assert all(name in message for name in ("'in_process'", "'multiprocess'", "'k8s'"))


def test_training_k8s_config_is_valid_step_config_for_k8s_job_executor():
    """The same request, given as executor config instead of a tag, passes dagster-k8s' schema;
    a misspelt field does not."""
    schema = k8s_job_executor.config_schema.config_type
    config = {"per_step_k8s_config": {STEP: TRAINING_K8S_TAGS["dagster-k8s/config"]}}
    result = process_config(schema, config)
    assert result.success, result.errors
    assert result.value["per_step_k8s_config"][STEP]["container_config"]["resources"] == (
        TRAINING_RESOURCES
    )
    assert not process_config(schema, {"per_step_k8s_confg": {}}).success
