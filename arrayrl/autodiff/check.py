"""Gradient checking against central finite differences (usable by users on their own functions)."""

from __future__ import annotations

from typing import Any, Callable

from ..random import Generator
from ..tree import tree_flatten, tree_paths, tree_unflatten
from .api import vjp
from .core import base_namespace

__all__ = ["check_grads"]


def _phi(f, args, v_leaves, xp) -> float:
    out_leaves, _ = tree_flatten(f(*args))
    return sum(float(xp.sum(o * v)) for o, v in zip(out_leaves, v_leaves))


def check_grads(
    f: Callable,
    args: Any,
    *,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    max_elements: int = 256,
    n_directions: int = 3,
) -> None:
    """Check the reverse-mode gradient of ``f`` at ``args`` against central finite differences.

    A random covector ``v`` (shaped like ``f``'s output) reduces ``f`` to ``phi(x) = <v, f(x)>``. Then:

    * for each argument leaf with at most ``max_elements`` elements, every component of ``vjp(v)`` is compared with
      ``(phi(x + eps e_i) - phi(x - eps e_i)) / (2 eps)``;
    * larger leaves are checked along ``n_directions`` random directions ``d``: ``<vjp(v), d>`` against
      ``(phi(x + eps d) - phi(x - eps d)) / (2 eps)``.

    Use float64 (float32 finite differences are only good to ~1e-3).

    Args:
        f: function of the arrays/pytrees in ``args`` returning an array or a pytree of arrays.
        args: a tuple of arguments (a single array is treated as ``(array,)``). All are differentiated.
        eps: the finite-difference step (default 1e-6 in float64, 1e-3 in float32).
        rtol, atol: tolerances (defaults 1e-5/1e-6 in float64, 2e-2/2e-3 in float32).
        seed: seed of the covector and directions.

    Raises:
        AssertionError: with the largest error, the argument path and the index where it occurs.
    """
    if not isinstance(args, tuple):
        args = (args,)
    out, vjp_fn = vjp(f, *args)
    out_leaves, out_def = tree_flatten(out)
    if not out_leaves:
        raise ValueError("check_grads: f returned no array")
    xp = base_namespace(out_leaves[0])
    f32 = "float32" in str(out_leaves[0].dtype)
    eps = eps if eps is not None else (1e-3 if f32 else 1e-6)
    rtol = rtol if rtol is not None else (2e-2 if f32 else 1e-5)
    atol = atol if atol is not None else (2e-3 if f32 else 1e-6)
    gen = Generator(seed, xp=xp, device=getattr(out_leaves[0], "device", None))
    v_leaves = [gen.normal(tuple(o.shape), dtype=o.dtype) for o in out_leaves]
    grads = vjp_fn(tree_unflatten(out_def, v_leaves))

    # (largest error, (argnum, path, element index) or ("direction", j)); failures: (error, argnum or "direction",
    # path or direction index, element index or None, reverse mode, finite differences)
    worst: tuple[float, tuple[Any, ...] | None] = (0.0, None)
    failures: list[tuple[float, int | str, Any, int | None, float, float]] = []
    big = []  # (argnum, path, leaf index) of leaves checked by directions
    flat_args = [tree_flatten(a) for a in args]

    def with_leaf(argnum, k, new_leaf):
        leaves, td = flat_args[argnum]
        leaves = list(leaves)
        leaves[k] = new_leaf
        new_args = list(args)
        new_args[argnum] = tree_unflatten(td, leaves)
        return new_args

    for argnum, a in enumerate(args):
        leaves, td = flat_args[argnum]
        paths = [()] if td.kind == "leaf" else [p for p, _ in tree_paths(a)]
        g_leaves, _ = tree_flatten(grads[argnum])
        for k, (path, x, g) in enumerate(zip(paths, leaves, g_leaves)):
            n = 1
            for s in x.shape:
                n *= s
            if n > max_elements:
                big.append((argnum, k, path, x, g))
                continue
            lx = base_namespace(x)
            ar = lx.reshape(lx.arange(n, device=x.device), tuple(x.shape))
            gflat = lx.reshape(g, (n,))
            for i in range(n):
                e = lx.where(ar == i, lx.asarray(eps, dtype=x.dtype, device=x.device), lx.zeros_like(x))
                fd = (_phi(f, with_leaf(argnum, k, x + e), v_leaves, xp) - _phi(f, with_leaf(argnum, k, x - e), v_leaves, xp)) / (
                    2 * eps
                )
                ad = float(gflat[i])
                err = abs(ad - fd)
                if err > worst[0]:
                    worst = (err, (argnum, path, i))
                if not err <= atol + rtol * abs(fd):
                    failures.append((err, argnum, path, i, ad, fd))

    if big:
        for j in range(n_directions):
            dirs = [gen.normal(tuple(x.shape), dtype=x.dtype) for (_, _, _, x, _) in big]
            ad = sum(float(base_namespace(g).sum(g * d)) for (_, _, _, _, g), d in zip(big, dirs))

            def shifted(sign: float) -> list[Any]:
                new_args = list(args)
                per_arg: dict[int, list] = {}
                for (argnum, k, _, x, _), d in zip(big, dirs):
                    per_arg.setdefault(argnum, list(flat_args[argnum][0]))[k] = x + sign * eps * d
                for argnum, leaves in per_arg.items():
                    new_args[argnum] = tree_unflatten(flat_args[argnum][1], leaves)
                return new_args

            fd = (_phi(f, shifted(1.0), v_leaves, xp) - _phi(f, shifted(-1.0), v_leaves, xp)) / (2 * eps)
            err = abs(ad - fd)
            if err > worst[0]:
                worst = (err, ("direction", j))
            if not err <= atol + rtol * abs(fd):
                failures.append((err, "direction", j, None, ad, fd))

    if failures:
        failures.sort(key=lambda t: -t[0] if t[0] == t[0] else float("-inf"))
        err, bad_arg, path, bad_i, ad, fd = failures[0]
        where = (
            f"random direction {path}" if bad_arg == "direction" else f"args[{bad_arg}]{''.join(f'[{p!r}]' for p in path)} "
            f"element {bad_i}"
        )
        raise AssertionError(
            f"check_grads: {len(failures)} mismatches; max error {err:.3e} at {where}: reverse mode {ad!r}, "
            f"finite differences {fd!r} (eps={eps}, rtol={rtol}, atol={atol})"
        )
