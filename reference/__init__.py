"""Independent, slow, float64 NumPy reference for arrayrl (the oracle of the property tests).

Written from the papers and TorchRL 0.14.1's documented semantics as plain loops with ``if`` statements.
It depends only on ``numpy`` and ``math`` and never imports ``arrayrl`` (checked by
``tests/reference/test_independence.py``).

Modules: :mod:`reference.value` (TD(0), TD(1), TD(lambda), GAE, V-trace, reward-to-go),
:mod:`reference.distributions`, :mod:`reference.losses` (DQN, C51, QMixer/VDN, IQL),
:mod:`reference.gradcheck` (central finite differences).
"""

from . import distributions, gradcheck, losses, value

__all__ = ["distributions", "gradcheck", "losses", "value"]
