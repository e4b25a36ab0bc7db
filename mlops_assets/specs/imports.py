"""Estimators and transformer factories named by import path in a spec.

A spec may name any scikit-learn-compatible estimator (``sklearn.ensemble.ExtraTreesClassifier``)
or transformer factory (``sklearn.preprocessing.RobustScaler``) by its import path. The module is
imported when the spec is validated (the definitions load), so an unknown class or parameter
fails there, naming the field, and never in the middle of a training run.

Nothing here imports scikit-learn at module level: only a spec that names a path pays for it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def is_import_path(text: str) -> bool:
    return bool(IMPORT_PATH.match(text))


def resolve(path: str, what: str) -> Any:
    """The object at ``module.attribute`` (``what`` names it in errors)."""
    if not is_import_path(path):
        raise ValueError(
            f"{what} {path!r} is not an import path: write it as module.Name, e.g. "
            "sklearn.ensemble.ExtraTreesClassifier"
        )
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"{what} {path!r}: module {module_name!r} cannot be imported ({e}): check the "
            "spelling, or install the package that provides it"
        ) from None
    if not hasattr(module, attr):
        raise ValueError(
            f"{what} {path!r}: module {module_name!r} has no {attr!r}: check the spelling "
            "(names are case-sensitive)"
        )
    return getattr(module, attr)


def estimator_class(path: str, what: str = "estimator") -> type:
    """The estimator class at ``path``: a class with ``fit``, ``predict`` and ``get_params``.

    Only a class is accepted, and it is inspected before anything is called: a path to a
    function (``os.system``) is refused without running it."""
    cls = resolve(path, what)
    if not inspect.isclass(cls):
        raise ValueError(
            f"{what} {path!r} is a {type(cls).__name__}, not a class: name a scikit-learn-"
            "compatible estimator class"
        )
    missing = [m for m in ("fit", "predict", "get_params", "set_params") if not hasattr(cls, m)]
    if missing:
        raise ValueError(
            f"{what} {path!r} lacks {', '.join(missing)}: it is not a scikit-learn-compatible "
            "estimator (see scikit-learn's 'Developing estimators')"
        )
    return cls


def check_params(cls: type, params: Mapping[str, Any], what: str) -> Any:
    """An instance of ``cls`` with ``params``, after checking each name against the class's
    ``get_params()``. ``what`` names the field in errors (e.g. ``model.params``)."""
    try:
        known = set(cls().get_params(deep=False))
    except Exception as e:  # a constructor with required arguments, or one that fails
        raise ValueError(
            f"{what}: {cls.__module__}.{cls.__qualname__}() cannot be built without arguments "
            f"({type(e).__name__}: {e}): a scikit-learn estimator takes every parameter as a "
            "keyword with a default"
        ) from None
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"{what}: {', '.join(map(repr, unknown))} not a parameter of "
            f"{cls.__module__}.{cls.__qualname__}; its parameters are {', '.join(sorted(known))}"
        )
    try:
        return cls(**params)
    except Exception as e:
        raise ValueError(
            f"{what}: {cls.__module__}.{cls.__qualname__}(**{dict(params)!r}) failed: "
            f"{type(e).__name__}: {e}"
        ) from None


def transformer_factory(path: str, what: str) -> Any:
    """A callable that returns a fresh transformer (a transformer class, or a function)."""
    factory = resolve(path, what)
    if not callable(factory):
        raise ValueError(f"{what} {path!r} is not callable: name a transformer class or factory")
    return factory


def build_transformer(path: str, what: str) -> Any:
    """A new transformer from the factory at ``path``, checked to have fit and transform."""
    made = transformer_factory(path, what)()
    missing = [m for m in ("fit", "transform") if not hasattr(made, m)]
    if missing:
        raise ValueError(
            f"{what} {path!r} returned a {type(made).__name__} without {', '.join(missing)}: "
            "name a transformer (fit/transform), e.g. sklearn.preprocessing.RobustScaler"
        )
    return made
