"""On Kubernetes, how the deployment job finds every inference replica (or Prometheus), read
from the rendered overlays, and that the settings take what the manifests give them."""

import pytest

from mlops_assets.serving.analysis import replica_urls
from mlops_assets.settings import Settings
from mlops_assets_tests.test_deploy.test_manifests import (
    OVERLAYS,
    by_kind,
    data_of,
    matches,
    pod_labels,
    render,
)


def env_config(objs) -> dict[str, str]:
    (config,) = [
        o for o in by_kind(objs, "ConfigMap").values() if o["metadata"]["name"] == "mlops-env"
    ]
    return data_of(config)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_replicas_setting_names_a_headless_service_of_every_inference_pod(overlay):
    objs = render(OVERLAYS[overlay])
    settings = Settings.from_env(env_config(objs))
    (entry,) = settings.serving_replicas
    assert entry.startswith("dns+http://"), entry
    host, port = entry.removeprefix("dns+http://").split(":")
    svc = by_kind(objs, "Service")[host]
    # headless: the name resolves to each ready pod, not to one virtual IP
    assert svc["spec"]["clusterIP"] == "None"
    assert matches(
        svc["spec"]["selector"], pod_labels(by_kind(objs, "Deployment")["mlops-inference"])
    )
    assert int(port) in [p["port"] for p in svc["spec"]["ports"]]
    assert settings.rollout_lease_seconds == 60.0


def test_prod_judges_rollouts_on_prometheus_and_dev_on_the_replicas():
    prod = Settings.from_env(env_config(render(OVERLAYS["prod"])))
    dev = Settings.from_env(env_config(render(OVERLAYS["dev"])))
    assert prod.prometheus_url.startswith("http://")
    assert prod.prometheus_selector == 'job="mlops-inference"'  # the scrape config's job
    assert dev.prometheus_url == ""


def test_a_dns_entry_becomes_one_url_per_address():
    urls = replica_urls(["dns+http://localhost:8080", "http://10.0.0.7:8080/"])
    assert "http://127.0.0.1:8080" in urls and urls[-1] == "http://10.0.0.7:8080"
