"""Public test helpers: assertions (and Hypothesis strategies for RL data in :mod:`arrayrl.testing.strategies`)."""

from typing import Any

from ._assert import assert_allclose, default_tolerance

__all__ = ["assert_allclose", "default_tolerance", "strategies"]


def __getattr__(name: str) -> Any:  # ``strategies`` needs Hypothesis: imported on first use only
    if name == "strategies":
        import importlib

        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
