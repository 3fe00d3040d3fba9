"""arrayrl's reverse-mode autodiff tape.

The same array-API code runs on raw arrays (no tape, no cost) or on :class:`Tensor` (records a tape)::

    import numpy as np
    from arrayrl import namespace_of
    from arrayrl.autodiff import value_and_grad

    def loss(params, x):
        xp = namespace_of(params["w"], x)
        return xp.mean(xp.tanh(x @ params["w"]) ** 2)

    value, grads = value_and_grad(loss)({"w": np.ones((3, 2))}, np.ones((5, 3)))   # grads == {"w": array}

Pieces (see each module):

* :mod:`.core`: :class:`Tensor` (wrapped array and tape node), :func:`primitive`/:func:`defvjp` (the one VJP
  table, HIPS-autograd style), :func:`sum_to_shape` (broadcasting undone in one place), the iterative backward walk.
* :mod:`.rules`: VJPs of the standard's functions (PyTorch's tie and bound conventions).
* :mod:`.namespace`: the taped namespace returned by ``Tensor.__array_namespace__``.
* :mod:`.api`: :func:`value_and_grad`, :func:`grad`, :func:`vjp`, :func:`stop_gradient`.
* :mod:`.check`: :func:`check_grads` (random covector against central finite differences).
* :mod:`.tuning`: the opt-in process policy for large CPU batches (below). Nothing in arrayrl changes global
  process state on import.

CPU policy for large batches (NumPy backend; measured in benchmarks/results/tape-cpu.md):

* the tape allocates a fresh temporary per op and per cotangent. glibc serves blocks above its mmap threshold with
  ``mmap`` and unmaps them on free, so every call page-faults its temporaries back in (a 4096 x 64 float32
  activation is 1 MiB = 256 faults), and trims the heap top likewise. :func:`tune_allocator` raises both thresholds
  (``mallopt``) so the blocks are reused; at batch 4096 it cuts the DQN/IQL/QMixer losses' time 2-2.5x;
* NumPy's OpenBLAS spins up all cores for matrices as small as 4096 x 64 x 64, and its busy-waiting threads collapse
  when the cores are shared (other processes, a torch data loader...). :func:`set_blas_threads` ``(1)`` (or the
  :func:`blas_threads` context manager) keeps the BLAS serial;
* recommended for training loops on CPU with NumPy: call ``tune_allocator()`` and ``set_blas_threads(1)`` once at
  start-up (keep the default BLAS threads only on an idle machine with large layers; see :mod:`.tuning`). Both are
  process-wide, explicit and documented; arrayrl never calls them itself.

Fused primitives: :func:`arrayrl.ops.linear` (``act(x @ w.mT + b)``, used by ``arrayrl.nn``) records one node whose
VJP (registered with :func:`defvjp_joint`, one rule computing every needed cotangent) applies the activation's
derivative once; a constant input (the observations) gets no cotangent.

Semantics worth knowing:

* first order only; gradients are raw backend arrays with the nesting of the argument;
* ``maximum``/``minimum`` split the gradient at ties, ``clip`` passes it at the bounds, ``max``/``min``
  reductions send it to the first arg-max (``torch.max(x, dim)``), ``where`` selects (NaN in the unused branch does
  not leak), ``relu``'s gradient is 0 at 0;
* ``bool(t)``/``float(t)`` read the value (no gradient); ``np.exp(t)``, ``np.asarray(t)`` and ``np.mean(t)`` raise
  ``TypeError`` (a Tensor is never turned into an object array): use the namespace of the Tensor;
* array_api_strict's operators raise on foreign right operands instead of returning ``NotImplemented``, so on that
  backend ``raw_array + tensor`` fails: write ``xp.add(raw, t)`` (or put the Tensor on the left). NumPy, torch and
  CuPy defer to the Tensor's reflected operator;
* unknown functions of the backend (``np.cbrt``...) raise ``NotImplementedError`` when a gradient would flow
  through them, instead of silently dropping it.
"""

from .api import grad, stop_gradient, value_and_grad, vjp
from .check import check_grads
from .core import Tensor, defvjp, defvjp_argnum, defvjp_joint, primitive, sum_to_shape
from .namespace import taped_namespace
from .tuning import blas_threads, set_blas_threads, tune_allocator

__all__ = [
    "Tensor",
    "value_and_grad",
    "grad",
    "vjp",
    "stop_gradient",
    "check_grads",
    "primitive",
    "defvjp",
    "defvjp_argnum",
    "defvjp_joint",
    "sum_to_shape",
    "taped_namespace",
    "tune_allocator",
    "blas_threads",
    "set_blas_threads",
]
