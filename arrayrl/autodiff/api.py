"""Public transformations: :func:`value_and_grad`, :func:`grad`, :func:`vjp`, :func:`stop_gradient`."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .._backend import backend_name, is_array
from ..tree import tree_flatten, tree_paths, tree_unflatten
from .core import (
    Tensor,
    _constant,
    _new_leaf,
    backward,
    backward_taped,
    base_namespace,
    depends_on_older,
    nested_leaf,
    tape_position,
)

__all__ = ["value_and_grad", "grad", "vjp", "stop_gradient", "hvp"]


def _path_str(argnum: int, path: tuple) -> str:
    return f"args[{argnum}]" + "".join(f"[{p!r}]" for p in path)


def _leaf_error(argnum: int, path: tuple, msg: str) -> TypeError:
    return TypeError(f"{_path_str(argnum, path)}: {msg}")


# (type of leaf, dtype) -> its raw namespace, for leaves already validated as floating arrays (the hot path)
_VALID_LEAF: dict[tuple, Any] = {}


def _check_leaf(leaf: Any) -> Any:
    """The namespace of a valid differentiation leaf, or a str describing what is wrong with it."""
    if isinstance(leaf, Tensor):
        leaf = leaf.value
    if not (is_array(leaf) or _is_numpy_scalar(leaf)):
        return f"expected a floating-point array, got {type(leaf).__name__}"
    ns = base_namespace(leaf)
    if not ns.isdtype(leaf.dtype, "real floating"):
        return f"expected a real floating dtype to differentiate, got {leaf.dtype}"
    try:
        _VALID_LEAF[(type(leaf), leaf.dtype)] = ns
    except TypeError:  # unhashable dtype: no caching
        pass
    return ns


class _LeafError(Exception):
    """Raised inside :func:`_wrap_tree` for the ``k``-th leaf; turned into a TypeError naming the leaf's path."""

    def __init__(self, k: int, msg: str):
        self.k, self.msg = k, msg


def _wrap_tree(tree: Any, state: list) -> Any:
    """``tree`` with every leaf replaced by a fresh leaf Tensor (one pass, no treedef).

    ``state = [base namespace, first leaf index, leaf count]``; leaves must be floating arrays of one backend.
    """
    t = type(tree)
    if t is dict:
        return {k: _wrap_tree(v, state) for k, v in tree.items()}
    if t is list or t is tuple or isinstance(tree, (dict, list, tuple)):
        if isinstance(tree, dict):
            return {k: _wrap_tree(v, state) for k, v in tree.items()}
        out = [_wrap_tree(v, state) for v in tree]
        return out if isinstance(tree, list) else tuple(out)
    if tree is None:
        return None
    k = state[2]
    state[2] = k + 1
    try:
        ns = _VALID_LEAF.get((t, tree.dtype))
    except (AttributeError, TypeError):
        ns = None
    if ns is None:
        ns = _check_leaf(tree)
        if isinstance(ns, str):
            raise _LeafError(k, ns)
        if t is Tensor:  # nested transformation (grad of grad): never on the first-order hot path (a cache miss)
            return _nested(tree, k, ns, state)
    base = state[0]
    if base is None:
        state[0], state[1] = ns, k
    elif ns is not base and backend_name(ns) != backend_name(base):
        raise _LeafError(k, f"mixed array libraries: {{first}} is {backend_name(base)}, {{this}} is {backend_name(ns)}")
    return _new_leaf(tree, ns)


def _nested(tree: Tensor, k: int, ns: Any, state: list) -> Tensor:
    """The leaf for a Tensor argument: an identity node of it when it is on an enclosing tape (a stop of the taped
    walk, recorded in ``state[3]``), a fresh leaf for a constant Tensor."""
    base = state[0]
    if base is None:
        state[0], state[1] = ns, k
    elif ns is not base and backend_name(ns) != backend_name(base):
        raise _LeafError(k, f"mixed array libraries: {{first}} is {backend_name(base)}, {{this}} is {backend_name(ns)}")
    if tree._idx < 0:
        return _new_leaf(tree.value, ns)
    n = nested_leaf(tree)
    state[3].append(n)
    return n


def _make_leaves(args: Sequence[Any], argnums: tuple, fname: str):
    """Wrap the leaves of the differentiated arguments in fresh leaf Tensors; check dtypes and backends.

    Returns the new argument list, ``specs`` (one wrapped tree per argnum) and the state list, whose ``[2]`` is
    the number of leaves made and ``[3]`` the leaves made for Tensors of an enclosing tape (nested
    differentiation; empty otherwise). Errors name the leaf's path
    (``args[0]['layers'][1]``); paths are only computed when an error is raised.
    """
    new_args = list(args)
    specs = []
    # [base namespace, first leaf index, leaf count, nested leaves] (see _wrap_tree)
    state: list[Any] = [None, None, 0, []]
    starts: list[tuple[int, int]] = []  # (leaf count before args[i], i)
    for i in argnums:
        if i >= len(args) or i < -len(args):
            raise ValueError(f"{fname}: argnums contains {i} but the function was called with {len(args)} arguments")
        starts.append((state[2], i))
        try:
            wrapped = _wrap_tree(args[i], state)
        except _LeafError as err:
            here = _path_str(i, _leaf_path(args[i], None, err.k - starts[-1][0]))
            if "{first}" in err.msg:
                k0 = state[1]
                s0, i0 = [(s, j) for s, j in starts if s <= k0][-1]
                first = _path_str(i0, _leaf_path(args[i0], None, k0 - s0))
                raise TypeError(f"{fname}: " + err.msg.format(first=first, this=here)) from None
            raise TypeError(f"{here}: {err.msg}") from None
        new_args[i] = wrapped
        specs.append(wrapped)
    return new_args, specs, state


def _leaf_path(tree: Any, treedef: Any, k: int) -> tuple:
    """Path of the ``k``-th leaf of ``tree`` (only computed for error messages)."""
    paths = tree_paths(tree)
    if not paths and k == 0:
        return ()
    return paths[k][0] if k < len(paths) else ()


def _is_numpy_scalar(x: Any) -> bool:
    """NumPy scalars (``np.float64(1.0)``, what NumPy reductions return) are accepted as 0-d arrays."""
    return type(x) not in (bool, int, float) and hasattr(x, "dtype") and hasattr(x, "shape")


def _grad_tree(wrapped: Any, cts: dict) -> Any:
    """The gradient tree: the structure of ``wrapped`` with each leaf Tensor replaced by its cotangent (zeros if it
    received none)."""
    t = type(wrapped)
    if t is Tensor:
        g = cts.get(wrapped._idx)
        leaf = wrapped.value
        if g is None:
            return base_namespace(leaf).zeros_like(leaf)
        if type(g) is not type(leaf):  # NumPy returns scalars for 0-d results
            return base_namespace(leaf).asarray(g)
        return g
    if t is dict:
        return {k: _grad_tree(v, cts) for k, v in wrapped.items()}
    if t is list:
        return [_grad_tree(v, cts) for v in wrapped]
    if t is tuple:
        return tuple(_grad_tree(v, cts) for v in wrapped)
    return wrapped  # None


def _grads_from(specs, cts: dict) -> list:
    return [_grad_tree(w, cts) for w in specs]


def _first_idx(specs) -> int:
    """The creation index of this call's first leaf (its leaves are made first, so older Tensors are foreign)."""
    for leaf in tree_flatten(specs)[0]:
        if isinstance(leaf, Tensor):
            return leaf._idx
    return 0


def _grad_tree_taped(wrapped: Any, cts: dict, outer: bool) -> Any:
    """:func:`_grad_tree` for the taped walk: Tensor cotangents when ``outer`` (an enclosing transformation can
    differentiate them), their raw values otherwise (nothing outside this call is on their tape)."""
    t = type(wrapped)
    if t is Tensor:
        g = cts.get(wrapped._idx)
        leaf = wrapped.value
        if g is None:
            z = base_namespace(leaf).zeros_like(leaf)
            return _constant(z) if outer else z
        if outer:
            return g
        g = g.value
        if type(g) is not type(leaf):
            return base_namespace(leaf).asarray(g)
        return g
    if t is dict:
        return {k: _grad_tree_taped(v, cts, outer) for k, v in wrapped.items()}
    if t is list:
        return [_grad_tree_taped(v, cts, outer) for v in wrapped]
    if t is tuple:
        return tuple(_grad_tree_taped(v, cts, outer) for v in wrapped)
    return wrapped


def _unwrap_tree(tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return tree.value
    if isinstance(tree, dict):
        return {k: _unwrap_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unwrap_tree(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(_unwrap_tree(v) for v in tree)
    return tree


def _call(f: Callable, fname: str, args: list, kwargs: dict) -> Any:
    """``f(*args, **kwargs)``; a backend operator refusing a Tensor right operand is re-raised with the fix.

    (array_api_strict's refusal is lifted by :func:`~arrayrl.autodiff.core.defer_operators_to_tensor`; this message
    is for a strict version whose internals that function does not know.)
    """
    try:
        return f(*args, **kwargs)
    except TypeError as err:
        msg = str(err)
        if "Expected Array or Python scalar" in msg and "Tensor" in msg:
            raise TypeError(
                f"{fname}: {msg}. A raw array met a Tensor on the right of an operator and its backend refuses "
                f"foreign operands instead of deferring to the Tensor: put the Tensor on the left or call the "
                f"namespace function (xp.matmul(x, w), xp.add(x, w))"
            ) from err
        raise


def _norm_argnums(argnums: int | Sequence[int]) -> tuple[tuple, bool]:
    if isinstance(argnums, int):
        return (argnums,), True
    t = tuple(argnums)
    if not t or not all(isinstance(a, int) for a in t):
        raise TypeError(f"argnums: expected an int or a non-empty tuple of ints, got {argnums!r}")
    return t, False


def value_and_grad(
    f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, create_graph: bool = False
) -> Callable:
    """Return ``g(*args, **kwargs) -> (value, grads)`` computing ``f`` and its gradient in one pass.

    Args:
        f: a function returning a 0-d floating array (or ``(array, aux)`` with ``has_aux``), written with array-API
            calls on ``namespace_of(...)`` of its inputs.
        argnums: the positional argument(s) to differentiate. Each may be an array or a pytree (nested
            dict/list/tuple) of floating arrays of one backend.
        has_aux: ``f`` returns ``(value, aux)``; then ``g`` returns ``((value, aux), grads)`` (JAX's convention), with
            any Tensor in ``aux`` replaced by its raw value.
        create_graph: record the backward pass on the tape (second order, torch's ``create_graph``): the rules run
            on taped cotangents, so an enclosing :func:`value_and_grad` / :func:`grad` can differentiate the
            returned value and gradients with respect to its own arguments (e.g. parameters that ``f`` closes
            over: a gradient penalty). Implied when a differentiated argument is itself a Tensor of an enclosing
            tape (``grad(grad(f))``, :func:`hvp`).

    Returns:
        ``value`` as a raw 0-d array; ``grads`` as raw arrays with the nesting of the argument (a tuple of them when
        ``argnums`` is a tuple). The gradient of an argument ``f`` does not use is zeros of its shape. In the taped
        mode (``create_graph`` or nested), the value and gradients are :class:`Tensor` s when they may depend on a
        Tensor of an enclosing tape (an argument, or a Tensor ``f`` closes over), raw arrays otherwise.

    Raises:
        TypeError: a differentiated leaf is not a floating array (the message names its path), or the leaves mix
            backends, or ``f`` returns something else than an array.
        ValueError: ``f``'s value is not 0-d.
    """
    nums, single = _norm_argnums(argnums)
    fname = getattr(f, "__name__", "f")

    def value_and_grad_f(*args, **kwargs):
        start = tape_position() if create_graph else 0
        new_args, specs, state = _make_leaves(args, nums, "value_and_grad")
        stops = state[3]
        taped = create_graph or stops
        out = _call(f, fname, new_args, kwargs)
        aux = None
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"value_and_grad(has_aux=True): {fname} must return a pair (value, aux)")
            out, aux = out
            if not taped:
                aux = _unwrap_tree(aux)
        if isinstance(out, Tensor):
            raw = out.value
        elif is_array(out) or _is_numpy_scalar(out):
            raw = out
        else:
            raise TypeError(f"value_and_grad: {fname} must return a 0-d array, got {type(out).__name__}")
        if tuple(raw.shape) != ():
            raise ValueError(
                f"value_and_grad: {fname} must return a scalar (0-d array), got shape {tuple(raw.shape)}; "
                f"reduce it (xp.sum / xp.mean) or use vjp"
            )
        if taped:
            return _taped_result(out, raw, specs, stops, start, aux, has_aux, single)
        if isinstance(out, Tensor) and out._idx >= 0:
            xp = base_namespace(raw)
            cts = backward([out], [xp.ones_like(raw)])
            if len(cts) > state[2] and depends_on_older([out], _first_idx(specs)):
                # the walk reached leaves that are not this call's, and some are older than this call: f depends on
                # Tensors of an enclosing transformation (an argument not in argnums, a closure), which must see
                # this gradient as a function of them: the same tape walked again, recorded (one comparison on the
                # first-order path; younger foreign leaves are those of finished nested calls inside f)
                return _taped_result(out, raw, specs, stops, 0, aux, has_aux, single, outer=True)
        else:
            cts = {}
        grads = _grads_from(specs, cts)
        g = grads[0] if single else tuple(grads)
        return ((raw, aux), g) if has_aux else (raw, g)

    value_and_grad_f.__name__ = f"value_and_grad({fname})"
    value_and_grad_f.__doc__ = f.__doc__
    return value_and_grad_f


def _taped_result(out, raw, specs, stops, start, aux, has_aux, single, outer=False):
    """The end of :func:`value_and_grad` in the taped mode (see there)."""
    if isinstance(out, Tensor) and out._idx >= 0:
        xp = base_namespace(raw)
        cts, found = backward_taped([out], [xp.ones_like(raw)], {n._idx for n in stops}, start)
        outer = outer or found
    else:
        cts, outer = {}, outer or bool(stops)
    grads = [_grad_tree_taped(w, cts, outer) for w in specs]
    g = grads[0] if single else tuple(grads)
    value = out if outer and isinstance(out, Tensor) else raw
    if has_aux:
        return (value, aux if outer else _unwrap_tree(aux)), g
    return value, g


def grad(
    f: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, create_graph: bool = False
) -> Callable:
    """Like :func:`value_and_grad` but returns only the gradient (``(grads, aux)`` with ``has_aux``).

    Nests: ``grad(grad(f))`` is the second derivative of a scalar function (see ``create_graph``)."""
    vg = value_and_grad(f, argnums, has_aux, create_graph)

    def grad_f(*args, **kwargs):
        v, g = vg(*args, **kwargs)
        return (g, v[1]) if has_aux else g

    grad_f.__name__ = f"grad({getattr(f, '__name__', 'f')})"
    return grad_f


def vjp(f: Callable, *args: Any, create_graph: bool = False) -> tuple[Any, Callable]:
    """Evaluate ``f(*args)`` and return ``(out, vjp_fn)``; ``vjp_fn(cotangent)`` returns one gradient per argument.

    ``out`` may be an array or a pytree of arrays (returned raw); ``cotangent`` must have the same structure and
    shapes. ``vjp_fn`` returns a tuple with one entry per argument, each with the argument's nesting. ``vjp_fn`` can
    be called several times (the tape is kept alive by the closure).

    ``create_graph`` (implied for Tensor arguments of an enclosing tape, or a cotangent on one): ``vjp_fn``'s walk
    is recorded on the tape, as in :func:`value_and_grad`; then ``out`` keeps its Tensors too.
    """
    nums = tuple(range(len(args)))
    start = tape_position() if create_graph else 0
    new_args, specs, state = _make_leaves(args, nums, "vjp")
    stops = state[3]
    out = _call(f, getattr(f, "__name__", "f"), new_args, {})
    out_leaves, out_def = tree_flatten(out)
    if stops:
        raw_out = out
    else:
        raw_out = tree_unflatten(out_def, [o.value if isinstance(o, Tensor) else o for o in out_leaves])
    stop_ids = {n._idx for n in stops}

    def vjp_fn(cotangent: Any) -> tuple:
        ct_leaves, ct_def = tree_flatten(cotangent)
        if ct_def != out_def:
            raise ValueError(f"vjp_fn: cotangent has structure {ct_def!r}, expected {out_def!r} (the output's)")
        roots, seeds = [], []
        taped = create_graph or bool(stops) or any(isinstance(c, Tensor) and c._idx >= 0 for c in ct_leaves)
        if taped:
            return _vjp_taped(out_leaves, ct_leaves, specs, stop_ids, start)
        for k, (o, c) in enumerate(zip(out_leaves, ct_leaves)):
            if isinstance(c, Tensor):
                c = c.value
            if tuple(c.shape) != tuple(o.shape):
                raise ValueError(f"vjp_fn: cotangent leaf {k}: expected shape {tuple(o.shape)}, got {tuple(c.shape)}")
            if isinstance(o, Tensor) and o._idx >= 0:
                roots.append(o)
                seeds.append(c)
        cts = backward(roots, seeds) if roots else {}
        if len(cts) > state[2] and depends_on_older(roots, _first_idx(specs)):  # see value_and_grad
            return _vjp_taped(out_leaves, ct_leaves, specs, stop_ids, 0, outer=True)
        return tuple(_grads_from(specs, cts))

    return raw_out, vjp_fn


def _vjp_taped(out_leaves, ct_leaves, specs, stop_ids, start, outer=False) -> tuple:
    roots, seeds = [], []
    for k, (o, c) in enumerate(zip(out_leaves, ct_leaves)):
        if tuple(c.shape) != tuple(o.shape):
            raise ValueError(f"vjp_fn: cotangent leaf {k}: expected shape {tuple(o.shape)}, got {tuple(c.shape)}")
        if isinstance(o, Tensor) and o._idx >= 0:
            roots.append(o)
            seeds.append(c)
    cts, found = backward_taped(roots, seeds, stop_ids, start) if roots else ({}, bool(stop_ids))
    outer = outer or found or any(isinstance(c, Tensor) and c._idx >= 0 for c in ct_leaves)
    return tuple(_grad_tree_taped(w, cts, outer) for w in specs)


def hvp(f: Callable, x: Any, v: Any, *args: Any) -> Any:
    """The Hessian-vector product ``H v`` of a scalar ``f(x, *args)`` at ``x`` (a pytree), without forward mode:
    the gradient of ``<grad f(x), v>`` (reverse over reverse; the inner backward pass is recorded on the tape).

    ``v`` has ``x``'s structure and shapes; the result too (raw arrays). ``args`` are constants."""
    v_leaves, v_def = tree_flatten(v)
    x_def = tree_flatten(x)[1]
    if v_def != x_def:
        raise ValueError(f"hvp: v has structure {v_def!r}, expected {x_def!r} (x's)")

    def inner(xx):
        g_leaves = tree_flatten(grad(f)(xx, *args))[0]
        total = None
        for gl, vl in zip(g_leaves, v_leaves):
            xp = gl.__array_namespace__() if isinstance(gl, Tensor) else base_namespace(gl)
            term = xp.sum(gl * vl)
            total = term if total is None else total + term
        return total

    inner.__name__ = f"<grad {getattr(f, '__name__', 'f')}, v>"
    return grad(inner)(x)


def stop_gradient(x: Any) -> Any:
    """``x`` with every Tensor replaced by its raw value (a constant for the tape); works on pytrees."""
    return _unwrap_tree(x)
