"""Which Dagster instance configuration ($DAGSTER_HOME/dagster.yaml) this environment runs on.

| MLOPS_ENV             | file                                       | storage, runs          |
|-----------------------|--------------------------------------------|------------------------|
| unset or ``embedded`` | ``dagster.yaml``                           | SQLite, this machine   |
| ``production``        | ``deploy/dagster/dagster.production.yaml`` | Postgres, a K8s Job per run |

The files are selected, never edited. Plain code: no Dagster import, nothing done at import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mlops_assets import settings
from mlops_assets.settings import EMBEDDED, PRODUCTION

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = {
    EMBEDDED: REPO / "dagster.yaml",
    PRODUCTION: REPO / "deploy" / "dagster" / "dagster.production.yaml",
}
# What the production file reads from the environment (the storage section).
PRODUCTION_ENV = settings.PRODUCTION_INSTANCE_VARS


def instance_env(env: str | None = None) -> str:
    """The environment name: ``env`` if given, else MLOPS_ENV; unset or empty is embedded."""
    return settings.environment_name(env)


def instance_config_file(env: str | None = None) -> Path:
    """The dagster.yaml for ``env`` (default: MLOPS_ENV)."""
    path = CONFIG_FILES[instance_env(env)]
    if not path.is_file():
        raise FileNotFoundError(
            f"Dagster instance config {path} is missing: it ships with the repository "
            "(a container image needs `COPY deploy ./deploy` beside `COPY dagster.yaml`)"
        )
    return path


def missing_env(env: str | None = None) -> list[str]:
    """Environment variables the instance config of ``env`` reads and that are not set."""
    if instance_env(env) != PRODUCTION:
        return []
    return settings.unset(PRODUCTION_ENV)


def install_instance_config(
    env: str | None = None, dagster_home: str | Path | None = None, require_env: bool = True
) -> Path:
    """Write the instance config of ``env`` to ``dagster_home``/dagster.yaml and return its path.

    Args:
        env: ``"embedded"`` or ``"production"``; default MLOPS_ENV (unset: embedded).
        dagster_home: default DAGSTER_HOME.
        require_env: refuse to install the production config while the variables it reads are
            unset (an instance that cannot load is found now, not at the first run); False to
            prepare a DAGSTER_HOME before the secrets exist, e.g. in an image build.
    """
    source = instance_config_file(env)
    if dagster_home is None:
        dagster_home = settings.Settings.from_env().dagster_home
        if dagster_home is None:
            raise ValueError("DAGSTER_HOME is not set: set it to the Dagster instance directory")
    if require_env and (missing := missing_env(env)):
        raise ValueError(
            f"MLOPS_ENV={instance_env(env)} reads {', '.join(missing)} for its Postgres storage: "
            "set them (on Kubernetes: the mlops-env ConfigMap and the dagster-postgresql-secret)"
        )
    home = Path(dagster_home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    # Written aside and renamed: a Dagster process reading the file never sees half of it.
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".dagster.yaml.")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
