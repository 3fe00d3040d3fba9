"""arrayrl: TorchRL's objectives written once against the Python array API standard.

The same code runs on NumPy, CuPy, PyTorch tensors and array-api-strict; gradients come from arrayrl's own
reverse-mode tape (:mod:`arrayrl.autodiff`).

``set_validate_args(True | False | None)`` / ``with validate_args(flag):`` switch the data-dependent input checks
(categorical indices in range...) on, off, or back to auto (CPU arrays only); see :mod:`arrayrl._validate`.
"""

from ._backend import namespace_of, to_numpy
from ._validate import get_validate_args, set_validate_args, validate_args
from .random import Generator

__version__ = "0.1.0"

__all__ = ["namespace_of", "to_numpy", "Generator", "set_validate_args", "get_validate_args", "validate_args",
           "__version__"]
