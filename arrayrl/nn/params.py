"""Parameters as pytrees: nested ``dict``s of arrays, and the helpers to handle them.

A parameter tree is a nested ``dict`` (keys are strings) whose leaves are backend arrays (or taped
:class:`arrayrl.autodiff.Tensor`\\ s inside a differentiated function). The key layout of arrayrl's networks is the
``state_dict`` layout of the equivalent torch module (``{"0": {"weight": W, "bias": b}, "2": {...}}`` for an MLP), so
weights copy 1:1 (:func:`arrayrl.interop.params_from_torch`).

Every helper returns a new tree; none writes into its inputs. Ensembles are parameter trees whose every leaf carries
a leading member axis ``[N, ...]`` (:func:`stack`/:func:`unstack`).

Initialisers reproduce the *distribution* of torch's defaults (not its random stream):

* :func:`uniform_fan_in`: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, which is what ``torch.nn.Linear.reset_parameters``
  draws for both weight (``kaiming_uniform_(a=sqrt(5))``: gain ``sqrt(2/(1+5))``, bound ``gain*sqrt(3/fan_in)``) and
  bias (bound ``1/sqrt(fan_in)``).
* :func:`orthogonal`: ``torch.nn.init.orthogonal_`` (Saxe et al. 2014), and :func:`orthogonal_layers`, CleanRL's
  ``layer_init`` (orthogonal weights with a gain per layer, constant biases) over the layers of a tree.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .._backend import base_of, device_of, is_taped, namespace_of
from ..random import _index, as_generator
from ..tree import tree_flatten, tree_leaves, tree_map, tree_paths, tree_unflatten

__all__ = [
    "params_map",
    "params_zip",
    "flatten_params",
    "unflatten_params",
    "count_params",
    "copy_params",
    "cast_params",
    "to_device",
    "soft_update",
    "hard_update",
    "stack",
    "unstack",
    "check_same_structure",
    "uniform_fan_in",
    "orthogonal",
    "orthogonal_layers",
    "linear_params",
]


def params_map(f: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``f`` applied leafwise to ``tree`` (and to the same-structured trees in ``rest``); a new tree."""
    return tree_map(f, tree, *rest)


def params_zip(*trees: Any) -> Any:
    """One tree whose leaves are tuples ``(leaf_of_tree_0, leaf_of_tree_1, ...)``.

    The trees must have the same structure (``ValueError`` otherwise). Note that the result's leaves are tuples, which
    the tree helpers treat as containers: use it for iteration (``tree_leaves(params_zip(a, b))``), not as parameters.
    """
    check_same_structure(*trees)
    leaves = [tree_flatten(t)[0] for t in trees]
    treedef = tree_flatten(trees[0])[1]
    return tree_unflatten(treedef, [tuple(xs) for xs in zip(*leaves)])


def check_same_structure(*trees: Any, names: tuple[str, ...] | None = None) -> None:
    """Raise ``ValueError`` unless all ``trees`` have the same keys and nesting (names used in the message)."""
    if not trees:
        return
    names = names or tuple(f"tree {i}" for i in range(len(trees)))
    ref = tree_flatten(trees[0])[1]
    for name, t in zip(names[1:], trees[1:]):
        d = tree_flatten(t)[1]
        if d != ref:
            raise ValueError(f"{name}: expected the structure of {names[0]} {ref!r}, got {d!r}")


def _path_name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _format_path(name: str, path: tuple) -> str:
    """``("2", "bias")`` under ``"params"`` -> ``"params['2']['bias']"`` (Python indexing syntax)."""
    return name + "".join(f"[{k!r}]" for k in path)


def _shape_str(shape: Any) -> str:
    shape = tuple(int(s) for s in shape)
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _explain_difference(tree: Any, ref: Any, name: str, ref_name: str, path: tuple = ()) -> None:
    """Raise ``ValueError`` describing the first place (depth first) where ``tree`` differs from ``ref`` in
    structure or leaf shape. Returns normally when they agree."""
    where, ref_where = _format_path(name, path), _format_path(ref_name, path)
    kinds = ((dict, "a dict"), (list, "a list"), (tuple, "a tuple"), (type(None), "None"))
    for cls, what in kinds:
        if isinstance(ref, cls) != isinstance(tree, cls):
            got = next((w for c, w in kinds if isinstance(tree, c)), f"a leaf of type {type(tree).__name__}")
            want = what if isinstance(ref, cls) else "a leaf (array)"
            raise ValueError(f"{where}: expected {want} (as {ref_where}), got {got}")
    if isinstance(ref, dict):
        if list(tree) != list(ref):
            missing = [k for k in ref if k not in tree]
            extra = [k for k in tree if k not in ref]
            detail = f"missing {missing}, unexpected {extra}" if missing or extra else f"order {list(tree)}"
            raise ValueError(f"{where}: expected the keys {list(ref)} of {ref_where}, got {detail}")
        for k in ref:
            _explain_difference(tree[k], ref[k], name, ref_name, path + (k,))
    elif isinstance(ref, (list, tuple)):
        if len(tree) != len(ref):
            raise ValueError(f"{where}: expected {len(ref)} entries (as {ref_where}), got {len(tree)}")
        for i, (t, r) in enumerate(zip(tree, ref)):
            _explain_difference(t, r, name, ref_name, path + (i,))
    elif ref is not None:
        shape = getattr(tree, "shape", None)
        if shape is None:
            raise ValueError(f"{where}: expected an array (as {ref_where}), got {type(tree).__name__}")
        if tuple(shape) != tuple(ref.shape):
            raise ValueError(
                f"{where}: expected shape {_shape_str(ref.shape)} (that of {ref_where}), got {_shape_str(shape)}"
            )


def _leaves_like(tree: Any, ref: Any, name: str, ref_name: str, ref_flat: tuple | None = None) -> list:
    """The leaves of ``tree``, checked to have the structure (keys in the same order) and leaf shapes of ``ref``.

    ``ValueError`` names the path of the first difference (``"grads['layer']['bias']: expected shape (4,) (that of
    params['layer']['bias']), got (1,)"``). Shapes only, never data. ``ref_flat`` is ``tree_flatten(ref)`` when the
    caller already has it. The fast path (trees agree) is one flatten, one structure comparison and one shape
    comparison per leaf.
    """
    leaves, treedef = tree_flatten(tree)
    ref_leaves, ref_def = ref_flat if ref_flat is not None else tree_flatten(ref)
    if treedef == ref_def:
        try:
            if all(tuple(a.shape) == tuple(b.shape) for a, b in zip(leaves, ref_leaves)):
                return leaves
        except AttributeError:  # a leaf that is not an array: described below
            pass
    _explain_difference(tree, ref, name, ref_name)
    raise ValueError(f"{name}: expected the structure of {ref_name} {ref_def!r}, got {treedef!r}")  # pragma: no cover


def flatten_params(tree: Any) -> dict[str, Any]:
    """``{"0": {"weight": W}}`` -> ``{"0.weight": W}`` (torch ``state_dict`` naming)."""
    return {_path_name(p): leaf for p, leaf in tree_paths(tree)}


def unflatten_params(flat: dict[str, Any]) -> dict:
    """Inverse of :func:`flatten_params` (dotted names -> nested dicts, insertion order kept)."""
    out: dict = {}
    for name, leaf in flat.items():
        parts = name.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"unflatten_params: {name!r} nests under a leaf {p!r}")
            node = nxt
        if parts[-1] in node:
            raise ValueError(f"unflatten_params: duplicate parameter name {name!r}")
        node[parts[-1]] = leaf
    return out


def count_params(tree: Any) -> int:
    """Total number of scalars in the tree."""
    n = 0
    for leaf in tree_leaves(tree):
        k = 1
        for s in leaf.shape:
            k *= int(s)
        n += k
    return n


def copy_params(tree: Any) -> Any:
    """A deep copy: new arrays with the same values, namespace, dtype and device (taped leaves lose their tape)."""

    def _copy(x: Any) -> Any:
        if is_taped(x):
            x = x.value
        xp = namespace_of(x)
        return xp.asarray(x, copy=True)

    return tree_map(_copy, tree)


def cast_params(tree: Any, dtype: Any) -> Any:
    """Floating leaves cast to the floating ``dtype`` (integer/bool leaves are kept); ``TypeError`` for a
    non-floating ``dtype`` (which would silently truncate the parameters)."""

    def _cast(x: Any) -> Any:
        xp = namespace_of(x)
        base = base_of(xp)
        if base.isdtype(x.dtype, "real floating") and x.dtype != dtype:
            try:
                floating = base.isdtype(dtype, "real floating")
            except (TypeError, ValueError):
                floating = False
            if not floating:
                raise TypeError(f"dtype: expected a real floating dtype of the parameters' namespace, got {dtype!r}")
            return xp.astype(x, dtype)
        return x

    return tree_map(_cast, tree)


def to_device(tree: Any, device: Any) -> Any:
    """Every leaf moved to ``device`` of its own library (``x.to_device``); use :mod:`arrayrl.interop` to change
    library."""

    def _move(x: Any) -> Any:
        return x if device_of(x) == device else x.to_device(device)

    return tree_map(_move, tree)


def _check_pair(target: Any, source: Any) -> None:
    _leaves_like(source, target, "source", "target")


def soft_update(target: Any, source: Any, tau: float) -> Any:
    """Polyak averaging: returns ``(1 - tau) * target + tau * source`` leafwise (TorchRL ``SoftUpdate`` with
    ``tau = 1 - eps``); the inputs are left unchanged.

    TorchRL computes ``target.lerp_(source, tau)``; this uses the same ``lerp`` rounding (``t + tau * (s - t)`` for
    ``tau < 0.5``, ``s - (s - t) * (1 - tau)`` otherwise, as ``torch.lerp``).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau: expected a value in [0, 1], got {tau}")
    _check_pair(target, source)

    def _lerp(t: Any, s: Any) -> Any:
        if tau < 0.5:
            return t + tau * (s - t)
        return s - (s - t) * (1.0 - tau)

    return tree_map(_lerp, target, source)


def hard_update(target: Any, source: Any) -> Any:
    """A copy of ``source`` checked to have ``target``'s structure and shapes (TorchRL ``HardUpdate``'s copy)."""
    _check_pair(target, source)
    return copy_params(source)


def stack(trees: list) -> Any:
    """Stack same-structured trees into one ensemble tree (every leaf gets a new leading member axis ``[N, ...]``)."""
    if not trees:
        raise ValueError("trees: expected at least one parameter tree, got none")
    if not isinstance(trees, (list, tuple)):
        raise TypeError(f"trees: expected a list of parameter trees, got {type(trees).__name__}")
    for i, t in enumerate(trees[1:], start=1):
        _leaves_like(t, trees[0], f"trees[{i}]", "trees[0]")

    def _stack(*xs: Any) -> Any:
        xp = namespace_of(*xs)
        return xp.stack(list(xs), axis=0)

    return tree_map(_stack, trees[0], *trees[1:])


def unstack(tree: Any) -> list:
    """Inverse of :func:`stack` along axis 0: a list of ``N`` trees."""
    leaves, treedef = tree_flatten(tree)
    if not leaves:
        return []
    n = leaves[0].shape[0]
    for (path, leaf) in tree_paths(tree):
        if leaf.ndim == 0 or leaf.shape[0] != n:
            raise ValueError(f"{_path_name(path)}: expected a leading ensemble axis of size {n}, got {tuple(leaf.shape)}")
    return [tree_unflatten(treedef, [leaf[i, ...] for leaf in leaves]) for i in range(n)]


# ------------------------------------------------------------------------------------------------ initialisers
def uniform_fan_in(generator: Any, shape: tuple, fan_in: int, dtype: Any = None) -> Any:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` draws of ``shape`` from ``generator`` (torch ``nn.Linear`` default).

    ``fan_in == 0`` gives zeros' bound 0 (torch leaves the bias at its uninitialised value in that case; arrayrl
    returns zeros).
    """
    fan_in = _index(fan_in, "fan_in")
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return as_generator(generator).uniform(shape, -bound, bound, dtype)


def orthogonal(generator: Any, shape: tuple, gain: float = 1.0, dtype: Any = None) -> Any:
    """A (semi-)orthogonal matrix of ``shape`` times ``gain``: the distribution of ``torch.nn.init.orthogonal_``.

    With ``rows = shape[0]`` and ``cols = prod(shape[1:])``, draw ``A ~ N(0, 1)`` of ``[rows, cols]``, take the
    tall orientation ``M = A`` (``rows >= cols``) or ``A^T``, factor ``M = Q R`` (reduced QR, ``xp.linalg.qr``),
    fix the signs ``Q <- Q * sign(diag(R))`` (which makes ``Q`` Haar-distributed), transpose back if needed and
    reshape to ``shape``. So ``W W^T = gain^2 I_rows`` for a wide matrix, ``W^T W = gain^2 I_cols`` for a tall one
    (both for a square one).

    Args:
        generator: an :class:`arrayrl.random.Generator` (its namespace and device decide those of the result);
            the namespace needs the array API's ``linalg`` extension.
        shape: at least 2 dimensions (as torch; trailing dimensions are flattened into ``cols``).
        gain: the scale (CleanRL: ``sqrt(2)`` for ReLU/tanh hidden layers, ``0.01`` for a policy head).
        dtype: floating dtype (default: the namespace's default float); the QR runs in it.
    """
    generator = as_generator(generator)
    if isinstance(shape, int) or not hasattr(shape, "__len__") or len(shape) < 2:
        raise ValueError(f"shape: orthogonal needs at least 2 dimensions, got {shape!r}")
    shape = tuple(_index(s, f"shape[{i}]") for i, s in enumerate(shape))
    gain = float(gain)
    if not math.isfinite(gain):
        raise ValueError(f"gain: expected a finite number, got {gain}")
    rows = shape[0]
    cols = math.prod(shape[1:])
    a = generator.normal((rows, cols), dtype)
    xp = namespace_of(a)
    if rows == 0 or cols == 0:
        return xp.reshape(a, shape)
    wide = rows < cols
    q, r = xp.linalg.qr(a.mT if wide else a)  # M [max, min] = Q [max, min] R [min, min]
    q = q * xp.sign(xp.linalg.diagonal(r))  # scale column j by sign(R_jj)
    w = q.mT if wide else q
    return xp.reshape(w * gain, shape)


def orthogonal_layers(generator: Any, params: dict, gains: Any, bias_const: float = 0.0) -> dict:
    """CleanRL's ``layer_init`` on every linear layer of ``params``: a new tree with each ``weight``
    :func:`orthogonal` (``gains[i]`` for the ``i``-th layer, in the tree's key order; a number is used for all) and
    each ``bias`` filled with ``bias_const``. Dtypes are kept; the weights come from ``generator``'s namespace and
    device (use the generator the network was built with).

    ``params`` is a tree of linear layers ``{key: {"weight": [out, in], "bias": [out]}}`` (an :class:`MLP`'s) or one
    layer ``{"weight", "bias"}``.

    Example (CleanRL's PPO actor, 64 x 64 tanh)::

        actor.params = orthogonal_layers(gen, actor.params, [sqrt(2), sqrt(2), 0.01])
    """
    generator = as_generator(generator)
    single = isinstance(params, dict) and "weight" in params
    layers = {"": params} if single else params
    if not isinstance(layers, dict) or not all(isinstance(v, dict) and "weight" in v for v in layers.values()):
        raise ValueError("params: expected a linear layer {'weight', 'bias'} or a dict of them (an MLP's tree)")
    gains_list = [gains] * len(layers) if isinstance(gains, (int, float)) else list(gains)
    if len(gains_list) != len(layers):
        raise ValueError(f"gains: expected one gain per layer ({len(layers)}), got {len(gains_list)}")
    out = {}
    for (key, layer), gain in zip(layers.items(), gains_list):
        w = layer["weight"]
        new = {"weight": orthogonal(generator, tuple(w.shape), gain, w.dtype)}
        if "bias" in layer:
            b = layer["bias"]
            new["bias"] = namespace_of(b).full(tuple(b.shape), float(bias_const), dtype=b.dtype, device=device_of(b))
        out[key] = new
    return out[""] if single else out


def linear_params(
    generator: Any, in_features: int, out_features: int, *, bias: bool = True, dtype: Any = None
) -> dict:
    """Parameters of one linear layer, torch layout: ``{"weight": [out, in], "bias": [out]}`` (``bias`` omitted if
    ``bias=False``), both ``U(-1/sqrt(in), 1/sqrt(in))`` as ``torch.nn.Linear``. Sizes are integer-likes ``>= 0``;
    ``generator`` goes through :func:`arrayrl.random.as_generator`."""
    in_features, out_features = _index(in_features, "in_features"), _index(out_features, "out_features")
    generator = as_generator(generator)
    p = {"weight": uniform_fan_in(generator, (out_features, in_features), in_features, dtype)}
    if bias:
        p["bias"] = uniform_fan_in(generator, (out_features,), in_features, dtype)
    return p
