"""Interoperability with torch, TensorDict, NumPy and CuPy.

* Arrays: :func:`to_torch`, :func:`from_torch`, :func:`convert` (DLPack where possible, zero-copy on the same
  device; NumPy as the fallback bridge for array-api-strict).
* Batches: :func:`from_tensordict` (TensorDict -> nested dict), :func:`to_tensordict` (nested dict -> TensorDict).
* Weights: :func:`params_from_torch` (any ``torch.nn.Module``: ``nn.Linear``, ``nn.Sequential``,
  ``torchrl.modules.MLP``... -> arrayrl parameter tree with the ``state_dict`` layout) and :func:`params_to_torch`.

This is the only package, with :mod:`arrayrl._backend`, that imports torch, and it does so lazily: importing
:mod:`arrayrl.interop` does not import torch.
"""

from .arrays import convert, from_torch, to_torch
from .tensordict import from_tensordict, params_from_torch, params_to_torch, to_tensordict

__all__ = ["to_torch", "from_torch", "convert", "from_tensordict", "to_tensordict", "params_from_torch", "params_to_torch"]
