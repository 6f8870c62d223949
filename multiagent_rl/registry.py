"""Finding scenarios: a registry of names (`register`), installed packages' entry points
(group `multiagent_rl.scenarios`) and scenario files (`path/file.py:NAME`, Python run when
loaded).

>>> load_scenario("debate", solvers=3)                          # doctest: +SKIP
>>> load_scenario("my_scenarios.py:make_duo", rounds=2)         # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .contain import describe_failure
from .errors import ScenarioError
from .scenario import Scenario

ENTRY_POINT_GROUP = "multiagent_rl.scenarios"
ScenarioFactory = Callable[..., Scenario]
_REGISTRY: dict[str, ScenarioFactory | Scenario] = {}


def register(name: str, factory: ScenarioFactory | Scenario | None = None):
    """Register a scenario factory (or instance) under `name`; usable as a decorator.

    >>> @register("duo")          # doctest: +SKIP
    ... def make_duo(**options): ...
    """

    def add(item: ScenarioFactory | Scenario):
        _REGISTRY[name] = item
        return item

    return add(factory) if factory is not None else add


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def list_scenarios() -> list[str]:
    """Names of registered and installed (entry-point) scenarios."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def load_scenario(spec: str, **options: Any) -> Scenario:
    """A scenario by registry name (`"debate"`) or from a file (`"path/file.py:NAME"`).

    NAME may be a Scenario or a factory called with `options`.
    """
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        return _load_from_file(spec, options)
    if spec in _REGISTRY:
        factory = _REGISTRY[spec]
    else:
        eps = _entry_points()
        if spec not in eps:
            known = ", ".join(list_scenarios()) or "(none)"
            raise ScenarioError(f"unknown scenario {spec!r}; known: {known}; or give path/file.py:NAME")
        factory = eps[spec].load()
    return _build(factory, options, spec)


def _load_from_file(spec: str, options: Mapping[str, Any]) -> Scenario:
    path_text, attr = spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise ScenarioError(f"scenario file {str(path)!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_mrl_scenario_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ScenarioError(f"cannot import {str(path)!r} as Python")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running, as a normal import would be (dataclasses look themselves up there).
    sys.modules[module_spec.name] = module
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:  # so the file can import the files beside it, as a script run from its folder can
        sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_spec.name, None)
        raise ScenarioError(f"scenario file {exc.filename}:{exc.lineno} has a syntax error: {exc.msg}") from exc
    except Exception as exc:
        sys.modules.pop(module_spec.name, None)
        raise ScenarioError(describe_failure(exc, f"importing scenario file {str(path)!r}")) from exc
    except BaseException:
        sys.modules.pop(module_spec.name, None)
        raise
    finally:
        if added:
            sys.path.remove(folder)
    if not hasattr(module, attr):
        raise ScenarioError(f"{str(path)!r} has no attribute {attr!r}")
    return _build(getattr(module, attr), options, spec)


def _build(item: Any, options: Mapping[str, Any], spec: str) -> Scenario:
    """The scenario `item` gives with `options`; every way that fails is a ScenarioError."""
    if isinstance(item, Scenario):
        if options:
            raise ScenarioError(f"scenario {spec!r} is a Scenario, not a factory: it takes no options, got {dict(options)}")
        return item
    if not callable(item):
        raise ScenarioError(f"{spec!r} is a {type(item).__name__}; expected a Scenario or a function returning one")
    try:
        scenario = item(**options)
    except ScenarioError:
        raise
    except (TypeError, ValueError) as exc:  # an unknown option name, or a value the factory refuses
        if options:
            raise ScenarioError(f"scenario {spec!r} rejected options {dict(options)}: {exc}") from exc
        raise ScenarioError(describe_failure(exc, f"building scenario {spec!r}")) from exc
    if not isinstance(scenario, Scenario):
        raise ScenarioError(f"{spec!r} gave {type(scenario).__name__}, expected a Scenario")
    return scenario
