"""arrayrl: TorchRL's objectives written once against the Python array API standard.

The same code runs on NumPy, CuPy, PyTorch tensors and array-api-strict; gradients come from arrayrl's own
reverse-mode tape (:mod:`arrayrl.autodiff`).
"""

from ._backend import namespace_of, to_numpy
from .random import Generator

__version__ = "0.1.0"

__all__ = ["namespace_of", "to_numpy", "Generator", "__version__"]
