"""The taped namespace: the array-API namespace of :class:`~arrayrl.autodiff.Tensor`.

``TapedNamespace(base)`` exposes every attribute of the raw namespace ``base``:

* differentiable functions of the standard (:data:`~arrayrl.autodiff.rules.DIFFERENTIABLE`, plus ``clip``,
  ``concat``, ``stack``, ``unstack``, ``astype`` between floating dtypes, ``asarray``, ``sort``, ``vecdot``,
  ``tensordot``, ``broadcast_arrays``, ``linalg.vector_norm``...) are primitives: they call ``base``'s function
  directly on raw inputs and record a node when an argument is a :class:`Tensor`;
* non-differentiable functions (comparisons, ``argmax``, ``sign``, ``floor``, ``isnan``, logical and bitwise
  functions, creation functions, ``astype`` to integer/bool, dtype queries...) unwrap Tensors and return raw arrays
  (constants);
* any other callable attribute (a NumPy extra such as ``np.einsum``, say) unwraps its arguments and raises
  ``NotImplementedError`` if one of them needs a gradient, so a gradient is never silently dropped;
* dtypes, constants and the info object are passed through unchanged.

One namespace is built and cached per base namespace; its ``_arrayrl_base`` attribute is ``base``.
"""

from __future__ import annotations

import math
from typing import Any

from . import rules as _rules  # noqa: F401  (fills the VJP table)
from .core import VJP_TABLE, Tensor, _entry, _make_primitive
from .._backend import backend_name, base_of

__all__ = ["TapedNamespace", "taped_namespace", "NON_DIFFERENTIABLE"]

#: standard functions that return constants (raw arrays) when given Tensors
NON_DIFFERENTIABLE = (
    "equal not_equal less less_equal greater greater_equal argmax argmin argsort sign signbit floor ceil round "
    "trunc isnan isinf isfinite logical_and logical_or logical_xor logical_not bitwise_and bitwise_or bitwise_xor "
    "bitwise_invert bitwise_left_shift bitwise_right_shift all any count_nonzero nonzero searchsorted unique_all "
    "unique_counts unique_inverse unique_values zeros_like ones_like full_like empty_like zeros ones full empty "
    "arange linspace eye meshgrid tril_indices finfo iinfo isdtype result_type can_cast broadcast_shapes floor_divide "
    "from_dlpack diff"
).split()


def _unwrap(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.value
    if isinstance(x, (list, tuple)) and any(isinstance(v, Tensor) for v in x):
        return type(x)(v.value if isinstance(v, Tensor) else v for v in x)
    return x


def _needs_grad(x: Any) -> bool:
    if isinstance(x, Tensor):
        return x._idx >= 0
    if isinstance(x, (list, tuple)):
        return any(isinstance(v, Tensor) and v._idx >= 0 for v in x)
    return False


def _constant_fn(fn: Any, name: str) -> Any:
    def const(*args, **kw):
        return fn(*[_unwrap(a) for a in args], **{k: _unwrap(v) for k, v in kw.items()})

    const.__name__ = name
    const.__doc__ = f"Non-differentiable ``{name}``: Tensors are unwrapped, the result is a raw array (a constant)."
    return const


def _guarded_fn(fn: Any, name: str, where: str) -> Any:
    def guarded(*args, **kw):
        if any(_needs_grad(a) for a in args) or any(_needs_grad(v) for v in kw.values()):
            raise NotImplementedError(
                f"{where}.{name} has no VJP in arrayrl's tape; write it with differentiable standard functions or "
                f"register it with arrayrl.autodiff.primitive/defvjp"
            )
        return fn(*[_unwrap(a) for a in args], **{k: _unwrap(v) for k, v in kw.items()})

    guarded.__name__ = name
    return guarded


def _passthrough(attr: Any) -> bool:
    return not callable(attr) or isinstance(attr, type) or type(attr).__name__ in ("dtype", "DType")


class _Guarded:
    """A sub-namespace (``linalg``, ``fft``) whose callables are guarded, with a few differentiable overrides."""

    def __init__(self, base: Any, where: str, overrides: dict):
        self._base = base
        self._where = where
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._base, name)
        if not _passthrough(attr):
            attr = _guarded_fn(attr, name, self._where)
        self.__dict__[name] = attr
        return attr


class TapedNamespace:
    """The namespace of Tensors over the raw namespace ``base`` (see the module docstring)."""

    def __init__(self, base: Any):
        self._arrayrl_base = base
        self.__name__ = f"arrayrl.autodiff.taped[{backend_name(base)}]"
        d = self.__dict__
        fast = _numpy_kernels() if backend_name(base) == "numpy" else {}
        for name in _rules.DIFFERENTIABLE:
            fn = fast.get(name) or getattr(base, name, None)
            if fn is not None:
                d[name] = _make_primitive(fn, VJP_TABLE[name])
        for name in NON_DIFFERENTIABLE:
            fn = getattr(base, name, None)
            if fn is not None:
                d[name] = _constant_fn(fn, name)
        self._install_special(base, d)
        for name in ("__array_namespace_info__", "__array_api_version__"):
            if hasattr(base, name):
                d[name] = getattr(base, name)

    # -------------------------------------------------------------------------------------------------------------
    def _install_special(self, base: Any, d: dict) -> None:
        ns = self

        def clip_raw(x, lo, hi):
            return base.clip(x, min=lo, max=hi)

        if backend_name(base) == "numpy":  # large outputs into pooled buffers (arrayrl._pool; the same values)
            from .. import _pool

            clip_p = _make_primitive(lambda x, lo, hi: _pool.clip(x, lo, hi, clip_raw), VJP_TABLE["clip"])
            concat_p = _make_primitive(lambda *xs, axis=0: _pool.concat(xs, axis, base.concat), VJP_TABLE["concat"])
            stack_p = _make_primitive(lambda *xs, axis=0: _pool.stack(xs, axis, base.stack), VJP_TABLE["stack"])
        else:
            clip_p = _make_primitive(clip_raw, VJP_TABLE["clip"])
            concat_p = _make_primitive(lambda *xs, axis=0: base.concat(xs, axis=axis), VJP_TABLE["concat"])
            stack_p = _make_primitive(lambda *xs, axis=0: base.stack(xs, axis=axis), VJP_TABLE["stack"])

        def clip(x, /, min=None, max=None):
            """``clip`` (torch.clamp gradient conventions; ``min``/``max`` may be Tensors)."""
            return clip_p(x, min, max)

        def concat(arrays, /, *, axis=0):
            _check_sequence(arrays, "concat")
            return concat_p(*arrays, axis=axis)

        def stack(arrays, /, *, axis=0):
            _check_sequence(arrays, "stack")
            return stack_p(*arrays, axis=axis)

        def unstack(x, /, *, axis=0):
            if not isinstance(x, Tensor):
                return base.unstack(x, axis=axis)
            ax = axis % x.ndim
            return tuple(x[(slice(None),) * ax + (i, ...)] for i in range(x.shape[ax]))

        astype_p = _make_primitive(base.astype, VJP_TABLE["astype"]) if hasattr(base, "astype") else None

        def astype(x, dtype, /, *, copy=True, device=None):
            """Differentiable between real floating dtypes; a constant otherwise."""
            if isinstance(x, Tensor):
                if x._idx >= 0 and base.isdtype(dtype, "real floating") and base.isdtype(x.dtype, "real floating"):
                    kw = {"copy": copy} if device is None else {"copy": copy, "device": device}
                    return astype_p(x, dtype, **kw)
                x = x.value
            if device is None:
                return base.astype(x, dtype, copy=copy)
            return base.astype(x, dtype, copy=copy, device=device)

        def asarray(obj, /, *, dtype=None, device=None, copy=None):
            """A Tensor is returned as is (or cast with :func:`astype` when ``dtype`` differs)."""
            if isinstance(obj, Tensor):
                if dtype is not None and dtype != obj.dtype:
                    return astype(obj, dtype)
                return obj
            if isinstance(obj, (list, tuple)) and _contains_tensor(obj):
                raise TypeError(
                    "asarray: a Python list/tuple containing Tensors is not differentiable; use xp.stack"
                )
            return base.asarray(obj, dtype=dtype, device=device, copy=copy)

        def sort(x, /, *, axis=-1, descending=False, stable=True):
            """Differentiable sort (a gather by ``argsort``); ``descending`` sorts ``-x`` (NumPy lacks the flag)."""
            if not isinstance(x, Tensor):
                return base.sort(x, axis=axis, descending=True) if descending else base.sort(x, axis=axis)
            v = x.value
            idx = base.argsort(-v if descending else v, axis=axis, stable=True)
            return ns.take_along_axis(x, idx, axis=axis)

        def vecdot(x1, x2, /, *, axis=-1):
            if not (isinstance(x1, Tensor) or isinstance(x2, Tensor)):
                return base.vecdot(x1, x2, axis=axis)
            return ns.sum(x1 * x2, axis=axis)

        def tensordot(x1, x2, /, *, axes=2):
            if not (isinstance(x1, Tensor) or isinstance(x2, Tensor)):
                return base.tensordot(x1, x2, axes=axes)
            if isinstance(axes, int):
                ax1 = tuple(range(x1.ndim - axes, x1.ndim))
                ax2 = tuple(range(axes))
            else:
                ax1 = tuple(a % x1.ndim for a in axes[0])
                ax2 = tuple(a % x2.ndim for a in axes[1])
            free1 = tuple(i for i in range(x1.ndim) if i not in ax1)
            free2 = tuple(i for i in range(x2.ndim) if i not in ax2)
            k = math.prod(x1.shape[a] for a in ax1)
            a = ns.reshape(ns.permute_dims(x1, free1 + ax1), (-1, k))
            b = ns.reshape(ns.permute_dims(x2, ax2 + free2), (k, -1))
            out = ns.matmul(a, b)
            return ns.reshape(out, tuple(x1.shape[i] for i in free1) + tuple(x2.shape[i] for i in free2))

        def broadcast_arrays(*arrays):
            if not _contains_tensor(arrays):
                return base.broadcast_arrays(*arrays)
            shape = base.broadcast_shapes(*[tuple(a.shape) for a in arrays])
            return [ns.broadcast_to(a, shape) for a in arrays]

        d.update(
            clip=clip,
            concat=concat,
            stack=stack,
            unstack=unstack,
            astype=astype,
            asarray=asarray,
            sort=sort,
            vecdot=vecdot,
            tensordot=tensordot,
            broadcast_arrays=broadcast_arrays,
        )
        for name in ("tril", "triu"):
            if hasattr(base, name):
                d[name] = _make_primitive(getattr(base, name), _entry(name))

        linalg = getattr(base, "linalg", None)
        if linalg is not None:
            d["linalg"] = _Guarded(linalg, f"{self.__name__}.linalg", _linalg_overrides(base, linalg, ns))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        attr = getattr(self._arrayrl_base, name)
        if not _passthrough(attr):
            if hasattr(attr, "__dict__") and type(attr).__name__ == "module":
                attr = _Guarded(attr, f"{self.__name__}.{name}", {})
            else:
                attr = _guarded_fn(attr, name, self.__name__)
        self.__dict__[name] = attr
        return attr

    def __dir__(self):
        return sorted(set(dir(self._arrayrl_base)) | set(self.__dict__))

    def __repr__(self) -> str:
        return f"<{self.__name__}>"


#: the standard's elementwise functions that are NumPy ufuncs of another name (the others share their name)
_UFUNC_NAMES = {"abs": "absolute", "asin": "arcsin", "acos": "arccos", "atan": "arctan", "asinh": "arcsinh",
                "acosh": "arccosh", "atanh": "arctanh", "atan2": "arctan2", "pow": "power"}


def _numpy_kernels() -> dict:
    """Raw kernels used instead of NumPy's own functions on the taped NumPy namespace (accelerators with the same
    values, tested against NumPy's in tests/autodiff/test_ad_fastpaths.py; ``matmul`` under the BLAS thread
    policy of :mod:`.tuning`; the elementwise ufuncs write their large outputs into :mod:`arrayrl._pool`'s
    buffers)."""
    import numpy as np

    from .. import _kernels, _pool
    from .tuning import np_matmul

    pooled = {}
    for name in _rules.ELEMENTWISE:
        ufunc = getattr(np, _UFUNC_NAMES.get(name, name), None)
        if isinstance(ufunc, np.ufunc):
            pooled[name] = _pool.elementwise(ufunc)
    return dict(pooled, **_kernels.NUMPY_KERNELS, matmul=np_matmul)


def _contains_tensor(seq) -> bool:
    return any(isinstance(v, Tensor) or (isinstance(v, (list, tuple)) and _contains_tensor(v)) for v in seq)


def _check_sequence(arrays, name):
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{name}: expected a tuple or list of arrays, got {type(arrays).__name__}")


def _linalg_overrides(base, linalg, ns) -> dict:
    norm_p = _make_primitive(
        lambda x, axis=None, keepdims=False, ord=2: linalg.vector_norm(x, axis=axis, keepdims=keepdims, ord=ord),
        VJP_TABLE["vector_norm"],
    )

    def vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
        """Differentiable for every ``ord``; ``ord=2`` is fused (gradient 0 at the origin, as torch)."""
        if not isinstance(x, Tensor) or ord == 2:
            return norm_p(x, axis=axis, keepdims=keepdims, ord=ord) if isinstance(x, Tensor) else linalg.vector_norm(
                x, axis=axis, keepdims=keepdims, ord=ord
            )
        a = ns.abs(x)
        if ord == math.inf:
            return ns.max(a, axis=axis, keepdims=keepdims)
        if ord == -math.inf:
            return ns.min(a, axis=axis, keepdims=keepdims)
        if ord == 1:
            return ns.sum(a, axis=axis, keepdims=keepdims)
        return ns.sum(a**ord, axis=axis, keepdims=keepdims) ** (1.0 / ord)

    out = {"vector_norm": vector_norm, "matmul": ns.matmul, "matrix_transpose": ns.matrix_transpose}
    out["vecdot"] = ns.vecdot
    out["tensordot"] = ns.tensordot
    return out


_NAMESPACES: dict[int, TapedNamespace] = {}


def taped_namespace(base: Any) -> TapedNamespace:
    """The (cached) taped namespace over the raw namespace ``base``."""
    base = base_of(base)
    ns = _NAMESPACES.get(id(base))
    if ns is None:
        ns = _NAMESPACES[id(base)] = TapedNamespace(base)
    return ns
