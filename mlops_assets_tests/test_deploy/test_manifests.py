"""k8s/ without a cluster: both overlays rendered by the real kustomize (`kubectl kustomize`, or a
small Python renderer where kubectl is missing, checked against kubectl where it is), every
object validated against the Kubernetes 1.32 schemas (kubernetes-validate, strict), and what
the schemas cannot see: probes on the server's real routes, non-root pods, selectors that
select, autoscalers and budgets that target, pinned images, Secrets and ConfigMaps that exist,
commands the real CLIs accept, settings our code can run on, alert rules on metrics the server
exports, Helm values the Dagster chart accepts and that agree with the production instance,
and the KServe InferenceService against a schema of its CRD."""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from mlops_assets_tests.processes import REPO
from mlops_assets_tests.test_deploy.test_compose import parse, run_lakefs_setup, services
from mlops_assets_tests.test_e2e.test_container import (
    default_command,
    dockerfile_env,
    documented_roles,
)

K8S = REPO / "k8s"
OVERLAYS = {"dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
KSERVE = K8S / "kserve"
HELM_VALUES = K8S / "helm" / "dagster-values.yaml"
REQUIRED_SECRETS = OVERLAYS["prod"] / "required-secrets.yaml"
PRODUCTION_INSTANCE = REPO / "deploy" / "dagster" / "dagster.production.yaml"
WORKFLOW = REPO / ".github" / "workflows" / "mlops.yml"
K8S_VERSION = "1.32"  # the kubectl on our machines; kubernetes-validate ships its schemas
OUR_IMAGE = "mlops-assets"
THIRD_PARTY_IMAGES = {"treeverse/lakefs", "ghcr.io/mlflow/mlflow"}
PROD_NAMESPACE = "mlops"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}


# --- rendering --------------------------------------------------------------------------------


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render_kubectl(path: Path) -> list[dict]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {path}:\n{done.stderr}"
    return [o for o in yaml.safe_load_all(done.stdout) if o]


class Kustomize:
    """The part of kustomize these overlays use, for machines without kubectl: resources (files
    and folders), configMapGenerator (files, fixed names), namespace, JSON 6902 patches,
    replicas, images and replacements, applied in kustomize's order. Anything else is refused,
    so the renderer never silently renders something other than kustomize would."""

    FIELDS = {
        "apiVersion", "kind", "namespace", "resources", "configMapGenerator", "patches",
        "replicas", "images", "replacements",
    }  # fmt: skip

    def render(self, path: Path) -> list[dict]:
        k = yaml.safe_load((path / "kustomization.yaml").read_text())
        if unknown := set(k) - self.FIELDS:
            raise NotImplementedError(f"{path}: {sorted(unknown)} not supported; use kubectl")
        objs: list[dict] = []
        for entry in k.get("resources", []):
            p = path / entry
            if p.is_dir():
                objs += self.render(p)
            else:
                objs += [o for o in yaml.safe_load_all(p.read_text()) if o]
        objs += [self._config_map(path, g) for g in k.get("configMapGenerator", [])]
        for patch in k.get("patches", []):
            self._patch(objs, patch)
        if ns := k.get("namespace"):
            for o in objs:
                if o["kind"] == "Namespace":
                    o["metadata"]["name"] = ns
                elif o["kind"] not in CLUSTER_SCOPED:
                    o["metadata"]["namespace"] = ns
        for r in k.get("replicas", []):
            targets = named(objs, WORKLOADS, r["name"])
            assert targets, f"replicas: no workload {r['name']}"
            for o in targets:
                o["spec"]["replicas"] = r["count"]
        for image in k.get("images", []):
            for o in objs:
                for c in containers_anywhere(o):
                    c["image"] = self._new_image(c["image"], image)
        for r in k.get("replacements", []):
            self._replace(objs, r)
        return objs

    @staticmethod
    def _config_map(path: Path, gen: dict) -> dict:
        options = gen.get("options", {})
        if set(gen) - {"name", "files", "options"} or not options.get("disableNameSuffixHash"):
            raise NotImplementedError(f"{path}: configMapGenerator {gen['name']}: use kubectl")
        meta = {"name": gen["name"]}
        if options.get("labels"):
            meta["labels"] = dict(options["labels"])
        data = {Path(f).name: (path / f).read_text() for f in gen["files"]}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    @staticmethod
    def _patch(objs: list[dict], patch: dict) -> None:
        ops, target = yaml.safe_load(patch["patch"]), patch["target"]
        if not isinstance(ops, list) or set(target) != {"kind", "name"}:
            raise NotImplementedError("only JSON 6902 patches targeted by kind and name")
        targets = named(objs, {target["kind"]}, target["name"])
        assert targets, f"patch target {target} matches nothing"
        for o in targets:
            o.update(jsonpatch.apply_patch(o, ops))

    @staticmethod
    def _new_image(ref: str, image: dict) -> str:
        name, tag = split_image(ref)
        if name != image["name"]:
            return ref
        if set(image) - {"name", "newName", "newTag"}:
            raise NotImplementedError(f"images: {image}")
        new = image.get("newName", name)
        tag = image.get("newTag", tag)
        return f"{new}:{tag}" if tag else new

    @staticmethod
    def _replace(objs: list[dict], r: dict) -> None:
        (source,) = named(objs, {r["source"]["kind"]}, r["source"]["name"])
        value = field(source, r["source"]["fieldPath"])
        for target in r["targets"]:
            for o in named(objs, {target["select"]["kind"]}, target["select"]["name"]):
                for fp in target["fieldPaths"]:
                    field(o, fp, value)


def named(objs: list[dict], kinds: set[str], name: str) -> list[dict]:
    return [o for o in objs if o["kind"] in kinds and o["metadata"]["name"] == name]


def field(obj, path: str, value=None):
    """Get (or, with ``value``, set) a kustomize field path: ``a.b.[name=x].c``."""
    parts = [p for p in re.split(r"\.(?![^\[]*\])", path) if p]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if m := re.fullmatch(r"\[(\w+)=(.+)\]", part):
            (item,) = [e for e in obj if e.get(m[1]) == m[2]]
            assert not last, path
            obj = item
        elif last and value is not None:
            assert part in obj, f"{path}: no {part} to replace"
            obj[part] = value
        else:
            obj = obj[part]
    return obj


@functools.cache
def _render(path: Path, renderer: str) -> tuple[dict, ...]:
    objs = render_kubectl(path) if renderer == "kubectl" else Kustomize().render(path)
    return tuple(objs)


def render(path: Path) -> list[dict]:
    """The objects of a kustomization: kubectl's where it exists, else the Python renderer's."""
    return copy.deepcopy(list(_render(path, "kubectl" if kubectl() else "python")))


# --- reading objects --------------------------------------------------------------------------


def split_image(ref: str) -> tuple[str, str]:
    """(name, tag or digest) of an image reference; a registry port is not a tag."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        return name, digest
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, ""
    return name, tag


def containers_anywhere(obj) -> list[dict]:
    """Every container of an object, wherever its pod spec is (a Deployment's template, a
    KServe predictor), init containers included."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                found += v
            else:
                found += containers_anywhere(v)
    elif isinstance(obj, list):
        for v in obj:
            found += containers_anywhere(v)
    return found


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def ours(container: dict) -> bool:
    """Whether a container runs our image (named `mlops-assets`, or whatever the pipeline pins)."""
    return split_image(container["image"])[0] not in THIRD_PARTY_IMAGES


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_refs(spec: dict) -> list[tuple[str, str, str | None]]:
    """(ConfigMap or Secret, name, key or None for all of it) of every reference of a pod."""
    refs = []
    for c in all_containers(spec):
        for src in c.get("envFrom", []):
            for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if ref in src:
                    refs.append((kind, src[ref]["name"], None))
        for e in c.get("env", []):
            for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if ref in e.get("valueFrom", {}):
                    refs.append((kind, e["valueFrom"][ref]["name"], e["valueFrom"][ref]["key"]))
    for v in spec.get("volumes", []):
        if "configMap" in v:
            refs.append(("ConfigMap", v["configMap"]["name"], None))
        if "secret" in v:
            refs.append(("Secret", v["secret"]["secretName"], None))
    return refs


def data_of(obj: dict) -> dict[str, str]:
    return {**obj.get("data", {}), **obj.get("stringData", {})}


# Secret keys no overlay carries a value for, not even dev: the operator adds them (k8s/README.md)
# and the pods that need them refuse to start until then.
OPERATOR_SUPPLIED = {("mlops-secrets", "MLOPS_SERVING_TOKEN")}


def with_operator_keys(secrets: dict[str, dict]) -> dict[str, dict]:
    """``secrets`` as the cluster has them once the operator added the keys no overlay has."""
    out = copy.deepcopy(secrets)
    for name, key in OPERATOR_SUPPLIED:
        if name in out and key not in data_of(out[name]):
            out[name].setdefault("stringData", {})[key] = f"{key.lower()}-added-by-the-operator"
    return out


def container_env(objs: list[dict], container: dict) -> dict[str, str]:
    """The environment a container would get, its ConfigMaps and Secrets resolved."""
    maps, secrets = by_kind(objs, "ConfigMap"), with_operator_keys(by_kind(objs, "Secret"))
    source = {"ConfigMap": maps, "Secret": secrets}
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in src:
                env.update(data_of(source[kind][src[ref]["name"]]))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if ref in e.get("valueFrom", {}):
                r = e["valueFrom"][ref]
                env[e["name"]] = data_of(source[kind][r["name"]])[r["key"]]
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """A pod spec's `$(VAR)` expansion in command and args: `$$` is a literal `$`, and a
    reference to an undefined variable is left as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        arg,
    )


def container(objs: list[dict], deployment: str) -> dict:
    return pod_spec(by_kind(objs, "Deployment")[deployment])["containers"][0]


def quantity(q: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([\d.]+)(m|Ki|Mi|Gi|Ti)?", str(q))
    assert m, f"quantity {q!r}"
    return float(m[1]) * units.get(m[2] or "", 1)


def required_secrets() -> dict[str, list[str]]:
    return yaml.safe_load(REQUIRED_SECRETS.read_text())


def lock_version(package: str) -> str:
    (version,) = re.findall(
        rf"^{re.escape(package)}==(\S+)", (REPO / "requirements.lock").read_text(), re.M
    )
    return version


# --- the renderers ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*OVERLAYS.values(), KSERVE], ids=[*OVERLAYS, "kserve"])
def test_the_python_renderer_renders_what_kustomize_renders(path):
    if not kubectl():
        pytest.skip("no kubectl here: the Python renderer is the only one")

    def keyed(objs):
        return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}

    real, ours_ = keyed(_render(path, "kubectl")), keyed(_render(path, "python"))
    assert real.keys() == ours_.keys()
    for key in real:
        assert ours_[key] == real[key], key


def test_the_python_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\nresources: []\n")
    with pytest.raises(NotImplementedError, match="commonLabels"):
        Kustomize().render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "patches:\n  - target: {kind: Deployment, name: x}\n    patch: 'spec: {replicas: 2}'\n"
    )
    with pytest.raises(NotImplementedError, match="JSON 6902"):
        Kustomize().render(tmp_path)


# --- Kubernetes schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_kubernetes(overlay):
    objs = render(OVERLAYS[overlay])
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "ConfigMap", "ServiceAccount"} <= kinds
    errors = []
    for o in objs:
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)
    assert {(o["apiVersion"], o["kind"]) for o in objs} >= {
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
    }


def test_the_schema_check_can_fail():
    deployment = copy.deepcopy(by_kind(render(OVERLAYS["prod"]), "Deployment")["mlops-inference"])
    c = pod_spec(deployment)["containers"][0]
    c["readinessProbes"] = c.pop("readinessProbe")  # a typo: strict mode knows every field
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# --- what the schemas cannot see --------------------------------------------------------------


def test_prod_lives_in_namespace_mlops_and_dev_elsewhere():
    namespaces = {}
    for overlay, path in OVERLAYS.items():
        objs = render(path)
        (namespaces[overlay],) = by_kind(objs, "Namespace")  # created by the overlay itself
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                assert o["metadata"].get("namespace") == namespaces[overlay], o["metadata"]
    assert namespaces["prod"] == PROD_NAMESPACE
    assert namespaces["dev"] != PROD_NAMESPACE
    # The production instance launches runs where prod puts everything else.
    instance = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    assert instance["run_launcher"]["config"]["job_namespace"] == PROD_NAMESPACE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_probed_bounded_and_unprivileged(overlay):
    """Probes, requests and limits, and the `restricted` Pod Security Standard, which the
    namespace reports on (warn, audit)."""
    deployments = by_kind(render(OVERLAYS[overlay]), "Deployment")
    assert set(deployments) == {"mlops-inference", "mlops-code-server", "mlflow", "lakefs"}
    for name, d in deployments.items():
        spec = pod_spec(d)
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, name
        for c in all_containers(spec):
            where = f"{name}/{c['name']}"
            if c in spec["containers"]:
                assert "readinessProbe" in c and "livenessProbe" in c, where
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}: {part}"
            assert quantity(res["requests"]["memory"]) <= quantity(res["limits"]["memory"]), where
            assert quantity(res["requests"]["cpu"]) <= quantity(res["limits"]["cpu"]), where
            sc = c.get("securityContext", {})
            effective = {**pod_sc, **sc}
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser", 0) != 0, where  # numeric: verifiable by kubelet
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for v in spec.get("volumes", []):
            assert set(v) - {"name"} <= {"emptyDir", "persistentVolumeClaim", "configMap", "secret"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_their_deployment_and_reach_its_ports(overlay):
    objs = render(OVERLAYS[overlay])
    deployments = by_kind(objs, "Deployment")
    for name, d in deployments.items():
        labels = pod_labels(d)
        assert matches(d["spec"]["selector"]["matchLabels"], labels), name
    for name, svc in by_kind(objs, "Service").items():
        selected = [
            d for d in deployments.values() if matches(svc["spec"]["selector"], pod_labels(d))
        ]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} Deployments"
        ports = {
            key: p["containerPort"]
            for c in pod_spec(selected[0])["containers"]
            for p in c.get("ports", [])
            for key in (p.get("name"), p["containerPort"])
            if key is not None
        }
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports, f"Service {name} targets {target}, not a container port"
            assert ports[target] == port["port"], f"Service {name}: {port} vs {ports[target]}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets_target_existing_deployments(overlay):
    objs = render(OVERLAYS[overlay])
    deployments = by_kind(objs, "Deployment")
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    assert hpas
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
        assert ref["name"] in deployments, f"HPA {name} scales a missing {ref['name']}"
        target = deployments[ref["name"]]
        # An apply that set replicas would undo the autoscaler on every deploy.
        assert "replicas" not in target["spec"], f"{ref['name']}: replicas and an HPA"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        # CPU utilisation is relative to requests: every container needs one.
        for c in pod_spec(target)["containers"]:
            assert "cpu" in c["resources"]["requests"], ref["name"]
    budgets = by_kind(objs, "PodDisruptionBudget")
    for name, pdb in budgets.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        selected = [d for d in deployments.values() if matches(selector, pod_labels(d))]
        assert len(selected) == 1, f"PDB {name} selects {len(selected)} Deployments"
        assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    # A budget for every Deployment that runs more than one pod.
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    scaled |= {n for n, d in deployments.items() if d["spec"].get("replicas", 1) > 1}
    budgeted = {
        n
        for n, d in deployments.items()
        for p in budgets.values()
        if matches(p["spec"]["selector"]["matchLabels"], pod_labels(d))
    }
    assert scaled <= budgeted, f"no PodDisruptionBudget for {scaled - budgeted}"


def test_dev_is_small_and_prod_is_larger():
    dev, prod = render(OVERLAYS["dev"]), render(OVERLAYS["prod"])

    def replicas(objs) -> dict[str, int]:
        hpa_min = {
            h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
            for h in by_kind(objs, "HorizontalPodAutoscaler").values()
        }
        return {
            n: hpa_min.get(n, d["spec"].get("replicas", 1))
            for n, d in by_kind(objs, "Deployment").items()
        }

    assert set(replicas(dev).values()) == {1}, replicas(dev)
    assert replicas(prod)["mlops-inference"] >= 2
    for name, count in replicas(dev).items():
        assert replicas(prod)[name] >= count, name
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                small = quantity(container(dev, name)["resources"][part][res])
                large = quantity(container(prod, name)["resources"][part][res])
                assert small <= large, f"{name} {part}.{res}: dev {small} > prod {large}"
    hpa = by_kind(prod, "HorizontalPodAutoscaler")["mlops-inference"]["spec"]
    assert hpa["maxReplicas"] > hpa["minReplicas"]


@pytest.mark.parametrize("path", [*OVERLAYS.values(), KSERVE], ids=[*OVERLAYS, "kserve"])
def test_every_image_is_pinned(path):
    images = {c["image"] for o in render(path) for c in containers_anywhere(o)}
    assert images
    for ref in images:
        _, tag = split_image(ref)
        assert tag and tag != "latest", f"{ref}: not pinned"
    # Third-party images: lakeFS as in docker-compose.yml, MLflow at the version our client has.
    if path != KSERVE:
        by_name = {split_image(r)[0]: split_image(r)[1] for r in images}
        assert by_name["treeverse/lakefs"] == split_image(services()["lakefs"]["image"])[1]
        assert by_name["ghcr.io/mlflow/mlflow"] == f"v{lock_version('mlflow')}-full"


def test_our_image_is_set_by_each_overlay_and_by_the_pipeline(tmp_path):
    def our_images(objs) -> set[str]:
        return {c["image"] for o in objs for c in containers_anywhere(o) if ours(c)}

    assert our_images(render(OVERLAYS["dev"])) == {f"{OUR_IMAGE}:dev"}
    (placeholder,) = our_images(render(OVERLAYS["prod"]))
    assert split_image(placeholder)[1] == "set-by-ci"
    # What the delivery pipeline runs in k8s/overlays/prod before it applies.
    workflow = WORKFLOW.read_text()
    m = re.search(r'kustomize edit set image "(?P<name>[^=]+)=\$IMAGE_REF"', workflow)
    assert m and m["name"] == OUR_IMAGE, "the pipeline pins another image name"
    assert re.search(r"working-directory:\s*k8s/overlays/prod", workflow)
    # `kustomize edit set image NAME=REF` sets newName and newTag of entry NAME; do the same to
    # a copy and render it: every container of ours, and the image runs are launched with,
    # must follow.
    ref = "ghcr.io/acme/mlops:0123456789abcdef0123456789abcdef01234567"
    copied = tmp_path / "k8s"
    shutil.copytree(K8S, copied)
    rendered, fresh = {}, render_kubectl if kubectl() else Kustomize().render
    for overlay in (copied / "overlays" / "prod", copied / "kserve"):
        k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        (entry,) = [i for i in k["images"] if i["name"] == m["name"]]
        entry["newName"], entry["newTag"] = ref.rsplit(":", 1)
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(k))
        rendered[overlay.name] = fresh(overlay)
        assert our_images(rendered[overlay.name]) == {ref}, overlay
    code_server = container(rendered["prod"], "mlops-code-server")
    env = {e["name"]: e.get("value") for e in code_server["env"]}
    assert env["DAGSTER_CURRENT_IMAGE"] == ref


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runs_are_launched_with_the_code_servers_image(overlay):
    c = container(render(OVERLAYS[overlay]), "mlops-code-server")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["DAGSTER_CURRENT_IMAGE"] == c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves(overlay):
    """Every ConfigMap, key, ServiceAccount and claim a pod uses is in the overlay; every Secret
    too in dev, and in prod on the list of Secrets the operator creates."""
    objs = render(OVERLAYS[overlay])
    maps, secrets = by_kind(objs, "ConfigMap"), by_kind(objs, "Secret")
    required = required_secrets()
    for name, d in by_kind(objs, "Deployment").items():
        spec = pod_spec(d)
        assert spec["serviceAccountName"] in by_kind(objs, "ServiceAccount"), name
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert claim in by_kind(objs, "PersistentVolumeClaim"), (name, claim)
        for kind, ref, key in env_refs(spec):
            if kind == "ConfigMap":
                assert ref in maps, f"{name}: ConfigMap {ref} is not in the overlay"
                assert key is None or key in data_of(maps[ref]), f"{name}: {ref}.{key}"
            elif overlay == "dev":
                assert ref in secrets, f"{name}: Secret {ref} is not in the overlay"
                assert (
                    key is None or key in data_of(secrets[ref]) or (ref, key) in OPERATOR_SUPPLIED
                ), f"{name}: {ref}.{key}"
            else:
                assert ref in required, f"{name}: Secret {ref} is neither here nor required"
                assert key is None or key in required[ref], f"{name}: {ref}.{key} not required"
    if overlay == "prod":
        assert not secrets, "prod must not carry secret values"


def test_prod_requires_exactly_the_secrets_dev_has_placeholders_for():
    required = required_secrets()
    dev = {n: sorted(data_of(s)) for n, s in by_kind(render(OVERLAYS["dev"]), "Secret").items()}
    placeholders = {
        n: sorted(k for k in keys if (n, k) not in OPERATOR_SUPPLIED)
        for n, keys in required.items()
    }
    assert placeholders == dev
    # Nothing on the list is unused: by the overlay's pods or the Dagster chart's.
    used: set[tuple[str, str | None]] = set()
    for d in by_kind(render(OVERLAYS["prod"]), "Deployment").values():
        used |= {(ref, key) for kind, ref, key in env_refs(pod_spec(d)) if kind == "Secret"}
    helm = yaml.safe_load(HELM_VALUES.read_text())
    used.add((helm["global"]["postgresqlSecretName"], "postgresql-password"))
    for s in helm["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]:
        used.add((s["name"], None))
    for name, keys in required.items():
        for key in keys:
            assert (name, key) in used or (name, None) in used, f"{name}.{key} is never used"
    # The README tells the operator how to create each one.
    readme = (K8S / "README.md").read_text()
    for name in required:
        assert f"kubectl -n mlops create secret generic {name}" in readme, name


# --- the programs they run --------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_our_containers_run_the_documented_commands_which_the_real_clis_accept(overlay):
    objs = render(OVERLAYS[overlay])
    roles = documented_roles()
    checked = 0
    for name, d in by_kind(objs, "Deployment").items():
        for c in pod_spec(d)["containers"]:
            if not ours(c):
                continue
            # `command` would replace the image's ENTRYPOINT (tini, mlops-entrypoint).
            assert "command" not in c, f"{name}: use args, keep the ENTRYPOINT"
            assert c["args"] in roles.values(), f"{name} runs {c['args']}, not a documented role"
            params = parse(c["args"])
            assert params["host"] == "0.0.0.0", name
            assert params["port"] in {p["containerPort"] for p in c["ports"]}, name
            checked += 1
    assert checked == 2
    assert container(objs, "mlops-code-server")["args"] == default_command()
    probe = container(objs, "mlops-code-server")["readinessProbe"]["exec"]["command"]
    assert parse(probe)["port"] == 4000


# mlflow's CLI imports its SQLAlchemy store, which warns about SQLAlchemy's own deprecations.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_runs_on_the_backend_store_and_bucket_of_its_secrets(monkeypatch):
    from mlflow.server.security_utils import is_allowed_host_header

    objs = render(OVERLAYS["dev"])
    c = container(objs, "mlflow")
    env = container_env(objs, c)
    explicit = {e["name"] for e in c["env"]}
    args = [*c["command"], *c["args"]]
    # `$(VAR)` expands only from variables the container defines.
    for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_]\w*)\)", " ".join(args)):
        assert ref in explicit, f"$({ref}) is not defined in the container's env"
    cmd = [expand(a, env) for a in args]
    # The backend store comes from the environment, as the server reads it.
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", env["MLFLOW_BACKEND_STORE_URI"])
    params = parse(cmd)
    assert params["backend_store_uri"].startswith("postgresql+psycopg2://")
    assert params["artifacts_destination"] == "s3://mlops-mlflow/artifacts"
    assert params["serve_artifacts"] is True
    assert params["port"] == c["ports"][0]["containerPort"]
    # The password stays out of the command line.
    password = urllib.parse.urlsplit(env["MLFLOW_BACKEND_STORE_URI"]).password
    assert password and not any(password in a for a in cmd)
    # MLflow 3 checks the Host header: the one our code sends must pass, and a stranger's not.
    allowed = params["allowed_hosts"].split(",")
    client = container_env(objs, container(objs, "mlops-inference"))
    tracking = urllib.parse.urlsplit(client["MLFLOW_TRACKING_URI"])
    for host in (tracking.netloc, f"{tracking.hostname}.mlops-dev.svc.cluster.local:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


def test_lakefs_setup_creates_our_admin_once_and_fails_on_a_real_error(tmp_path):
    """The init container's script, expanded as the kubelet would, run with a stand-in lakefs."""
    objs = render(OVERLAYS["dev"])
    (init,) = pod_spec(by_kind(objs, "Deployment")["lakefs"])["initContainers"]
    assert init["command"] == ["/bin/sh", "-c"]
    env = container_env(objs, init)
    script = expand(init["args"][0], env)
    assert "$(/app/lakefs setup" in script  # `$$(` became the shell's `$(`
    ours_ = container_env(objs, container(objs, "mlops-inference"))
    assert env["ADMIN_ACCESS_KEY_ID"] == ours_["LAKEFS_ACCESS_KEY_ID"]
    for argv in run_lakefs_setup(script, env, tmp_path):
        assert argv[:3] == ["setup", "--user-name", "admin"]
        assert argv[argv.index("--access-key-id") + 1] == ours_["LAKEFS_ACCESS_KEY_ID"]


def test_no_overlay_ships_a_serving_token_and_the_server_refuses_to_start_without_one():
    """The admin token is never a value in the repository: no Secret of either overlay (nor the
    KServe manifests) carries one, and the inference server reads it from a Secret key without
    `optional`, so Kubernetes refuses to start it until the operator added the key."""
    for path in [*OVERLAYS.values(), KSERVE]:
        objs = render(path)
        for secret in by_kind(objs, "Secret").values():
            assert "MLOPS_SERVING_TOKEN" not in data_of(secret), (path, secret["metadata"])
        for obj in objs:
            for c in containers_anywhere(obj):
                for e in c.get("env", []):
                    if e["name"] == "MLOPS_SERVING_TOKEN":
                        ref = e["valueFrom"]["secretKeyRef"]  # never a literal value
                        assert (ref["name"], ref["key"]) in OPERATOR_SUPPLIED, ref
                        assert not ref.get("optional"), f"{path}: the token is optional"
    inference = container(render(OVERLAYS["dev"]), "mlops-inference")
    assert "MLOPS_SERVING_TOKEN" in {e["name"] for e in inference["env"]}
    # The operator is told how to add it, in dev as in prod.
    readme = (K8S / "README.md").read_text()
    assert "kubectl -n mlops-dev patch secret mlops-secrets" in readme
    assert "openssl rand -hex 32" in (OVERLAYS["dev"] / "secrets.yaml").read_text()


def with_dev_secrets(objs: list[dict]) -> list[dict]:
    """prod's objects plus dev's placeholder Secrets (the same names and keys, tested below),
    standing in for the ones the operator creates."""
    if by_kind(objs, "Secret"):
        return objs
    return objs + list(by_kind(render(OVERLAYS["dev"]), "Secret").values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_gets_the_settings_it_reads_and_every_address_is_a_service(overlay, monkeypatch):
    from mlops_assets import instance, settings

    objs = with_dev_secrets(render(OVERLAYS[overlay]))
    ports = {
        n: {p["port"] for p in s["spec"]["ports"]} for n, s in by_kind(objs, "Service").items()
    }
    for name in ("mlops-inference", "mlops-code-server"):
        env = container_env(objs, container(objs, name))
        for var in list(os.environ):
            if var.startswith(("MLOPS_", "LAKEFS_", "MLFLOW_", "DAGSTER_")):
                monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert settings.data_backend() == "lakefs", name
        options = settings.store_options_from_env()  # raises if a lakeFS setting is missing
        assert options["storage_namespace"].startswith("s3://")
        assert settings.tracking_uri() == env["MLFLOW_TRACKING_URI"]
        assert env["MLOPS_SERVING_TOKEN"], name
        for var in ("LAKEFS_ENDPOINT", "MLFLOW_TRACKING_URI", "MLOPS_SERVING_URL"):
            url = urllib.parse.urlsplit(env[var])
            assert url.port in ports.get(url.hostname, set()), f"{name}: {var}={env[var]}"
        assert urllib.parse.urlsplit(env["MLOPS_SERVING_URL"]).hostname == "mlops-inference"
        if name == "mlops-code-server":
            # It loads the production instance, with everything that reads.
            assert instance.instance_env() == "production"
            assert instance.missing_env() == []
            assert env["DAGSTER_HOME"] == dockerfile_env()["DAGSTER_HOME"]


# --- the inference server ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_probes_and_scrape_target_are_routes_of_the_server(overlay):
    from mlops_assets.serving.app import ROUTES

    routes = set(ROUTES.values())
    d = by_kind(render(OVERLAYS[overlay]), "Deployment")["mlops-inference"]
    c = pod_spec(d)["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] in routes, probe
        assert ports[c[probe]["httpGet"]["port"]] == 8080
    annotations = d["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in routes
    assert int(annotations["prometheus.io/port"]) in ports.values()


# --- monitoring -------------------------------------------------------------------------------

EXPECTED_ALERTS = {
    "MlopsInferenceDown", "MlopsPredictionLatencyP95High", "MlopsPredictionErrorRateHigh",
    "MlopsServerErrors", "MlopsDataDriftWarning", "MlopsDataDriftCritical", "MlopsModelStale",
    "MlopsLiveScoreOutOfBand", "MlopsPredictionLogWriteErrors",
    "MlopsPredictionLogCommitsFailing", "MlopsPredictionLogLinesQuarantined",
    "MlopsModelStaleWithoutNewData",
}  # fmt: skip


def exported_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from what the inference server really renders."""
    import numpy as np

    from mlops_assets.serving.metrics import Metrics

    m = Metrics()
    m.request("/predict", "churn", "3", 200, 0.01)
    m.error("/predict", "bad_input")
    m.predicted("churn", "3", np.array([0.2, 0.7]))
    # what the monitoring assets hand over (PUT /admin/monitoring/{model})
    m.monitored("churn", {"version": "3", "drift_share": 0.5, "model_created": 1.0})
    m.monitored("churn", {"live_score_change": -0.05})
    m.monitored("churn", {"stale_without_new_data": 1.0})  # what the stale-model sensor sets
    with tempfile.TemporaryDirectory() as tmp:  # the prediction log's counters, as served
        from mlops_assets.serving.predlog import PredictionLog

        log = PredictionLog(Path(tmp), models=("churn",))
        log.close()
        m.log_counters = log.counters
        text = m.render()
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, labels = re.match(r"(\w+)(?:\{(.*)\})? ", line).groups()
        out.setdefault(name, set()).update(re.findall(r'(\w+)="', labels or ""))
    return out


def selectors_of(expr: str):
    """(metric, [(label, operator, value)]) of each `metric{...}` of a PromQL expression,
    reading the quoted strings in it as PromQL does (a `}` inside a string is not the end)."""
    for m in re.finditer(r"\b([a-zA-Z_:][\w:]*)\{", expr):
        i, matchers = m.end(), []
        while True:
            while expr[i] in " ,\n":
                i += 1
            if expr[i] == "}":
                break
            label = re.match(r'(\w+)\s*(=~|!~|!=|=)\s*"', expr[i:])
            assert label, f"not a label matcher: {expr[i : i + 30]!r}"
            i += label.end()
            value = re.match(r'((?:[^"\\]|\\.)*)"', expr[i:])
            assert value, f"unterminated string in {expr!r}"
            i += value.end()
            matchers.append((label[1], label[2], value[1]))
        yield m[1], matchers


def rules_of(objs: list[dict]) -> list[dict]:
    (text,) = by_kind(objs, "ConfigMap")["prometheus-mlops-rules"]["data"].values()
    groups = yaml.safe_load(text)["groups"]
    return [r for g in groups for r in g["rules"]]


PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# promtool's own rule unit test: the stale-model gauge set by the sensor for 5 min fires the
# alert, and a gauge set back to 0 (new data: a retraining) ends it
STALE_RULE_TEST = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mlops_model_stale_without_new_data{{model="churn",version="4"}}'
        values: '0 1x8 0x5'
      - series: 'mlops_model_stale_without_new_data{{model="demand",version="2"}}'
        values: '0x14'
    alert_rule_test:
      - eval_time: 4m
        alertname: MlopsModelStaleWithoutNewData
        exp_alerts: []
      - eval_time: 7m
        alertname: MlopsModelStaleWithoutNewData
        exp_alerts:
          - exp_labels: {{severity: warning, model: churn}}
            exp_annotations:
              summary: "Model churn: stale, and nothing new to learn"
              description: >-
                churn fails its freshness policy, but main still holds only the data commit
                its model learned, so the stale-model sensor raises this alert instead of
                retraining an identical model. Ingest new data (`mlops ingest`) and the loop
                retrains; or widen freshness.model_max_age_hours in the spec if this data
                changes rarely.
      - eval_time: 12m
        alertname: MlopsModelStaleWithoutNewData
        exp_alerts: []
"""


@pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="needs promtool (Debian prometheus): scripts/test-deps.sh"
)
def test_promtool_checks_the_rules_and_the_stale_model_alert_fires_and_ends(tmp_path):
    rules = K8S / "base" / "prometheus" / "mlops-rules.yaml"
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = tmp_path / "stale-test.yaml"
    unit.write_text(STALE_RULE_TEST.format(rules=json.dumps(str(rules))))
    test = subprocess.run([PROMTOOL, "test", "rules", str(unit)], capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout, test.stdout


def test_alert_rules_are_complete_and_query_what_the_server_exports():
    from mlops_assets.defs.monitoring.assets import DriftConfig
    from mlops_assets.serving.state import LATENCY_BUCKETS
    from mlops_assets.specs.model import FreshnessSpec

    objs = render(OVERLAYS["prod"])
    rules = rules_of(objs)
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    metrics = {**exported_metrics(), "up": {"job", "namespace", "pod"}}
    exported = {"mlops_requests_total", "mlops_errors_total", "mlops_request_seconds_bucket"}
    exported |= {"mlops_drift_share", "mlops_model_age_seconds", "mlops_live_score_change"}
    exported |= {"mlops_model_stale_without_new_data"}
    assert exported <= set(metrics)
    for r in rules:
        name, expr = r["alert"], r["expr"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), name
        assert r["labels"]["severity"] in {"warning", "critical"}, name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
        for pair in ("()", "[]", "{}"):
            opened, closed_ = (expr.count(c) - expr.count("\\" + c) for c in pair)
            assert opened == closed_, f"{name}: unbalanced {pair}"
        used = set(re.findall(r"\b(mlops_\w+|up)(?=\s*[{\[)])", expr))
        assert used, name
        for metric in used:
            assert metric in metrics, f"{name}: {metric} is exported by nobody"
        labels = set().union(*(metrics[m] for m in used)) | {"le"}
        selectors = list(selectors_of(expr))
        assert len(selectors) == expr.count("{") - expr.count("\\{"), name
        for metric, matchers in selectors:
            assert matchers, f"{name}: {metric}{{}} matches nothing"
            for label, _, _ in matchers:
                assert label in metrics[metric], f"{name}: {metric} has no label {label!r}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in re.split(r"\s*,\s*", group.strip()):
                assert label in labels, f"{name}: grouping by {label!r}, which no metric has"
    by_name = {r["alert"]: r["expr"] for r in rules}
    # The thresholds are the platform's own numbers.
    assert "> 0.2" in by_name["MlopsPredictionLatencyP95High"] and 0.2 in LATENCY_BUCKETS
    assert "histogram_quantile(0.95" in by_name["MlopsPredictionLatencyP95High"]
    fields = DriftConfig.model_fields
    assert f">= {fields['warn_share'].default}" in by_name["MlopsDataDriftWarning"]
    assert f">= {fields['error_share'].default}" in by_name["MlopsDataDriftCritical"]
    hours = FreshnessSpec.model_fields["model_max_age_hours"].default
    assert "> 7 * 24 * 3600" in by_name["MlopsModelStale"] and hours == 7 * 24
    # The routes the latency and error rules select are the server's prediction routes.
    selecting = by_name["MlopsPredictionErrorRateHigh"] + by_name["MlopsPredictionLatencyP95High"]
    routes = re.findall(r'route=~"([^"]+)"', selecting)
    assert len(routes) == 3
    for route in routes:
        for alternative in route.replace("\\\\", "\\").split("|"):
            plain = alternative.replace("\\{", "{").replace("\\}", "}")
            assert plain in {"/predict", "/v2/models/{name}/infer"}, plain
    # up{job="mlops-inference"}: the scrape config names the job after the pod's app label.
    job = re.search(r'up\{job="([^"]+)"\}', by_name["MlopsInferenceDown"])[1]
    d = by_kind(objs, "Deployment")["mlops-inference"]
    assert pod_labels(d)["app.kubernetes.io/name"] == job


def test_scrape_config_keeps_our_annotated_pods_and_names_the_job():
    objs = render(OVERLAYS["prod"])
    (text,) = by_kind(objs, "ConfigMap")["prometheus-mlops-scrape"]["data"].values()
    (job,) = yaml.safe_load(text)["scrape_configs"]
    relabel = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    labels = by_kind(objs, "Deployment")["mlops-inference"]["spec"]["template"]["metadata"]
    keep = relabel[("__meta_kubernetes_pod_label_app_kubernetes_io_part_of",)]
    assert keep["action"] == "keep"
    assert re.fullmatch(keep["regex"], labels["labels"]["app.kubernetes.io/part-of"])
    scrape = relabel[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert re.fullmatch(scrape["regex"], labels["annotations"]["prometheus.io/scrape"])
    address = relabel[("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port")]
    m = re.fullmatch(
        address["regex"], "10.1.2.3:9999;" + labels["annotations"]["prometheus.io/port"]
    )
    assert m and m.expand(address["replacement"].replace("$", "\\")) == "10.1.2.3:8080"
    assert relabel[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]["target_label"] == "job"


# --- the Dagster Helm chart -------------------------------------------------------------------

K8S_DEFS = "https://kubernetes.io/api/_definitions.json"


@functools.cache
def k8s_registry() -> referencing.Registry:
    """The Kubernetes definitions kubernetes-validate ships, for schemas that reference them."""
    folder = f"v{K8S_VERSION}.0-local-strict"
    ref = importlib.resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", folder, "_definitions.json"
    )
    defs = json.loads(ref.read_text())
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


def k8s(name: str) -> dict:
    return {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.api.core.v1.{name}"}


def closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def validate(instance, schema) -> None:
    jsonschema.Draft202012Validator(schema, registry=k8s_registry()).validate(instance)


# The part of the Dagster chart's values schema that our values use (helm/dagster/schema in
# dagster-io/dagster, pydantic models; the names and types are theirs). Closed sections refuse
# unknown keys also where the chart would silently ignore one, so that a misspelt key fails
# here: add a key when the values start using it. Objects the chart passes on to Kubernetes are
# checked against the Kubernetes definitions.
IMAGE = closed(
    {"repository": {"type": "string"}, "tag": {"type": ["string", "integer"]},
     "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}},
    ("repository", "pullPolicy"),
)  # fmt: skip
NAMED = {"type": "array", "items": closed({"name": {"type": "string"}}, ("name",))}
TICKS = ("skipped", "success", "failure", "started")
TAG_LIMIT = closed(
    {"key": {"type": "string"}, "limit": {"type": "integer"},
     "value": {"anyOf": [{"type": "string"},
                         closed({"applyLimitPerUniqueValue": {"type": "boolean"}})]}},
    ("key", "limit"),
)  # fmt: skip
HELM_SCHEMA = {
    "type": "object",
    "properties": {
        "dagsterWebserver": {
            "type": "object",
            "properties": {
                "image": IMAGE,
                "resources": k8s("ResourceRequirements"),
                "workspace": closed(
                    {"enabled": {"type": "boolean"},
                     "servers": {"type": "array", "items": closed(
                         {"host": {"type": "string"}, "port": {"type": "integer"},
                          "name": {"type": "string"}, "ssl": {"type": "boolean"}},
                         ("host", "port"))},
                     "externalConfigmap": {"type": ["string", "null"]}},
                    ("enabled", "servers"),
                ),
            },
        },
        "dagster-user-deployments": closed(
            {"enabled": {"type": "boolean"}, "enableSubchart": {"type": "boolean"},
             "imagePullSecrets": NAMED,
             "deployments": {"type": "array", "items": closed(
                 {"name": {"type": "string"}, "image": IMAGE, "port": {"type": "integer"},
                  "codeServerArgs": {"type": "array", "items": {"type": "string"}},
                  "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
                  "env": {"type": "object", "additionalProperties": {"type": "string"}},
                  "envConfigMaps": NAMED, "envSecrets": NAMED,
                  "includeConfigInLaunchedRuns": closed({"enabled": {"type": "boolean"}}),
                  "resources": k8s("ResourceRequirements")},
                 ("name", "image", "port"))}},
        ),
        "postgresql": closed(
            {"enabled": {"type": "boolean"}, "postgresqlHost": {"type": "string"},
             "postgresqlUsername": {"type": "string"}, "postgresqlDatabase": {"type": "string"},
             "postgresqlScheme": {"type": "string"}, "postgresqlParams": {"type": "object"},
             "service": closed({"port": {"type": "integer"}}, ("port",))},
        ),
        "generatePostgresqlPasswordSecret": {"type": "boolean"},
        "global": {"type": "object", "properties": {
            "postgresqlSecretName": {"type": "string"}, "dagsterHome": {"type": "string"}}},
        "serviceAccount": closed(
            {"create": {"type": "boolean"}, "name": {"type": "string"},
             "annotations": {"type": "object"}},
        ),
        "runLauncher": closed(
            {"type": {"const": "K8sRunLauncher"},
             "config": closed({"k8sRunLauncher": closed(
                 {"image": IMAGE, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                  "jobNamespace": {"type": ["string", "null"]},
                  "loadInclusterConfig": {"type": "boolean"},
                  "kubeconfigFile": {"type": ["string", "null"]},
                  "envConfigMaps": NAMED, "envSecrets": NAMED,
                  "envVars": {"type": "array", "items": {"type": "string"}},
                  "volumeMounts": {"type": "array", "items": k8s("VolumeMount")},
                  "volumes": {"type": "array", "items": k8s("Volume")},
                  "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                  "failPodOnRunFailure": {"type": "boolean"},
                  "resources": k8s("ResourceRequirements"),
                  "schedulerName": {"type": "string"},
                  "securityContext": k8s("SecurityContext"),
                  "runK8sConfig": closed(
                      {"containerConfig": k8s("Container"), "podSpecConfig": {"type": "object"},
                       "podTemplateSpecMetadata": {"type": "object"},
                       "jobSpecConfig": {"type": "object"}, "jobMetadata": {"type": "object"}})},
                 ("imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets",
                  "envVars", "volumeMounts", "volumes"))})},
            ("type", "config"),
        ),
        "dagsterDaemon": {
            "type": "object",
            "properties": {
                "image": IMAGE,
                "resources": k8s("ResourceRequirements"),
                "runCoordinator": closed(
                    {"enabled": {"type": "boolean"}, "type": {"const": "QueuedRunCoordinator"},
                     "config": closed({"queuedRunCoordinator": closed(
                         {"maxConcurrentRuns": {"type": "integer"},
                          "tagConcurrencyLimits": {"type": "array", "items": TAG_LIMIT},
                          "dequeueIntervalSeconds": {"type": "integer"},
                          "dequeueNumWorkers": {"type": "integer"},
                          "dequeueUseThreads": {"type": "boolean"}})})},
                    ("enabled", "type", "config"),
                ),
                # Free-form in the chart, which reads these keys and ignores any other: closed
                # here, so that a misspelt one is not silently dropped.
                "runMonitoring": closed({"enabled": {"type": "boolean"}, **{
                    k: {"type": "integer"} for k in (
                        "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts",
                        "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds")}}),
                "runRetries": closed(
                    {"enabled": {"type": "boolean"}, "maxRetries": {"type": "integer"},
                     "retryOnAssetOrOpFailure": {"type": "boolean"}}, ("enabled",)),
                "sensors": closed(
                    {"useThreads": {"type": "boolean"}, "numWorkers": {"type": "integer"},
                     "numSubmitWorkers": {"type": "integer"}}, ("useThreads",)),
            },
        },
        "concurrency": closed({"enabled": {"type": "boolean"}, "pools": closed(
            {"defaultLimit": {"type": "integer"}, "granularity": {"type": "string"},
             "opGranularityRunBuffer": {"type": "integer"}})}),
        "telemetry": closed({"enabled": {"type": "boolean"}}, ("enabled",)),
        "retention": closed(
            {"enabled": {"type": "boolean"}, **{k: closed({"purgeAfterDays": {"anyOf": [
                {"type": "integer"},
                closed({t: {"type": "integer"} for t in TICKS}, TICKS)]}}, ("purgeAfterDays",))
                for k in ("sensor", "schedule", "autoMaterialize")}},
            ("enabled",),
        ),
    },
}  # fmt: skip


def snake(obj):
    """camelCase keys to snake_case, as dagster-k8s reads Kubernetes objects either way."""
    if isinstance(obj, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): snake(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snake(v) for v in obj]
    return obj


def test_helm_values_fit_the_dagster_chart_and_name_our_code_server():
    values = yaml.safe_load(HELM_VALUES.read_text())
    validate(values, HELM_SCHEMA)
    # The check can fail: a misspelt key of a closed section, a Kubernetes object gone wrong.
    for path, bad in (
        (("dagsterDaemon", "runRetries"), {"enabled": True, "maxRetry": 2}),
        (("runLauncher", "config", "k8sRunLauncher", "volumes"), [{"name": "x", "emptyDirs": {}}]),
    ):
        broken = copy.deepcopy(values)
        functools.reduce(dict.__getitem__, path[:-1], broken)[path[-1]] = bad
        with pytest.raises(jsonschema.ValidationError):
            validate(broken, HELM_SCHEMA)

    prod = render(OVERLAYS["prod"])
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enableSubchart"] is False  # k8s/base runs it
    assert deployment["image"]["repository"] == OUR_IMAGE
    assert deployment["port"] == 4000
    assert deployment["codeServerArgs"] == ["-m", "mlops_assets.definitions"]
    assert default_command()[-2:] == deployment["codeServerArgs"]
    assert "4000" in default_command()
    # The webserver's workspace is the code server's Service, under the location name the
    # embedded workspace.yaml uses.
    (server,) = values["dagsterWebserver"]["workspace"]["servers"]
    service = by_kind(prod, "Service")[server["host"]]
    assert server["port"] == 4000
    assert server["port"] in {p["port"] for p in service["spec"]["ports"]}
    assert server["host"] == deployment["name"]
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert server["name"] == workspace["load_from"][0]["python_module"]["location_name"]
    # Webserver and daemon at the Dagster version of the lock.
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"]["tag"] == lock_version("dagster"), part


def test_helm_values_agree_with_the_production_instance_and_the_overlay():
    values = yaml.safe_load(HELM_VALUES.read_text())
    instance = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    launcher = instance["run_launcher"]["config"]
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert [m["name"] for m in chart["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in chart["envSecrets"]] == launcher["env_secrets"]
    for ours_, theirs in (
        ("volumes", "volumes"),
        ("volumeMounts", "volume_mounts"),
        ("resources", "resources"),
        ("securityContext", "security_context"),
        ("labels", "labels"),
    ):
        assert snake(chart[ours_]) == snake(launcher[theirs]), ours_
    assert chart["runK8sConfig"]["podSpecConfig"] == launcher["run_k8s_config"]["pod_spec_config"]
    assert chart["failPodOnRunFailure"] == launcher["fail_pod_on_run_failure"]
    assert chart["imagePullPolicy"] == launcher["image_pull_policy"]
    # No jobNamespace: the release's namespace, which is prod's, which the instance names.
    assert chart.get("jobNamespace") in (None, launcher["job_namespace"])
    assert values["serviceAccount"]["name"] == launcher["service_account_name"]
    assert values["global"]["postgresqlSecretName"] == launcher["postgres_password_secret"]
    assert values["global"]["dagsterHome"] == launcher["dagster_home"]
    assert launcher["dagster_home"] == dockerfile_env()["DAGSTER_HOME"]
    # The queue, run monitoring and retries.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    runs = instance["concurrency"]["runs"]
    assert queued["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert snake(queued["tagConcurrencyLimits"]) == snake(runs["tag_concurrency_limits"])
    pools = instance["concurrency"]["pools"]
    assert values["concurrency"]["pools"]["defaultLimit"] == pools["default_limit"]
    assert snake(values["dagsterDaemon"]["runMonitoring"]) == instance["run_monitoring"]
    assert snake(values["dagsterDaemon"]["runRetries"]) == instance["run_retries"]
    # Dagster's Postgres is the one the code server's instance reads from mlops-env.
    env = data_of(by_kind(render(OVERLAYS["prod"]), "ConfigMap")["mlops-env"])
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert (pg["postgresqlHost"], pg["postgresqlUsername"], pg["postgresqlDatabase"]) == (
        env["DAGSTER_PG_HOST"], env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_DB"]
    )  # fmt: skip
    assert str(pg["service"]["port"]) == env["DAGSTER_PG_PORT"]
    assert pg["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert "postgresql-password" in required_secrets()[values["global"]["postgresqlSecretName"]]
    # The claim run pods mount is the overlay's.
    (volume,) = chart["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] in by_kind(
        render(OVERLAYS["prod"]), "PersistentVolumeClaim"
    )


# --- KServe -----------------------------------------------------------------------------------


def kserve_schema() -> dict:
    """serving.kserve.io/v1beta1 InferenceService as its Go types define it (PredictorSpec: a
    PodSpec inline, ComponentExtensionSpec inline, one key per built-in runtime), with the
    Kubernetes definitions for every embedded Kubernetes type."""
    defs = k8s_registry().contents(K8S_DEFS)["$defs"]
    pod = defs["io.k8s.api.core.v1.PodSpec"]["properties"]
    extension = {
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "scaleTarget": {"type": "integer"},
        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
        "containerConcurrency": {"type": "integer", "minimum": 0},
        "timeout": {"type": "integer"},
        "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
        "logger": {"type": "object"},
        "batcher": {"type": "object"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "deploymentStrategy": {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.api.apps.v1.DeploymentStrategy"},
    }
    runtimes = {k: {"type": "object"} for k in (
        "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml",
        "lightgbm", "paddle", "model", "storageUris", "workerSpec")}  # fmt: skip
    # KServe's webhook refuses a PROTOCOL other than v1 or v2 for a custom predictor.
    protocol = {
        "items": {
            "if": {"properties": {"name": {"const": "PROTOCOL"}}},
            "then": {"properties": {"value": {"enum": ["v1", "v2"]}}},
        }
    }
    container = {"allOf": [k8s("Container"), {"properties": {"env": protocol}}]}
    predictor = closed(
        {**{k: {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.api.core.v1.PodSpec/properties/{k}"}
            for k in pod},
         **extension, **runtimes,
         "containers": {"type": "array", "minItems": 1, "items": container}},
    )  # fmt: skip
    return closed(
        {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": {
                "allOf": [
                    {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                    # KServe's name rule (a DNS label that starts with a letter).
                    {"properties": {"name": {"pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"}}},
                ]
            },
            "spec": closed(
                {
                    "predictor": predictor,
                    "transformer": {"type": "object"},
                    "explainer": {"type": "object"},
                },
                ("predictor",),
            ),
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


def test_kserve_inference_service_fits_its_crd_and_serves_like_the_deployment():
    (isvc,) = render(KSERVE)
    validate(isvc, kserve_schema())
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["minReplica"] = 1  # a typo: not a field of the CRD
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, kserve_schema())
    broken = copy.deepcopy(isvc)
    (protocol,) = [
        e for e in broken["spec"]["predictor"]["containers"][0]["env"] if e["name"] == "PROTOCOL"
    ]
    protocol["value"] = "v3"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, kserve_schema())

    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container"  # how KServe finds a custom predictor
    env = {e["name"]: e for e in c["env"]}
    assert env["PROTOCOL"]["value"] == "v2"
    assert isvc["metadata"]["namespace"] == PROD_NAMESPACE
    assert ours(c) and "command" not in c
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    # The same server as the prod Deployment: program, probes, settings, security, scraping.
    prod = render(OVERLAYS["prod"])
    d = by_kind(prod, "Deployment")["mlops-inference"]
    served = pod_spec(d)["containers"][0]
    assert c["args"] == served["args"]
    assert {p["containerPort"] for p in c["ports"]} == {p["containerPort"] for p in served["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == served[probe]["httpGet"]["path"], probe
    assert c["envFrom"] == served["envFrom"]
    assert [e for e in c["env"] if e["name"] != "PROTOCOL"] == served["env"]
    assert c["securityContext"] == served["securityContext"]
    assert c["resources"] == served["resources"]
    assert predictor["securityContext"] == pod_spec(d)["securityContext"]
    assert predictor["serviceAccountName"] in by_kind(prod, "ServiceAccount")
    assert predictor["annotations"] == d["spec"]["template"]["metadata"]["annotations"]
    hpa = by_kind(prod, "HorizontalPodAutoscaler")["mlops-inference"]["spec"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        hpa["minReplicas"], hpa["maxReplicas"]
    )  # fmt: skip


# --- the README -------------------------------------------------------------------------------


def test_readme_says_how_to_render_apply_install_and_switch():
    readme = (K8S / "README.md").read_text()
    for text in (
        "kubectl kustomize k8s/overlays/prod",
        "kubectl apply -k k8s/overlays/prod",
        "kustomize edit set image mlops-assets=",
        "helm upgrade --install dagster dagster/dagster",
        f"--version {lock_version('dagster')}",
        "k8s/helm/dagster-values.yaml",
        "kubectl apply -k k8s/kserve",
        "promtool check rules",
    ):
        assert text in readme, text
    # Every file it names exists.
    for path in re.findall(r"`(k8s/[\w./-]+)`", readme):
        assert (REPO / path).exists(), path
