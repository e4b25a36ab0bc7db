"""What makes a training run repeatable: its run hash and a canonical digest of the model.

The run hash is a digest of everything that decides the fitted model: the lakeFS commit of
the data, the training code version, the hyperparameters and the versions of the libraries
that do the numerical work. Same hash, same model: identical holdout predictions and an
identical model digest.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import platform
import re
import zipfile
from importlib import metadata
from pathlib import Path

# The libraries whose versions can change a fitted model or how it is stored.
LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "skops")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def source_digest(modules: tuple[str, ...]) -> str:
    """A short digest of the source files of ``modules``: the code that decides a model."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"cannot find the source of module {name!r}")
        digest.update(name.encode())
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:10]


def run_hash(data_commit: str, code_version: str, params: dict, libraries: dict[str, str]) -> str:
    """sha256 over the canonical JSON of the run's inputs; 64 hex characters."""
    payload = json.dumps(
        {
            "data_commit": data_commit,
            "code_version": code_version,
            "params": params,
            "libraries": libraries,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def model_digest(skops_bytes: bytes) -> str:
    """A digest of a skops file's content that ignores what skops does not keep stable.

    skops names each array file, and marks each shared object, with ``id()`` of the object (a
    memory address), and stamps the zip entries with the current time, so the raw bytes of two
    identical models differ. Here member names in the schema are replaced by the hashes of
    their content and object ids by their order of first appearance, and the result is hashed:
    equal digests mean an equal schema and equal array bytes.
    """
    with zipfile.ZipFile(io.BytesIO(skops_bytes)) as zf:
        contents = {name: zf.read(name) for name in zf.namelist()}
    schema = contents.pop("schema.json").decode()
    names = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    if names:
        pattern = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))
        schema = pattern.sub(lambda m: names[m.group(0)], schema)
    ids: dict[str, str] = {}
    schema = re.sub(
        r'"__id__": (\d+)',
        lambda m: f'"__id__": {ids.setdefault(m.group(1), str(len(ids)))}',
        schema,
    )
    digest = hashlib.sha256(schema.encode())
    for h in sorted(names.values()):
        digest.update(h.encode())
    return digest.hexdigest()
