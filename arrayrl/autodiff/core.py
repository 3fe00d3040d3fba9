"""The tape: :class:`Tensor` (a node), :func:`primitive`/:func:`defvjp` (the one VJP table) and the backward walk.

A :class:`Tensor` is at the same time a wrapped backend array and a node of the tape. Every primitive applied to a
Tensor that *needs a gradient* (a differentiation leaf, or an op output depending on one) records a node holding
the primitive's VJP entry, the raw positional arguments, the keyword arguments, and the ``(argnum, parent)`` pairs
of the arguments that need gradients. Constants (raw arrays, Python scalars, Tensors built by the user with
``Tensor(x)``) are never parents, so no cotangent is ever computed for them.

The backward walk (:func:`backward`) is iterative: it visits the nodes that received a cotangent in decreasing
creation index (a topological order, since a node is always created after its inputs; a heap keyed by the index),
keeps the cotangents in a dict keyed by that index, and frees each node's cotangent as soon as it has been pushed
to the parents.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import operator
from typing import Any, Callable

import numpy as _np

from .. import _kernels, _pool
from .._backend import _raw_namespace
from .tuning import _ND, np_matmul
from .tuning import matmul as _mm  # xp.matmul under the BLAS thread policy on NumPy

__all__ = [
    "Tensor",
    "primitive",
    "defvjp",
    "defvjp_argnum",
    "defvjp_joint",
    "backward",
    "sum_to_shape",
    "VJP_TABLE",
    "base_namespace",
    "is_tensor",
    "defer_operators_to_tensor",
    "backward_taped",
    "SecondOrderError",
]

_counter = itertools.count()

# type(raw array) -> raw (base) namespace. Namespaces never change for a type.
_BASE_BY_TYPE: dict[type, Any] = {}


def base_namespace(raw: Any) -> Any:
    """The raw array-API namespace of a raw backend array (cached per type)."""
    ns = _BASE_BY_TYPE.get(type(raw))
    if ns is None:
        ns = _BASE_BY_TYPE[type(raw)] = _raw_namespace(raw)
        defer_operators_to_tensor(type(raw))
    return ns


def defer_operators_to_tensor(raw_type: type) -> bool:
    """Make ``raw_type``'s binary operators defer to a :class:`Tensor` right operand; True if they do now.

    Python calls ``b.__radd__(a)`` for ``a + b`` only when ``a.__add__(b)`` returns ``NotImplemented``. NumPy
    (``Tensor.__array_ufunc__ = None``), torch, CuPy (``__array_ufunc__ is None`` or ``__array_priority__``) and
    JAX do; array_api_strict's operators instead raise ``TypeError("Expected Array or Python scalar")`` from
    ``Array._check_type_device`` for any foreign operand, so ``raw_x @ w`` (a raw array, from an argument, a closure
    or a creation function, left of a Tensor) failed there. For strict's ``Array`` this wraps that check once to let
    Tensors through; strict's operators then reach their own ``return NotImplemented`` branch for unknown types
    and Python calls the Tensor's reflected operator. Every other operand is checked exactly as before (other
    foreign types still raise). Idempotent; called when a backend type is first seen by the tape
    (:func:`base_namespace`, ``Tensor(...)``).
    """
    if not raw_type.__module__.startswith("array_api_strict"):
        return True
    check = getattr(raw_type, "_check_type_device", None)
    if check is None:  # another strict version: operators unchanged (value_and_grad's message says what to do)
        return False
    if getattr(check, "_arrayrl_defers", False):
        return True

    def _check_type_device(self, other, _strict_check=check):
        if getattr(type(other), "_arrayrl_taped", False):
            return None  # the operator's dtype check returns NotImplemented for it: Python asks the Tensor
        return _strict_check(self, other)

    _check_type_device._arrayrl_defers = True  # type: ignore[attr-defined]
    _check_type_device.__doc__ = check.__doc__
    setattr(raw_type, "_check_type_device", _check_type_device)
    return True


class VJPEntry:
    """One row of the VJP table: the rules of one primitive.

    Attributes:
        name: a readable name (for error messages).
        rules: a tuple with one rule per positional argument, ``rule(xp, g, ans, *args, **kwargs) -> cotangent``
            (``None`` for a non-differentiable argument), or ``None``.
        argnum_rule: for variadic primitives, ``rule(argnum, xp, g, ans, args, kwargs)``.
        joint: for fused primitives whose cotangents share work, ``rule(xp, g, ans, needs, *args, **kwargs)``
            returning one cotangent per positional argument (``None`` where not needed; ``needs`` is the tuple of
            the argnums that need one), called once per node.
        elementwise: the cotangents are reduced with :func:`sum_to_shape` (undoing broadcasting) before the shape
            assertion.
    """

    __slots__ = ("name", "rules", "argnum_rule", "joint", "elementwise")

    def __init__(self, name: str, elementwise: bool = False):
        self.name = name
        self.rules: tuple | None = None
        self.argnum_rule: Callable | None = None
        self.joint: Callable | None = None
        self.elementwise = elementwise

    def __repr__(self) -> str:
        return f"VJPEntry({self.name!r})"


#: The one VJP table: primitive name -> :class:`VJPEntry`. Rules are written against the raw namespace.
VJP_TABLE: dict[str, VJPEntry] = {}


def _entry(name: str, elementwise: bool = False) -> VJPEntry:
    e = VJP_TABLE.get(name)
    if e is None:
        e = VJP_TABLE[name] = VJPEntry(name, elementwise)
    return e


class Tensor:
    """A backend array on the tape.

    ``Tensor(value)`` wraps a raw backend array (NumPy, torch, CuPy, array-api-strict); a Tensor built this way is a
    *constant* (no gradient flows to it). :func:`arrayrl.autodiff.value_and_grad` builds the differentiation leaves.

    ``__array_namespace__()`` returns the taped namespace over the backend's namespace, so array-API code run on a
    Tensor records the tape. Operators ``+ - * / ** @`` (and reflected), unary ``-``/``+``, basic indexing
    (ints, slices, ``None``, ``Ellipsis``) are differentiable; comparisons return raw boolean arrays (constants).

    Raw arrays on the left of a Tensor defer to its reflected operators on every backend (array_api_strict's
    refusal of foreign operands is lifted for Tensors by :func:`defer_operators_to_tensor`), so ``raw_x @ w``,
    ``raw_x < w`` and ``1.0 - w`` work whatever the operand order.

    ``bool(t)``, ``float(t)``, ``int(t)`` and ``len(t)`` read the wrapped value (no gradient; data-dependent, so keep
    them out of library code). NumPy never sees through a Tensor: ``__array_ufunc__ = None`` makes ``np.exp(t)``
    and ``raw_array + t`` defer or raise, and ``__array__`` raises ``TypeError``, so ``np.asarray(t)``,
    ``np.mean(t)`` or ``np.concatenate([t])`` fail loudly instead of building an object array (which would
    silently cut the tape). Use ``xp = namespace_of(...)`` of the Tensor: ``xp.exp(t)``.
    Tensors are immutable: item assignment raises ``TypeError``.
    """

    __slots__ = ("value", "_idx", "_parents", "_entry", "_args", "_kw", "_xp", "__weakref__")
    # the slots' types (annotations only: no class attributes, so no clash with ``__slots__``). ``_entry``,
    # ``_args``, ``_kw`` are set on recorded nodes only, ``_xp`` on leaves and nodes (``_idx >= 0``)
    value: Any
    _idx: int
    _parents: tuple[tuple[int, Tensor], ...]
    _entry: VJPEntry
    _args: tuple[Any, ...]
    _kw: dict[str, Any]
    _xp: Any
    _arrayrl_taped = True
    __array_ufunc__ = None
    __array_priority__ = 1000  # NumPy: defer binary operators to us (with __array_ufunc__ = None this is implied)

    def __init__(self, value: Any):
        if isinstance(value, Tensor):
            value = value.value
        elif type(value) not in _BASE_BY_TYPE:
            defer_operators_to_tensor(type(value))
        self.value = value
        self._idx = -1  # constant: never a parent
        self._parents = ()

    def __array__(self, dtype: Any = None, copy: Any = None):
        raise TypeError(
            "an arrayrl Tensor cannot be converted to a NumPy array (that would cut the tape); call the functions "
            "of its namespace (xp = namespace_of(x) with the Tensor among the inputs), or use stop_gradient(x) / "
            "x.value for a constant"
        )

    # ------------------------------------------------------------------ array API attributes
    def __array_namespace__(self, api_version: str | None = None) -> Any:
        ns = _TAPED_BY_TYPE.get(type(self.value))
        if ns is None:
            ns = _TAPED_BY_TYPE[type(self.value)] = taped_namespace(base_namespace(self.value))
        return ns

    @property
    def shape(self) -> tuple:
        return tuple(self.value.shape)

    @property
    def dtype(self) -> Any:
        return self.value.dtype

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def size(self) -> int | None:
        n = 1
        for s in self.value.shape:
            n *= s
        return n

    @property
    def device(self) -> Any:
        from .._backend import device_of

        return device_of(self.value)

    @property
    def mT(self) -> "Tensor":
        return _matrix_transpose(self)

    @property
    def T(self) -> "Tensor":
        if self.value.ndim != 2:
            raise ValueError(f"Tensor.T: defined for 2-D arrays only (array API), got {self.value.ndim} dimensions")
        return _permute_dims(self, (1, 0))

    @property
    def requires_grad(self) -> bool:
        """True if a gradient flows through this Tensor (it depends on a differentiation leaf)."""
        return self._idx >= 0

    def to_device(self, device: Any, /, *, stream: Any = None) -> "Tensor":
        return _to_device(self, device)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return _binary(_ADD, _raw_add, self, other)

    def __radd__(self, other):
        return _binary(_ADD, _raw_add, other, self)

    def __sub__(self, other):
        return _binary(_SUB, _raw_sub, self, other)

    def __rsub__(self, other):
        return _binary(_SUB, _raw_sub, other, self)

    def __mul__(self, other):
        return _binary(_MUL, _raw_mul, self, other)

    def __rmul__(self, other):
        return _binary(_MUL, _raw_mul, other, self)

    def __truediv__(self, other):
        return _binary(_DIV, _raw_div, self, other)

    def __rtruediv__(self, other):
        return _binary(_DIV, _raw_div, other, self)

    def __pow__(self, other):
        return _pow(self, other)

    def __rpow__(self, other):
        return _pow(other, self)

    def __matmul__(self, other):
        return _matmul(self, other)

    def __rmatmul__(self, other):
        return _matmul(other, self)

    def __neg__(self):
        return _neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _abs(self)

    # ------------------------------------------------------------------ constants out
    def __lt__(self, other):
        return self.value < _raw(other)

    def __le__(self, other):
        return self.value <= _raw(other)

    def __gt__(self, other):
        return self.value > _raw(other)

    def __ge__(self, other):
        return self.value >= _raw(other)

    def __eq__(self, other):
        return self.value == _raw(other)

    def __ne__(self, other):
        return self.value != _raw(other)

    __hash__ = None  # type: ignore[assignment]

    def __floordiv__(self, other):
        return self.value // _raw(other)

    def __rfloordiv__(self, other):
        return _raw(other) // self.value

    def __mod__(self, other):
        return self.value % _raw(other)

    def __rmod__(self, other):
        return _raw(other) % self.value

    def __invert__(self):
        return ~self.value

    def __and__(self, other):
        return self.value & _raw(other)

    def __or__(self, other):
        return self.value | _raw(other)

    def __xor__(self, other):
        return self.value ^ _raw(other)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return self.value.__index__()

    def __len__(self) -> int:
        return len(self.value)

    # ------------------------------------------------------------------ indexing
    def __getitem__(self, key):
        for k in key if type(key) is tuple else (key,):
            if not (k is None or k is Ellipsis or type(k) is slice or (type(k) is int) or _is_int_scalar(k)):
                raise TypeError(
                    f"Tensor indexing supports ints, slices, None and Ellipsis (basic indexing), got "
                    f"{type(k).__name__}; gather with xp.take / xp.take_along_axis instead"
                )
        return _getitem(self, key)

    def __setitem__(self, key, value):
        raise TypeError(
            "arrayrl Tensors are immutable (no in-place writes on the tape); build the result with xp.where or xp.concat"
        )

    def __iter__(self):
        n = self.value.shape[0] if self.value.ndim else None
        if n is None:
            raise TypeError("iteration over a 0-d Tensor")
        return (self[i] for i in range(n))

    def __repr__(self) -> str:
        kind = "leaf" if self._idx >= 0 and not self._parents else ("node" if self._idx >= 0 else "constant")
        return f"Tensor({self.value!r}, {kind})"


def _is_int_scalar(k: Any) -> bool:
    """A NumPy-style integer scalar (has ``__index__``, not a bool, not an array of more than 0 dimensions)."""
    if isinstance(k, (bool, Tensor)) or "bool" in str(getattr(k, "dtype", "")):
        return False
    return hasattr(k, "__index__") and getattr(k, "ndim", 0) == 0


def is_tensor(x: Any) -> bool:
    return isinstance(x, Tensor)


def _raw(x: Any) -> Any:
    return x.value if isinstance(x, Tensor) else x


# ---------------------------------------------------------------------------------------------------------------------
# Recording


_tensor_new = object.__new__


def _new_leaf(value: Any, xp: Any) -> Tensor:
    """A differentiation leaf (gradients flow to it)."""
    t = _tensor_new(Tensor)
    t.value = value
    t._idx = next(_counter)
    t._parents = ()
    t._xp = xp
    return t


def _constant(ans: Any) -> Tensor:
    t = _tensor_new(Tensor)
    t.value = ans
    t._idx = -1
    t._parents = ()
    return t


def _kw_error(entry: VJPEntry, kw: dict) -> None:
    for k, v in kw.items():
        if isinstance(v, Tensor):
            raise TypeError(
                f"{entry.name}: keyword argument {k!r} is a Tensor; only positional arguments of a primitive "
                f"are differentiable"
            )


def _record(entry: VJPEntry, raw_fn: Callable, args: tuple, kw: dict) -> Any:
    """Slow path of a primitive: at least one positional argument is a Tensor.

    The node is built inline (this runs once per recorded op, so every attribute store and call counts)."""
    if kw:
        _kw_error(entry, kw)
    elif len(args) == 2:  # maximum(x, 0.0), matmul(x, w)...: the operators' path (no argument lists)
        return _binary(entry, raw_fn, args[0], args[1])
    raw_args: tuple[Any, ...]
    parents: tuple[tuple[int, Tensor], ...]
    if len(args) == 1:  # unary fast path (args[0] is the Tensor)
        a = args[0]
        v = a.value
        ans = raw_fn(v, **kw) if kw else raw_fn(v)
        if a._idx < 0:
            return _constant(ans)
        raw_args = (v,)
        parents = ((0, a),)
        xp = a._xp
    else:
        raw_list: list[Any] = []
        parent_list: list[tuple[int, Tensor]] = []
        xp = None
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                raw_list.append(a.value)
                if a._idx >= 0:
                    parent_list.append((i, a))
                    xp = a._xp
            else:
                raw_list.append(a)
        ans = raw_fn(*raw_list, **kw) if kw else raw_fn(*raw_list)
        if xp is None:
            return _constant(ans)
        raw_args = tuple(raw_list)
        parents = tuple(parent_list)
    t = _tensor_new(Tensor)
    t.value = ans
    t._idx = next(_counter)
    t._parents = parents
    t._entry = entry
    t._args = raw_args
    t._kw = kw
    t._xp = xp
    return t


def _binary(entry: VJPEntry, raw_fn: Callable, a: Any, b: Any) -> Any:
    """A binary operator with at least one Tensor operand (Tensor's dunder methods): no argument tuples to scan."""
    if type(a) is Tensor:
        av = a.value
        pa = a._idx >= 0
    else:
        av, pa = a, False
    if type(b) is Tensor:
        bv = b.value
        pb = b._idx >= 0
    else:
        bv, pb = b, False
    ans = raw_fn(av, bv)
    if pa:
        parents = ((0, a), (1, b)) if pb else ((0, a),)
        xp = a._xp
    elif pb:
        parents = ((1, b),)
        xp = b._xp
    else:
        return _constant(ans)
    t = _tensor_new(Tensor)
    t.value = ans
    t._idx = next(_counter)
    t._parents = parents
    t._entry = entry
    t._args = (av, bv)
    t._kw = _NO_KW
    t._xp = xp
    return t


_NO_KW: dict = {}


def _make_primitive(raw_fn: Callable, entry: VJPEntry) -> Callable:
    def prim(*args, **kw):
        for a in args:
            if isinstance(a, Tensor):
                return _record(entry, raw_fn, args, kw)
        if kw:
            _kw_error(entry, kw)
            return raw_fn(*args, **kw)
        return raw_fn(*args)

    prim._arrayrl_entry = entry  # type: ignore[attr-defined]
    prim._arrayrl_raw = raw_fn  # type: ignore[attr-defined]
    try:
        functools.update_wrapper(prim, raw_fn)
    except (AttributeError, TypeError):  # builtins/ufuncs without some attributes
        pass
    prim.__wrapped__ = raw_fn  # type: ignore[attr-defined]
    return prim


def primitive(raw_fn: Callable, *, name: str | None = None, elementwise: bool = False) -> Callable:
    """Make ``raw_fn`` (a function of raw backend arrays) a differentiable primitive.

    The returned function calls ``raw_fn`` directly when no positional argument is a :class:`Tensor` (the only cost
    is an ``isinstance`` scan). Otherwise it unwraps the Tensors, calls ``raw_fn`` and records a node. Register the
    VJPs with :func:`defvjp` (one rule per positional argument). Keyword arguments are never differentiable.

    Args:
        raw_fn: ``raw_fn(*arrays, **options) -> array``.
        name: the name used in the VJP table and in messages (default: ``raw_fn.__name__``).
        elementwise: broadcasting between the positional arguments is undone by :func:`sum_to_shape` on every
            cotangent (set for elementwise functions).

    Example:
        >>> cube = primitive(lambda x: x * x * x, name="cube", elementwise=True)
        >>> defvjp(cube, lambda xp, g, ans, x: g * 3 * x * x)
    """
    label: str = name if name else getattr(raw_fn, "__name__", "primitive")
    entry = VJPEntry(label, elementwise)
    return _make_primitive(raw_fn, entry)


def _entry_of(prim: Any) -> VJPEntry:
    if isinstance(prim, VJPEntry):
        return prim
    if isinstance(prim, str):
        return _entry(prim)
    entry = getattr(prim, "_arrayrl_entry", None)
    if entry is None:
        raise TypeError(f"defvjp: {prim!r} is not a primitive (make it with arrayrl.autodiff.primitive)")
    return entry


def defvjp(prim: Any, *rules: Callable | None) -> Any:
    """Register the VJP rules of a primitive: one per positional argument, ``None`` if not differentiable.

    Each rule is ``rule(xp, g, ans, *args, **kwargs) -> cotangent`` where ``xp`` is the raw namespace, ``g`` the
    cotangent of the output (raw, the output's shape), ``ans`` the raw output and ``args``/``kwargs`` the raw
    arguments. The cotangent must have the argument's shape (or, for an elementwise primitive, a shape that
    broadcasts to it; it is summed back by :func:`sum_to_shape`).
    """
    entry = _entry_of(prim)
    entry.rules = tuple(rules)
    entry.argnum_rule = None
    entry.joint = None
    return prim


def defvjp_argnum(prim: Any, rule: Callable) -> Any:
    """Register one rule for all positional arguments: ``rule(argnum, xp, g, ans, args, kwargs)`` (variadic ops)."""
    entry = _entry_of(prim)
    entry.argnum_rule = rule
    entry.rules = None
    entry.joint = None
    return prim


def defvjp_joint(prim: Any, rule: Callable) -> Any:
    """Register one rule computing the cotangents of all positional arguments at once (fused primitives).

    ``rule(xp, g, ans, needs, *args, **kwargs)`` returns a sequence with one entry per positional argument: the
    cotangent of each argument whose index is in ``needs`` (the arguments that need a gradient), anything (``None``)
    for the others. Work shared between the cotangents (the activation's derivative of a fused
    ``linear + activation``, say) is then done once per node instead of once per argument.
    """
    entry = _entry_of(prim)
    entry.joint = rule
    entry.rules = None
    entry.argnum_rule = None
    return prim


# ---------------------------------------------------------------------------------------------------------------------
# Broadcasting


def sum_to_shape(xp: Any, g: Any, shape: tuple) -> Any:
    """Sum ``g`` over the axes that broadcasting added or stretched, so the result has ``shape``.

    The one place where broadcasting is undone: applied to every elementwise cotangent.
    """
    gshape = tuple(g.shape)
    shape = tuple(shape)
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead == 1 and len(shape) == 1 and gshape[1] == shape[0] and gshape[0] and shape[0]:
        # a bias of a batched layer: ones @ g (BLAS; NumPy's float32 sum over axis 0 is ~10x slower)
        return _mm(xp, _kernels.ones_vector(xp, gshape[0], g), g)
    if lead < 0:
        # a cotangent of lower rank than the argument (the argument was broadcast to the output)
        return xp.broadcast_to(g, shape)
    inner = tuple(lead + i for i, s in enumerate(shape) if s == 1 and gshape[lead + i] != 1)
    n = m = 1
    for s in gshape[:lead]:
        n *= s
    for s in shape:
        m *= s
    if lead and not inner and shape and n and m:
        # the common case (a bias): sum over leading axes only, as ones @ g (BLAS; NumPy's float32 sum over
        # axis 0 is ~10x slower)
        g2 = xp.reshape(g, (n, m))
        ones = _kernels.ones_vector(xp, n, g)
        return xp.reshape(_mm(xp, ones, g2), shape)
    axes = tuple(range(lead)) + inner
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
        if lead:
            g = xp.reshape(g, shape)
    if tuple(g.shape) != shape:
        g = xp.broadcast_to(g, shape)  # an argument of size 1 broadcast against an output of size 0 etc.
    return g


# ---------------------------------------------------------------------------------------------------------------------
# Backward walk


def _fix_cotangent(entry: VJPEntry, xp: Any, i: int, gi: Any, pv: Any) -> Any:
    """Undo broadcasting (elementwise primitives), assert the shape, cast to the argument's dtype."""
    if gi.shape != pv.shape:
        if entry.elementwise:
            gi = sum_to_shape(xp, gi, pv.shape)
        if tuple(gi.shape) != tuple(pv.shape):
            raise AssertionError(
                f"arrayrl.autodiff: VJP of {entry.name} (argument {i}) returned shape {tuple(gi.shape)}, "
                f"expected {tuple(pv.shape)}"
            )
    gd = gi.dtype
    if gd is not pv.dtype and gd != pv.dtype:
        gi = xp.astype(gi, pv.dtype)
    return gi


def _seed(roots: list, seeds: list, add: Callable) -> tuple[dict, list]:
    """The walk's start: ``cts[root._idx] = seed`` (seeds of a root given twice are added) and the heap of roots."""
    cts: dict[int, Any] = {}
    heap: list = []
    for r, s in zip(roots, seeds):
        k = r._idx
        if k < 0:
            continue
        prev = cts.get(k)
        if prev is None:
            cts[k] = s
            heap.append((-k, r))
        else:
            cts[k] = add(prev, s)
    heapq.heapify(heap)
    return cts, heap


def backward(roots: list, seeds: list, create_graph: bool = False) -> dict:
    """Propagate cotangents ``seeds`` from the Tensors ``roots`` to the leaves.

    Returns ``{leaf._idx: cotangent}`` for the leaves (nodes without parents) that received a cotangent.
    With ``create_graph`` the walk is :func:`backward_taped` (the cotangents are Tensors recorded on the tape);
    that flag is the only thing the first-order walk checks, once per call.

    The walk is iterative: a max-heap of ``(-position, node)`` for the nodes that hold a cotangent, so a node is
    visited after every node created later (all its consumers: a node's tape position ``_idx`` is larger than its
    parents') and only nodes that received a cotangent are visited (no separate topological sort, and nodes that
    do not lead to the output are never kept alive). Cotangents are kept in a dict keyed by tape position (an int
    attribute: no ``id()`` call) and freed as soon as they are used. They are accumulated out of place (a rule may
    return its incoming ``g`` or a view of it, so no buffer is ever written).
    """
    if create_graph:
        return backward_taped(roots, seeds)[0]
    cts, heap = _seed(roots, seeds, _raw_add)
    leaves: dict[int, Any] = {}
    pop, get = cts.pop, cts.get
    push, pop_heap = heapq.heappush, heapq.heappop
    while heap:
        k, node = pop_heap(heap)
        g = pop(-k)
        parents = node._parents
        if not parents:
            leaves[-k] = g
            continue
        entry = node._entry
        rules = entry.rules
        xp, ans, args, kw = node._xp, node.value, node._args, node._kw
        if rules is not None:  # one rule per argument (nearly every node)
            if kw:
                outs = [rules[i](xp, g, ans, *args, **kw) for i, _ in parents]
            else:
                outs = [rules[i](xp, g, ans, *args) for i, _ in parents]
        elif entry.joint is not None:
            joint = entry.joint(xp, g, ans, tuple([i for i, _ in parents]), *args, **kw)
            outs = [joint[i] for i, _ in parents]
        else:
            outs = [entry.argnum_rule(i, xp, g, ans, args, kw) for i, _ in parents]
        del g
        for (i, p), gi in zip(parents, outs):
            if gi is None:
                continue
            pv = p.value
            gd = gi.dtype
            if gi.shape != pv.shape or (gd is not pv.dtype and gd != pv.dtype):
                gi = _fix_cotangent(entry, xp, i, gi, pv)
            k = p._idx
            prev = get(k)
            if prev is None:
                cts[k] = gi
                push(heap, (-k, p))
            else:
                cts[k] = _raw_add(prev, gi)  # out of place (a large NumPy sum into a pooled buffer)
    return leaves


# ---------------------------------------------------------------------------------------------------------------------
# Second order: the backward walk recorded on the tape


class SecondOrderError(NotImplementedError):
    """A VJP rule that cannot run on taped cotangents (a raw-only kernel) was met by :func:`backward_taped`."""


# id(raw namespace) -> its taped namespace (rules receive it when the cotangent is taped)
_TAPED_BY_BASE: dict[int, Any] = {}


def _taped_xp(base: Any) -> Any:
    ns = _TAPED_BY_BASE.get(id(base))
    if ns is None:
        ns = _TAPED_BY_BASE[id(base)] = taped_namespace(base)
    return ns


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else _constant(x)


def backward_taped(roots: list, seeds: list, stops: Any = (), start: int = 0) -> tuple[dict, bool]:
    """The backward walk with taped cotangents (``create_graph``): differentiable itself (HIPS autograd / JAX).

    The same walk as :func:`backward` (a max-heap on tape positions, cotangents freed once used), except that

    * cotangents are :class:`Tensor` s, and every rule is called with the *taped* namespace over the node's
      backend, the node itself as ``ans`` and the parents' Tensors in place of their raw arguments, so the rules
      written against ``xp`` (and the tape's pooled operators, whose fallbacks are the Python operators) record
      their work on the tape; fused kernels that have a raw NumPy fast path dispatch on the argument types and take
      their generic (taped) composition here;
    * the walk stops at the nodes whose tape position ``_idx`` is in ``stops`` (the leaves of a nested ``grad``: identity nodes of
      an enclosing transformation's Tensors), as at leaves.

    Returns ``({leaf._idx: Tensor cotangent}, outer)``; ``outer`` is True when the recorded cotangents may depend on
    a Tensor created before index ``start`` (an enclosing transformation's leaf or node): the walk met a parent
    older than ``start``, or a stop. A rule that cannot run on Tensors raises :class:`SecondOrderError`.
    """
    cts, heap = _seed(roots, [_as_tensor(s) for s in seeds], operator.add)
    leaves: dict[int, Any] = {}
    outer = bool(stops)
    push, pop_heap = heapq.heappush, heapq.heappop
    while heap:
        k, node = pop_heap(heap)
        k = -k
        g = cts.pop(k)
        parents = node._parents
        if not parents or k in stops:
            leaves[k] = g
            continue
        entry = node._entry
        xp = _taped_xp(node._xp)
        targs = list(node._args)
        for i, p in parents:
            targs[i] = p
            if p._idx < start:
                outer = True
        kw = node._kw
        rules = entry.rules
        try:
            if rules is None and entry.joint is not None:
                needs = tuple([i for i, _ in parents])
                joint = entry.joint(xp, g, node, needs, *targs, **kw)
            outs = []
            for i, p in parents:
                if rules is not None:
                    gi = rules[i](xp, g, node, *targs, **kw)
                elif entry.joint is not None:
                    gi = joint[i]
                else:
                    gi = entry.argnum_rule(i, xp, g, node, tuple(targs), kw)
                outs.append(gi)
        except TypeError as err:
            raise SecondOrderError(
                f"arrayrl.autodiff: the VJP of {entry.name} cannot be differentiated (second order): its rule "
                f"does not run on taped cotangents ({err}); write it against the xp it receives or register a "
                f"differentiable rule"
            ) from err
        for (i, p), gi in zip(parents, outs):
            if gi is None:
                continue
            gi = _as_tensor(gi)
            pv = p.value
            gd = gi.dtype
            if gi.shape != pv.shape or (gd is not pv.dtype and gd != pv.dtype):
                gi = _fix_cotangent(entry, xp, i, gi, pv)
            k = p._idx
            prev = cts.get(k)
            if prev is None:
                cts[k] = gi
                push(heap, (-k, p))
            else:
                cts[k] = prev + gi
        del g
    return leaves, outer


_IDENTITY = _entry("identity")
defvjp(_IDENTITY, lambda xp, g, ans, x: g)


def nested_leaf(t: Tensor) -> Tensor:
    """A leaf for a transformation nested inside another one: an identity node of ``t`` (a Tensor of the
    enclosing tape), where :func:`backward_taped` stops (the inner cotangent), and through which the enclosing
    walk continues to ``t``."""
    n = _tensor_new(Tensor)
    n.value = t.value
    n._idx = next(_counter)
    n._parents = ((0, t),)
    n._entry = _IDENTITY
    n._args = (t.value,)
    n._kw = _NO_KW
    n._xp = t._xp
    return n


def depends_on_older(roots: list, start: int) -> bool:
    """True if a Tensor older than creation index ``start`` (on the tape: ``_idx >= 0``) is reachable from
    ``roots`` through parents (a graph traversal without rules; used off the hot path only)."""
    seen: set[int] = set()
    stack = [r for r in roots if isinstance(r, Tensor) and r._idx >= 0]
    while stack:
        n = stack.pop()
        if n._idx < start:
            return True
        for _, p in n._parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return False


def tape_position() -> int:
    """The creation index the next leaf or node will get (Tensors with a smaller index are older)."""
    return next(_counter)


# ---------------------------------------------------------------------------------------------------------------------
# NumPy accelerators of the VJP rules (the rules in rules.py take them on raw NumPy arrays only; the generic path
# with ``where`` runs everywhere else, and tests/autodiff/test_ad_rule_fastpaths.py checks that both agree)


def _is_nd(a: Any) -> bool:
    """``a`` is a NumPy array (not a NumPy scalar, not a Tensor, not another backend's array)."""
    return type(a) is _ND


def np_zero_half(g: Any, zero: Any, half: Any) -> Any:
    """``where(zero, 0, where(half, g / 2, g))`` on NumPy arrays (``zero``, ``half``: boolean arrays of ``g``'s shape).

    The maximum/minimum cotangent (``zero``: the operand loses, ``half``: a tie). :func:`arrayrl._kernels.zero_where`
    (a fresh array, exact ``+0.0``: a bit mask, or ``np.where`` below its size threshold) then one in-place halving
    masked by ``half``
    (``g * 0.5``, bit-identical to the ``where`` form; ties are rare, so the masked loop is cheap). NaN/inf in ``g``
    where ``zero`` holds do not leak.
    """
    out = _kernels.zero_where(zero, g)
    _np.multiply(out, 0.5, out=out, where=half)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Operator primitives used by Tensor's dunder methods (their rules live in rules.py with the namespace's).

# The raw functions: the operators themselves, except that large NumPy outputs go into pooled buffers (_pool;
# the same ufuncs as the operators call, so the values are the same).
_raw_add = _pool.elementwise(_np.add, operator.add)
_raw_sub = _pool.elementwise(_np.subtract, operator.sub)
_raw_mul = _pool.elementwise(_np.multiply, operator.mul)
_raw_div = _pool.elementwise(_np.true_divide, operator.truediv)
_raw_neg = _pool.elementwise(_np.negative, operator.neg)
_raw_abs = _pool.elementwise(_np.absolute, operator.abs)
# comparisons of the VJP rules (masks of large NumPy arrays are pooled too: 4096 x 64 is 256 KiB of bool)
_raw_lt = _pool.elementwise(_np.less, operator.lt)
_raw_gt = _pool.elementwise(_np.greater, operator.gt)
_raw_eq = _pool.elementwise(_np.equal, operator.eq)
_raw_not = _pool.elementwise(_np.logical_not)

_ADD, _SUB, _MUL, _DIV = (_entry(n, True) for n in ("add", "subtract", "multiply", "divide"))
_add = _make_primitive(_raw_add, _ADD)
_sub = _make_primitive(_raw_sub, _SUB)
_mul = _make_primitive(_raw_mul, _MUL)
_div = _make_primitive(_raw_div, _DIV)
_pow = _make_primitive(operator.pow, _entry("pow", True))  # not pooled: ndarray ** 2 / ** 0.5 have own loops


def _matmul_raw(a, b):
    """``a @ b``; NumPy products go through the BLAS thread policy (:mod:`.tuning`)."""
    if type(a) is _ND and type(b) is _ND:
        return np_matmul(a, b)
    return a @ b


_matmul = _make_primitive(_matmul_raw, _entry("matmul"))
_neg = _make_primitive(_raw_neg, _entry("negative", True))
_abs = _make_primitive(_raw_abs, _entry("abs", True))
_getitem = _make_primitive(operator.getitem, _entry("getitem"))
_matrix_transpose = _make_primitive(lambda x: x.mT, _entry("matrix_transpose"))


def _permute_raw(x, axes):
    return base_namespace(x).permute_dims(x, axes)


_permute_dims = _make_primitive(_permute_raw, _entry("permute_dims"))


def _to_device_raw(x, device):
    return x.to_device(device)


_to_device = _make_primitive(_to_device_raw, _entry("to_device"))


# type(raw array) -> taped namespace (filled lazily by Tensor.__array_namespace__)
_TAPED_BY_TYPE: dict[type, Any] = {}


def taped_namespace(base: Any) -> Any:
    """The taped namespace over the raw namespace ``base`` (one per base; built by :mod:`.namespace`)."""
    from .namespace import taped_namespace as build

    return build(base)
