"""How steps execute (MLOPS_EXECUTOR) and what a step pod asks Kubernetes for.

| MLOPS_EXECUTOR          | executor                              | where steps run               |
|-------------------------|---------------------------------------|-------------------------------|
| unset or ``in_process`` | ``dg.in_process_executor``            | in the run worker (embedded)  |
| ``multiprocess``        | ``dg.multiprocess_executor``          | one process per step          |
| ``k8s``                 | ``dagster_k8s.k8s_job_executor``      | one Kubernetes Job per step   |

``k8s`` needs the production instance (K8sRunLauncher: MLOPS_ENV=production); its step pods
inherit the launcher's namespace, image, env and volumes, plus the step's own
``dagster-k8s/config`` op tag (TRAINING_K8S_TAGS for training).
"""

from __future__ import annotations

import dagster as dg

# The training step's pod: scikit-learn fits use every core they get, and gradient boosting on a
# year of data needs a few GiB. A memory limit equal to the request: the pod is never killed
# for using what it was promised. No CPU limit: throttling only slows a fit down.
TRAINING_RESOURCES = {
    "requests": {"cpu": "2", "memory": "4Gi"},
    "limits": {"memory": "4Gi"},
}
TRAINING_K8S_TAGS = {"dagster-k8s/config": {"container_config": {"resources": TRAINING_RESOURCES}}}


def executor_for(name: str) -> dg.ExecutorDefinition:
    """The executor ``Settings.executor`` (MLOPS_EXECUTOR) names: in_process (default),
    multiprocess or k8s."""
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    return dg.in_process_executor
