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
* :mod:`.tuning`: the BLAS thread policy (on by default, below) and the opt-in allocator tuning. Nothing in
  arrayrl changes global process state on import.

CPU policy (NumPy backend; measured in :mod:`.tuning` and benchmarks/results/tape-cpu.md):

* BLAS threads, automatic: NumPy's OpenBLAS spins up all cores for matrices as small as 256 x 64 x 64, and its
  busy-waiting threads collapse when the cores are shared (other processes, a torch data loader...). Every NumPy
  product arrayrl issues (``ops.linear`` and its VJP, ``xp.matmul``/``@`` on Tensors, the matmul VJPs, the BLAS row
  sums) therefore runs single-threaded when it has fewer than :data:`~.tuning.SERIAL_BELOW` multiply-adds per
  matrix, and the caller's thread count is restored after it. ``set_blas_policy("off")`` (or
  ``ARRAYRL_BLAS_POLICY=off``) disables this; :func:`set_blas_threads` (or the :func:`blas_threads` context manager)
  still sets the process-wide count;
* buffer pool, automatic: the tape would allocate a fresh temporary per op and per cotangent, and glibc
  serves blocks above 128 KiB with ``mmap``, so every call page-faults its big temporaries back in (1792 faults
  per DQN update at batch 4096). arrayrl's NumPy kernels (taped elementwise ops, matrix products, the fused
  primitives, the backward walk's sums) write their outputs of at least 128 KiB into a per-thread pool
  (:mod:`arrayrl._pool`); a buffer is handed out again only when its reference count shows that nothing (no
  result, no view) refers to it. Values are bit-identical with the pool off: :func:`set_buffer_pool` ``(False)``
  or ``ARRAYRL_BUFFER_POOL=0``; cap per thread 256 MiB (``max_bytes``). Off on free-threaded CPython and PyPy.
  :func:`tune_allocator` (``mallopt``) remains an explicit, process-wide opt-in (arrayrl never calls it itself).

Fused primitives: :func:`arrayrl.ops.linear` (``act(x @ w.mT + b)``, used by ``arrayrl.nn``) records one node whose
VJP (registered with :func:`defvjp_joint`, one rule computing every needed cotangent) applies the activation's
derivative once; a constant input (the observations) gets no cotangent.

Semantics worth knowing:

* gradients are raw backend arrays with the nesting of the argument;
* second order (HIPS autograd / JAX style): ``value_and_grad(f, create_graph=True)``, nested ``grad(grad(f))``,
  ``vjp`` of ``vjp`` and :func:`hvp` (the gradient of ``<grad f, v>``) run the backward walk with taped cotangents
  (:func:`~.core.backward_taped`): each rule receives the taped namespace, the node as ``ans`` and the parents'
  Tensors, so what it computes is recorded. The NumPy fast paths inside rules dispatch on the argument types
  (raw arrays only), so taped cotangents take the generic composition; the scan's adjoint is recorded as a scan.
  The first-order walk is unchanged (one flag checked per call; one comparison detects a function that closes over
  Tensors of an enclosing transformation, which then gets the taped walk). A rule that only runs on raw arrays
  raises :class:`~.core.SecondOrderError` in that mode;
* ``maximum``/``minimum`` split the gradient at ties, ``clip`` passes it at the bounds, ``max``/``min``
  reductions send it to the first arg-max (``torch.max(x, dim)``), ``where`` selects (NaN in the unused branch does
  not leak), ``relu``'s gradient is 0 at 0;
* ``bool(t)``/``float(t)`` read the value (no gradient); ``np.exp(t)``, ``np.asarray(t)`` and ``np.mean(t)`` raise
  ``TypeError`` (a Tensor is never turned into an object array): use the namespace of the Tensor;
* operand order: a raw array on the left of a Tensor (a non-differentiated argument, a closure, a comparison or
  creation result) defers to the Tensor's reflected operator on every backend, so ``x @ w``, ``x < w`` and
  ``1.0 - w`` work whatever the order. NumPy, torch and CuPy defer by protocol (``__array_ufunc__ = None``,
  ``__array_priority__ = 1000``); array_api_strict's operators raise on any foreign operand, so the tape lifts
  that check for Tensors only (:func:`~.core.defer_operators_to_tensor`, installed when the tape first sees
  strict's array type; other foreign operands are still refused);
* unknown functions of the backend (``np.cbrt``...) raise ``NotImplementedError`` when a gradient would flow
  through them, instead of silently dropping it.
"""

from .api import grad, hvp, stop_gradient, value_and_grad, vjp
from .check import check_grads
from .core import SecondOrderError, Tensor, defvjp, defvjp_argnum, defvjp_joint, primitive, sum_to_shape
from .namespace import taped_namespace
from .tuning import blas_policy, blas_threads, set_blas_policy, set_blas_threads, tune_allocator
from .._pool import buffer_pool, buffer_pool_stats, clear_buffer_pool, set_buffer_pool

__all__ = [
    "Tensor",
    "value_and_grad",
    "grad",
    "hvp",
    "SecondOrderError",
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
    "set_blas_policy",
    "blas_policy",
    "set_buffer_pool",
    "buffer_pool",
    "buffer_pool_stats",
    "clear_buffer_pool",
]
