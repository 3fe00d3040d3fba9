"""The functional module protocol shared by every arrayrl network.

A :class:`Module` holds *structure* (sizes, activation, keys) and a default parameter tree. Computation is a pure
function of explicit parameters::

    params = module.init(generator)      # a fresh tree (nested dict of arrays)
    y = module.apply(params, x)          # pure: differentiable w.r.t. params when they are taped
    y = module(x)                        # == module.apply(module.params, x)

so a loss differentiates ``lambda p: loss(module.apply(p, batch))`` and an optimiser updates the tree.

**Who owns parameters.** Each parameter tree has exactly one owner, and everything else is a live view of it:

* a *leaf* module (``MLP``, ``Linear``, ``Ensemble``, the mixers...) owns its tree in a plain ``params`` attribute;
* a composite (``KeyedModule`` around a module, ``Sequential``, ``QValueActor``, ``ProbabilisticActor``) stores no
  tree: its ``params`` is computed from its children on every read, and assigning it writes through to them;
* a loss (:class:`arrayrl.objectives.LossModule`) reads and writes its networks' ``params``: ``loss.params = new``
  *is* ``actor.params = new``, so the actor that collects data always acts with the parameters being trained.

Only trees that no module holds (a critic ensemble re-sampled or stacked by a loss) are owned by the loss itself, in a
:class:`ParamSlot`. Target trees (``delay_*``) are separate copies owned by the loss (``loss.target_params``).
"""

from __future__ import annotations

from typing import Any

from .._backend import backend_name, base_of, default_float_dtype
from ..random import Generator, as_generator

__all__ = ["Module", "ParamSlot", "resolve_generator"]


def resolve_generator(generator: Any = None, xp: Any = None, device: Any = None) -> Any:
    """The generator used to initialise parameters.

    ``generator=None`` makes a ``Generator(0, xp=xp, device=device)`` (NumPy when ``xp`` is ``None``), so default
    parameters are reproducible. A given generator must draw arrays of ``xp`` when both are given.
    """
    if generator is None:
        return Generator(0, xp=xp, device=device)
    generator = as_generator(generator, "generator")
    gxp = getattr(generator, "xp", None)
    if xp is not None and gxp is not None:
        want = backend_name(base_of(xp))
        if backend_name(gxp) != want:
            raise TypeError(f"generator: draws {backend_name(gxp)} arrays but xp= is {want}")
    return generator


class Module:
    """Base class: ``init(generator, *, xp, dtype, device) -> params``, ``apply(params, ...)``, ``__call__``.

    Subclasses implement :meth:`_init` (draw a tree from a generator, given a dtype) and :meth:`apply`.
    Parameter-free modules return ``{}`` from :meth:`_init`.
    """

    params: Any = None

    def _init(self, generator: Any, dtype: Any) -> Any:  # pragma: no cover - overridden
        return {}

    def init(self, generator: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Any:
        """A fresh parameter tree drawn from ``generator`` (default: seed 0 on ``xp``, NumPy if ``None``).

        Args:
            generator: an :class:`arrayrl.random.Generator`; its namespace and device decide those of the arrays.
            xp: checked against the generator's namespace; used to build the default generator.
            dtype: floating dtype of the parameters (default: the namespace's default float, float64 for NumPy).
            device: device of the default generator.
        """
        gen = resolve_generator(generator, xp, device)
        if dtype is None:
            gxp = getattr(gen, "xp", None)
            dtype = default_float_dtype(gxp, getattr(gen, "device", None)) if gxp is not None else None
        return self._init(gen, dtype)

    def _default_params(self, generator: Any, xp: Any, dtype: Any, device: Any) -> None:
        self.params = self.init(generator, xp=xp, dtype=dtype, device=device)

    def apply(self, params: Any, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply(self.params, *args, **kwargs)


class ParamSlot:
    """A holder of one parameter tree that no module owns (e.g. a critic ensemble stacked by a loss).

    It has the one attribute every parameter owner has, ``params``; losses read and write it like a module's.
    """

    __slots__ = ("params",)

    def __init__(self, params: Any):
        self.params = params

    def __repr__(self) -> str:
        return f"ParamSlot({type(self.params).__name__})"
