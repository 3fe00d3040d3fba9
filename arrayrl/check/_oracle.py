"""Where ``arrayrl check`` finds the independent float64 oracle (``reference/``), and what it does without it.

The oracle lives beside ``arrayrl/`` in a source checkout and is *not* part of the installed distribution (a
top-level package named ``reference`` would collide with anything). So:

* from a source checkout (editable install, or ``python -m arrayrl`` in the repository) the oracle is found next to
  the ``arrayrl`` package, recognised by the ``pyproject.toml`` beside it;
* ``arrayrl check --reference DIR`` (or :func:`use`) points at an oracle directory explicitly, e.g. a checkout of
  the repository next to an installed wheel;
* otherwise the comparison with the oracle is *skipped*: the components still run against TorchRL and finite
  differences, their "vs reference" column is empty and the report says why (:func:`status`).

The oracle never imports arrayrl and only imports itself relatively, so it is loaded from its directory under a
private module name (:data:`MODULE_NAME`) unless the very same directory is already imported as ``reference``
(pytest's ``pythonpath = ["."]``); an unrelated module called ``reference`` is never used nor replaced.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

__all__ = ["MODULE_NAME", "Oracle", "default_directory", "use", "load", "status", "submodule"]

#: the module name the oracle is loaded under when it is not already imported as ``reference``
MODULE_NAME = "_arrayrl_reference_oracle"


class Oracle:
    """The outcome of looking for the oracle: ``module`` (or None) and ``reason`` (why it is absent, else None)."""

    def __init__(self, module: ModuleType | None, directory: pathlib.Path | None, reason: str | None) -> None:
        self.module, self.directory, self.reason = module, directory, reason

    def describe(self) -> str:
        """One line for the report header."""
        return f"used ({self.directory})" if self.module is not None else f"skipped: {self.reason}"


_chosen: pathlib.Path | None = None
_cache: Oracle | None = None


def default_directory() -> pathlib.Path | None:
    """``reference/`` beside the ``arrayrl`` package when that is a source checkout (a ``pyproject.toml`` beside
    it), else None (an installed wheel: ``site-packages`` has no such file)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    candidate = root / "reference"
    if (root / "pyproject.toml").is_file() and (candidate / "__init__.py").is_file():
        return candidate
    return None


def use(directory: str | pathlib.Path | None) -> Oracle:
    """Use the oracle in ``directory`` (None: back to :func:`default_directory`); returns the new :func:`load`.

    Raises ValueError when ``directory`` is not an oracle directory (no ``__init__.py`` in it)."""
    global _chosen, _cache
    if directory is not None:
        path = pathlib.Path(directory).expanduser().resolve()
        if not (path / "__init__.py").is_file():
            raise ValueError(f"reference: expected a directory holding the oracle package (with __init__.py), "
                             f"got {str(directory)!r}")
        _chosen = path
    else:
        _chosen = None
    _cache = None
    return load()


def _import_from(directory: pathlib.Path) -> ModuleType:
    """The oracle package in ``directory``: already imported as ``reference`` or :data:`MODULE_NAME`, else
    imported now under :data:`MODULE_NAME`."""
    for name in ("reference", MODULE_NAME):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if module is not None and file is not None and pathlib.Path(file).resolve().parent == directory:
            return module
    spec = importlib.util.spec_from_file_location(MODULE_NAME, directory / "__init__.py",
                                                  submodule_search_locations=[str(directory)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODULE_NAME]
        raise
    return module


def load() -> Oracle:
    """Find and import the oracle once (cached until :func:`use`)."""
    global _cache
    if _cache is not None:
        return _cache
    directory = _chosen if _chosen is not None else default_directory()
    if directory is None:
        _cache = Oracle(None, None, "the float64 oracle reference/ ships with the source checkout only "
                                    "(point at one with --reference DIR)")
        return _cache
    try:
        module = _import_from(directory)
    except Exception as err:  # noqa: BLE001 - reported in the header, the checks go on without it
        _cache = Oracle(None, directory, f"importing {directory} failed: {type(err).__name__}: {err}")
        return _cache
    missing = [m for m in ("value", "losses") if not hasattr(module, m)]
    if missing:
        _cache = Oracle(None, directory, f"{directory} is not arrayrl's oracle (no {', '.join(missing)})")
    else:
        _cache = Oracle(module, directory, None)
    return _cache


def status() -> str:
    """:meth:`Oracle.describe` of :func:`load`."""
    return load().describe()


def submodule(dotted: str) -> ModuleType | None:
    """The oracle's submodule ``dotted`` (e.g. ``"value"``, ``"losses.dqn"``), or None without the oracle."""
    oracle = load()
    if oracle.module is None:
        return None
    return importlib.import_module(f"{oracle.module.__name__}.{dotted}")
