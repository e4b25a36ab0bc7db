"""The delivery pipeline (.github/workflows/mlops.yml) without GitHub: its jobs and their order,
its triggers, pinned actions, that every path a step runs exists here, and its shell steps run
for real with stand-ins for kubectl."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops_assets_tests.processes import BIN, REPO
from mlops_assets_tests.test_e2e.test_container import instruction

WORKFLOW = REPO / ".github" / "workflows" / "mlops.yml"
PROD = "k8s/overlays/prod"
# What the other parts of issue 6 add (the manifests and their test): checked once they exist.
MANIFESTS = ("k8s/", "mlops_assets_tests/test_deploy/test_manifests.py")
PATH_RE = re.compile(r"(?<![\w./-])((?:scripts|k8s|mlops_assets_tests|deploy|\.ci)/[\w./-]*\w)")


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def jobs() -> dict[str, dict]:
    return workflow()["jobs"]


def needs(job: str) -> set[str]:
    value = jobs()[job].get("needs", [])
    return {value} if isinstance(value, str) else set(value)


def steps(job: str) -> list[dict]:
    return jobs()[job]["steps"]


def runs(job: str) -> list[str]:
    return [s["run"] for s in steps(job) if "run" in s]


def step(job: str, text: str) -> dict:
    (found,) = [s for s in steps(job) if text in s.get("run", "")]
    return found


def test_jobs_and_their_order():
    assert set(jobs()) == {"lint-test", "validate-manifests", "build", "deploy"}
    assert needs("build") == {"lint-test"}
    assert needs("deploy") >= {"build", "validate-manifests"}
    assert not needs("lint-test") and not needs("validate-manifests")
    deploy = jobs()["deploy"]
    environment = deploy["environment"]
    assert (environment if isinstance(environment, str) else environment["name"]) == "production"
    condition = deploy["if"].replace(" ", "")
    assert "github.event_name=='push'" in condition and "github.ref=='refs/heads/main'" in condition
    for job in jobs().values():
        assert job.get("timeout-minutes"), "a hung job would hold a runner for 6 hours"


def test_triggers_are_pushes_to_main_and_pull_requests():
    on = workflow().get("on", workflow().get(True))  # YAML 1.1 reads a bare `on` as true
    assert "main" in on["push"]["branches"]
    assert "pull_request" in on


def test_actions_are_pinned_to_a_version():
    used = [s["uses"] for job in jobs() for s in steps(job) if "uses" in s]
    assert used
    for ref in used:
        name, _, version = ref.partition("@")
        assert re.fullmatch(r"v\d+(\.\d+){0,2}|[0-9a-f]{40}", version), f"{ref} is not pinned"
        assert name.count("/") >= 1, ref
    assert "actions/checkout@v4" in used
    assert any(u.startswith("docker/build-push-action@") for u in used)


def test_python_is_the_version_of_the_image_and_the_project():
    base_minor = re.match(r"python:(3\.\d+)\.", instruction("FROM")).group(1)
    for job in ("lint-test", "validate-manifests"):
        (setup,) = [s for s in steps(job) if s.get("uses", "").startswith("actions/setup-python@")]
        assert str(setup["with"]["python-version"]) == base_minor


def test_no_expression_is_pasted_into_a_shell_script():
    # ${{ }} in `run:` is expanded before bash sees it: a branch name could become code.
    for job in jobs():
        for script in runs(job):
            assert "${{" not in script, f"{job}: pass expressions through env: instead\n{script}"


def _paths(job: str) -> list[str]:
    found = [p for script in runs(job) for p in PATH_RE.findall(script)]
    found += [s["working-directory"] for s in steps(job) if "working-directory" in s]
    return found


def test_every_path_a_step_runs_exists():
    checked = []
    for job in jobs():
        for path in _paths(job):
            if path.startswith(MANIFESTS):
                continue
            assert (REPO / path).exists(), f"{job} runs {path}, which is not in the repository"
            if path.startswith("scripts/") and path.endswith(".sh"):
                assert os.access(REPO / path, os.X_OK), f"{path} is not executable"
            checked.append(path)
        # .venv/bin/... exists only after scripts/setup.sh (or test.sh) ran earlier in the job.
        for i, script in enumerate(runs(job)):
            for binary in re.findall(r"\.venv/bin/([\w-]+)", script):
                assert (BIN / binary).exists(), f"{job}: .venv/bin/{binary} is not installed"
                earlier = " ".join(runs(job)[:i])
                assert re.search(r"scripts/(setup|test)\.sh", earlier), f"{job}: no .venv yet"
    assert "scripts/test.sh" in checked
    # CI here and on GitHub run the same command.
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    assert runs("lint-test") == ["scripts/test.sh"]


def test_manifest_paths_exist():
    paths = {p for job in jobs() for p in _paths(job) if p.startswith(MANIFESTS)}
    assert {PROD, "k8s/overlays/dev", MANIFESTS[1]} <= paths
    if not (REPO / "k8s").exists():
        pytest.skip("k8s/ is not in the repository yet (another part of issue 6)")
    for path in sorted(paths - {MANIFESTS[1]}):
        assert (REPO / path).exists(), f"the workflow runs {path}, which is not in the repository"
    # `kustomize edit set image mlops-assets=…` only rewrites an image the manifests call so.
    kustomization = yaml.safe_load((REPO / PROD / "kustomization.yaml").read_text())
    assert "mlops-assets" in {i["name"] for i in kustomization.get("images", [])}
    manifests = [yaml.safe_load_all(p.read_text()) for p in (REPO / "k8s" / "base").rglob("*.yaml")]
    images = {
        c["image"]
        for docs in manifests
        for doc in docs
        if doc and doc.get("kind") == "Deployment"
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    assert "mlops-assets" in images, f"no Deployment runs the image mlops-assets: {images}"
    if not (REPO / MANIFESTS[1]).exists():
        pytest.skip(f"{MANIFESTS[1]} is not in the repository yet (another part of issue 6)")


def test_build_pushes_the_commit_image_on_main_only():
    build = jobs()["build"]
    assert build["permissions"].get("packages") == "write"
    assert workflow()["permissions"] == {"contents": "read"}
    (push,) = [
        s for s in steps("build") if s.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert push["uses"].endswith("@v6")
    options = push["with"]
    push_if = options["push"].replace(" ", "")
    assert "github.ref=='refs/heads/main'" in push_if and "github.event_name=='push'" in push_if
    assert options["tags"] == "${{ steps.image.outputs.ref }}"
    assert "VCS_REF=${{ github.sha }}" in options["build-args"]
    assert re.search(r"^ARG VCS_REF\b", (REPO / "Dockerfile").read_text(), re.M)
    assert workflow()["env"]["IMAGE"] == "ghcr.io/${{ github.repository }}"
    assert build["outputs"]["image"] == "${{ steps.image.outputs.ref }}"


def _bash(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """A `run:` step as GitHub runs it (bash -e -o pipefail), kubectl and kustomize faked."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=REPO,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RUNNER_TEMP": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_image_reference_is_the_lowercase_repository_at_the_commit(tmp_path):
    image = next(s for s in steps("build") if s.get("id") == "image")
    out = tmp_path / "output"
    owner_env = {"IMAGE": "ghcr.io/Some-Org/MLOps", "GITHUB_SHA": "0123abc"}
    done = _bash(image["run"], tmp_path, GITHUB_OUTPUT=str(out), **owner_env)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "ref=ghcr.io/some-org/mlops:0123abc\n"


def _fake(tmp_path: Path, name: str, script: str) -> Path:
    (tmp_path / "bin").mkdir(exist_ok=True)
    path = tmp_path / "bin" / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls\n{script}')
    path.chmod(0o755)
    return path


def test_deploy_pins_applies_then_waits_for_every_deployment(tmp_path):
    pin = next(s for s in steps("deploy") if "kustomize edit set image" in s.get("run", ""))
    assert pin["working-directory"] == PROD
    assert pin["env"]["IMAGE_REF"] == "${{ needs.build.outputs.image }}"
    order = [s.get("run", "") for s in steps("deploy")]
    apply = next(i for i, r in enumerate(order) if "kubectl apply -k " + PROD in r)
    wait = next(i for i, r in enumerate(order) if "rollout status" in r)
    assert order.index(pin["run"]) < apply < wait
    # Run the pin, the apply and the wait with stand-ins, as the runner would.
    _fake(tmp_path, "kustomize", "exit 0\n")
    _fake(
        tmp_path,
        "kubectl",
        'case "$1" in get) printf "mlops webserver\\nmlops inference\\n" ;; esac\n'
        'case "$*" in *inference*) exit "${FAIL_INFERENCE:-0}" ;; esac\n',
    )
    done = _bash(pin["run"], tmp_path, IMAGE_REF="ghcr.io/o/r:abc")
    assert done.returncode == 0, done.stderr
    assert (
        "kustomize edit set image mlops-assets=ghcr.io/o/r:abc" in (tmp_path / "calls").read_text()
    )
    for i in (apply, wait):
        done = _bash(order[i], tmp_path)
        assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text()
    assert f"kubectl apply -k {PROD}" in calls
    assert "kubectl -n mlops rollout status deployment/webserver --timeout=10m" in calls
    assert "kubectl -n mlops rollout status deployment/inference --timeout=10m" in calls
    # A rollout that does not finish fails the job, and the rollback step undoes every one.
    done = _bash(order[wait], tmp_path, FAIL_INFERENCE="1")
    assert done.returncode != 0
    rollback = next(s for s in steps("deploy") if "rollout undo" in s.get("run", ""))
    assert rollback["if"] == "failure()"
    done = _bash(rollback["run"], tmp_path, FAIL_INFERENCE="1")
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text()
    assert "kubectl -n mlops rollout undo deployment/webserver" in calls
    assert "kubectl -n mlops rollout undo deployment/inference" in calls


def test_validate_manifests_runs_the_manifest_tests_and_kustomize():
    scripts = " ".join(runs("validate-manifests"))
    assert "pytest mlops_assets_tests/test_deploy/test_manifests.py" in scripts
    assert "k8s/overlays/dev" in scripts and PROD in scripts
    assert "kubectl kustomize" in scripts
