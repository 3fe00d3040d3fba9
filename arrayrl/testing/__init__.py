"""Public test helpers: assertions (and Hypothesis strategies for RL data in :mod:`arrayrl.testing.strategies`)."""

from ._assert import assert_allclose, default_tolerance

__all__ = ["assert_allclose", "default_tolerance"]
