"""Keyed modules: networks that read and write nested-dict batches (TorchRL's ``TensorDictModule`` idea).

A keyed module has ``in_keys`` and ``out_keys`` (strings or tuples for nested keys) and a parameter tree.
``apply(params, batch)`` reads the inputs, runs the network and returns a **new** batch with the outputs added
(only the dicts on the written paths are copied, arrays are shared); the caller's dict is never mutated.
``module(batch)`` uses the module's own :attr:`params`.

Classes (TorchRL names and defaults):

* :class:`KeyedModule` (``TensorDictModule``), :class:`Sequential` (``TensorDictSequential``);
* :class:`ProbabilisticModule` / :class:`ProbabilisticActor`: a distribution built from ``in_keys`` (``loc``,
  ``scale``...), writing ``action`` (and ``action_log_prob`` with ``return_log_prob=True``);
* :class:`ValueOperator`: out key ``state_value``, or ``state_action_value`` when ``"action"`` is an input;
* :class:`QValueModule` / :class:`QValueActor`: greedy action from ``action_value``.

Every ``apply`` takes the keyword options ``generator`` (an :class:`arrayrl.random.Generator`, for sampling) and
``interaction_type`` (``"deterministic"``, ``"random"``, ``"mode"``, ``"mean"``; TorchRL's exploration type, given
explicitly instead of through a global context). Modules that do not sample ignore them.
"""

from __future__ import annotations

from collections.abc import Mapping  # (not typing.Mapping: isinstance against it is 3x slower)
from typing import Any, Callable, Sequence, cast

from .. import ops
from .._backend import namespace_of
from .._checks import check_floating
from ..data import NestedKey, get, get_or, key_str, unravel_key, with_
from ..tree import tree_leaves
from .module import Module

__all__ = [
    "KeyedModuleBase",
    "KeyedModule",
    "Sequential",
    "ProbabilisticModule",
    "ProbabilisticActor",
    "ValueOperator",
    "QValueModule",
    "QValueActor",
    "INTERACTION_TYPES",
]

INTERACTION_TYPES = ("deterministic", "random", "mode", "mean")


def _keys(keys: NestedKey | Sequence[NestedKey] | None, name: str) -> list[tuple]:
    if keys is None:
        return []
    if isinstance(keys, (str, tuple)):
        keys = [keys]
    out = []
    for k in keys:
        if not isinstance(k, (str, tuple)):
            raise TypeError(f"{name}: keys must be strings or tuples of strings, got {k!r}")
        out.append(unravel_key(k))
    return out


def _fmt_key(k: tuple) -> Any:
    return k[0] if len(k) == 1 else k


def _write(batch: Mapping, keys: list[tuple], values: Sequence[Any]) -> dict:
    """A shallow copy of ``batch`` with ``values`` written at ``keys`` (unravelled tuples): one dict copy for the
    top-level keys, plus a copy of each dict on the path of a nested key."""
    out = dict(batch)
    for k, v in zip(keys, values):
        if len(k) == 1:
            out[k[0]] = v
        else:
            out = with_(out, k, v)
    return out


class KeyedModuleBase(Module):
    """Common protocol: ``in_keys``, ``out_keys``, ``params``, ``apply(params, batch, *, generator, interaction_type)``."""

    in_keys: list[tuple]
    out_keys: list[tuple]

    def __call__(self, batch: Mapping, **options: Any) -> dict:
        return self.apply(self.params, batch, **options)

    def _read(self, batch: Mapping) -> list:
        if type(batch) is dict:  # the hot path: top-level keys of a plain dict (a missing one: the message below)
            try:
                return [batch[k[0]] if len(k) == 1 else get(batch, k) for k in self.in_keys]
            except KeyError:
                pass
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a (nested) dict of arrays, got {type(batch).__name__}")
        return [get(batch, k, what=f"in_key of {type(self).__name__}") for k in self.in_keys]


class _ParameterFree:
    """Mixin of the keyed modules without parameters: ``params`` is always ``{}``; assigning anything with leaves
    raises (a tree meant for another module must not vanish silently)."""

    @property
    def params(self) -> dict:
        return {}

    @params.setter
    def params(self, value: Any) -> None:
        if value is not None and tree_leaves(value):
            raise ValueError(f"params: {type(self).__name__} has no parameters, got a tree with leaves")


class KeyedModule(KeyedModuleBase):
    """Wrap a network so that it reads ``in_keys`` and writes ``out_keys`` of a nested-dict batch.

    Args:
        fn: an arrayrl :class:`Module` (called as ``fn.apply(params, *inputs)``), or a plain function. A plain
            function is called as ``fn(*inputs)`` when ``params`` is ``None`` and as ``fn(params, *inputs)``
            otherwise.
        params: the parameter tree (default: ``fn.params`` for a Module, ``{}`` for a parameter-free function).
        in_keys: keys of the inputs, in the order ``fn`` takes them.
        out_keys: keys of the outputs; ``fn`` returns one array per key (a tuple when there are several).

    Example:
        >>> value = KeyedModule(MLP(4, 1, num_cells=[8]), in_keys=["observation"], out_keys=["state_value"])
        >>> out = value({"observation": obs})          # a new dict with "state_value" added
    """

    def __init__(self, fn: Callable | Module, params: Any = None, in_keys: Any = None, out_keys: Any = None):
        if not callable(fn):
            raise TypeError(f"fn: expected a Module or a function, got {type(fn).__name__}")
        self.fn = fn
        self.in_keys = _keys(in_keys, "in_keys")
        self.out_keys = _keys(out_keys, "out_keys")
        if not self.out_keys:
            raise ValueError("out_keys: at least one output key is required")
        self._fn_takes_params = isinstance(fn, Module) or params is not None
        # A wrapped Module without explicit params is a live view of the module's tree (never a stale copy);
        # otherwise (a plain function, or params given explicitly) this keyed module owns the tree.
        self._delegate = isinstance(fn, Module) and params is None
        self._own_params = None if self._delegate else ({} if params is None else params)

    @property
    def params(self) -> Any:
        """The parameter tree: ``fn.params`` (read live) when wrapping a Module without explicit ``params``, else
        the tree this keyed module owns. Assigning writes through to the same place."""
        # (_delegate is only set when fn is a Module; no typing.cast on this per-call path)
        return self.fn.params if self._delegate else self._own_params  # type: ignore[union-attr]

    @params.setter
    def params(self, value: Any) -> None:
        if self._delegate:
            cast(Module, self.fn).params = value
        else:
            self._own_params = value

    def forward_arrays(self, params: Any, *inputs: Any) -> tuple:
        """Run the wrapped network on arrays; always a tuple of ``len(out_keys)`` outputs."""
        if isinstance(self.fn, Module):
            out = self.fn.apply(params, *inputs)
        elif self._fn_takes_params:
            out = self.fn(params, *inputs)
        else:
            out = self.fn(*inputs)
        if not isinstance(out, tuple):
            out = (out,)
        if len(out) < len(self.out_keys):
            raise ValueError(
                f"out_keys: {len(self.out_keys)} keys {[_fmt_key(k) for k in self.out_keys]} but the network returned "
                f"{len(out)} output(s)"
            )
        return out[: len(self.out_keys)]

    def apply(self, params: Any, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        return _write(batch, self.out_keys, self.forward_arrays(params, *self._read(batch)))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.fn!r}, in_keys={[_fmt_key(k) for k in self.in_keys]}, "
            f"out_keys={[_fmt_key(k) for k in self.out_keys]})"
        )


class Sequential(KeyedModuleBase):
    """Keyed modules run in order, each reading the batch written by the previous ones.

    ``params`` is ``{"0": params_of_module_0, "1": ...}``. ``in_keys`` are the keys read and not produced by an
    earlier module; ``out_keys`` all keys written.
    """

    def __init__(self, *modules: KeyedModuleBase):
        if not modules:
            raise ValueError("Sequential: expected at least one module")
        for i, m in enumerate(modules):
            if not isinstance(m, KeyedModuleBase):
                raise TypeError(f"modules[{i}]: expected a keyed module (KeyedModule, ...), got {type(m).__name__}")
        self.modules = list(modules)
        produced: list[tuple] = []
        self.in_keys = []
        for m in modules:
            for k in m.in_keys:
                if k not in produced and k not in self.in_keys:
                    self.in_keys.append(k)
            for k in m.out_keys:
                if k not in produced:
                    produced.append(k)
        self.out_keys = produced

    @property
    def params(self) -> dict:
        """``{"0": modules[0].params, "1": ...}``, read live from the children (a new dict each time; the trees
        are the children's). Assigning a dict with the same keys writes each entry into its child."""
        return {str(i): m.params for i, m in enumerate(self.modules)}

    @params.setter
    def params(self, value: Any) -> None:
        names = [str(i) for i in range(len(self.modules))]
        if not isinstance(value, Mapping) or sorted(value) != sorted(names):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise ValueError(f"params: expected a dict with keys {names} (one tree per module), got {got}")
        for name, m in zip(names, self.modules):
            m.params = value[name]

    def _module_params(self, params: Any, i: int) -> Any:
        try:
            return params[str(i)]
        except (KeyError, TypeError):
            raise KeyError(f"params: expected a dict with keys {[str(j) for j in range(len(self.modules))]}, missing {str(i)!r}") from None

    def __call__(self, batch: Mapping, **options: Any) -> dict:
        """``apply(self.params, batch, **options)``, with each module reading its own tree live
        (``modules[i].params``) instead of through the ``{"0": ..., "1": ...}`` dict that :attr:`params` builds on
        every read. A subclass that overrides :meth:`apply` or :attr:`params` gets exactly
        ``apply(self.params, batch, **options)``."""
        cls = type(self)
        if cls.apply is not Sequential.apply or cls.params is not Sequential.params:
            return self.apply(self.params, batch, **options)
        return self._run([m.params for m in self.modules], batch, **options)

    def apply(self, params: Any, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        trees = [self._module_params(params, i) for i in range(len(self.modules))]
        return self._run(trees, batch, generator=generator, interaction_type=interaction_type)

    def _run(self, trees: list, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        """The modules in order, ``modules[i]`` on ``trees[i]``, each reading the previous one's output."""
        out: Any = batch  # (a module's output dict after the loop: __init__ requires at least one module)
        for m, tree in zip(self.modules, trees):
            out = m.apply(tree, out, generator=generator, interaction_type=interaction_type)
        return out

    def __getitem__(self, i: int) -> KeyedModuleBase:
        return self.modules[i]

    def __len__(self) -> int:
        return len(self.modules)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(m) for m in self.modules)
        return f"{type(self).__name__}(\n  {inner})"


# ------------------------------------------------------------------------------------------------ probabilistic
class ProbabilisticModule(_ParameterFree, KeyedModuleBase):
    """Build a distribution from batch entries and write a sample (TorchRL ``ProbabilisticTensorDictModule``).

    Args:
        in_keys: the distribution's keyword arguments: a list of keys (the argument is the last element of each
            key, e.g. ``["loc", "scale"]``) or a dict ``{argument: key}``.
        out_keys: sample key(s), default ``["action"]``.
        distribution_class: an :mod:`arrayrl.distributions` class (default :class:`~arrayrl.distributions.Delta`).
        distribution_kwargs: extra constructor arguments (``low``, ``high``, ``tanh_loc``...).
        return_log_prob: also write the log-probability of the sample (``dist.log_prob(sample)``, as TorchRL).
        log_prob_key: where to write it (default ``"<out_key>_log_prob"``, i.e. ``"action_log_prob"``).
        default_interaction_type: ``"deterministic"`` (TorchRL's default: ``dist.deterministic_sample``),
            ``"random"`` (``rsample`` if reparameterisable else ``sample``; needs ``generator``), ``"mode"``,
            ``"mean"``.
        store_pre_tanh: (default ``False``, TorchRL's behaviour) for a distribution with ``supports_pre_tanh``
            (:class:`~arrayrl.distributions.TanhNormal`): also write the pre-tanh pre-image ``u`` of the action
            under ``pre_tanh_key`` (default ``"<out_key>_pre_tanh"``), and score the action at ``u``: under
            ``"random"`` the sample and its log-prob come from ``dist.rsample_and_log_prob(...,
            return_pre_tanh=True)``, under ``"deterministic"`` ``u = loc``. The stored log-prob is then the density
            at the drawn ``u`` (TorchRL's ``dist.log_prob(action)`` re-inverts ``atanh(clip(tanh(u)))``, which
            is not ``u`` once ``tanh`` saturates), and :meth:`log_prob` and ``PPOLoss`` score the stored action
            with ``log_prob(action, pre_tanh=batch[pre_tanh_key])``, so the PPO ratio at unchanged parameters is
            exactly 1. Off by default: it adds a key and changes the stored value where ``tanh`` saturates.
            A distribution class without ``supports_pre_tanh`` raises ``ValueError`` at construction.
        pre_tanh_key: where to write ``u`` (``store_pre_tanh=True`` only).

    Composite distributions (:class:`~arrayrl.distributions.CompositeDistribution`) work as any other class:
    ``in_keys=["params"]`` (the nested dict of head parameters) and ``distribution_kwargs={"distribution_map":
    {...}}``; the sample (a nested dict keyed by head) is written under the out key, the log-prob is the sum
    over heads.
    """

    def __init__(
        self,
        in_keys: Any,
        out_keys: Any = None,
        *,
        distribution_class: type | None = None,
        distribution_kwargs: dict | None = None,
        return_log_prob: bool = False,
        log_prob_key: NestedKey | None = None,
        default_interaction_type: str = "deterministic",
        store_pre_tanh: bool = False,
        pre_tanh_key: NestedKey | None = None,
    ):
        from ..distributions import Delta

        if isinstance(in_keys, Mapping):
            for a in in_keys:
                if not isinstance(a, str):
                    raise ValueError(f"in_keys: the keys of an in_keys dict must be argument names (str), got {a!r}")
            self.dist_keys = list(in_keys.keys())
            self.in_keys = _keys(list(in_keys.values()), "in_keys")
        else:
            self.in_keys = _keys(in_keys, "in_keys")
            self.dist_keys = [k[-1] for k in self.in_keys]
        self.out_keys = _keys(out_keys if out_keys is not None else ["action"], "out_keys")
        if len(self.out_keys) != 1:
            raise ValueError(f"out_keys: expected one sample key, got {[_fmt_key(k) for k in self.out_keys]}")
        self.distribution_class = distribution_class if distribution_class is not None else Delta
        self.distribution_kwargs = dict(distribution_kwargs or {})
        self.return_log_prob = bool(return_log_prob)
        if log_prob_key is None:
            k = self.out_keys[0]
            log_prob_key = k[:-1] + (k[-1] + "_log_prob",)
        self.log_prob_key = unravel_key(log_prob_key)
        if default_interaction_type not in INTERACTION_TYPES:
            raise ValueError(f"default_interaction_type: expected one of {INTERACTION_TYPES}, got {default_interaction_type!r}")
        self.default_interaction_type = default_interaction_type
        if not isinstance(store_pre_tanh, bool):
            raise TypeError(f"store_pre_tanh: expected True or False, got {store_pre_tanh!r}")
        self.store_pre_tanh = store_pre_tanh
        if store_pre_tanh and not getattr(self.distribution_class, "supports_pre_tanh", False):
            raise ValueError(
                f"store_pre_tanh: {getattr(self.distribution_class, '__name__', self.distribution_class)} has no "
                "pre-tanh sample (only distributions with supports_pre_tanh, e.g. TanhNormal)"
            )
        if pre_tanh_key is not None and not store_pre_tanh:
            raise ValueError("pre_tanh_key: only meaningful with store_pre_tanh=True")
        if pre_tanh_key is None:
            k = self.out_keys[0]
            pre_tanh_key = k[:-1] + (k[-1] + "_pre_tanh",)
        self._pre_tanh_key = unravel_key(pre_tanh_key)
        if self.return_log_prob:
            self.out_keys = self.out_keys + [self.log_prob_key]
        if self.store_pre_tanh:
            self.out_keys = self.out_keys + [self._pre_tanh_key]

    @property
    def sample_key(self) -> tuple:
        return self.out_keys[0]

    @property
    def pre_tanh_key(self) -> tuple | None:
        """Where the pre-tanh pre-image is written (``None`` unless ``store_pre_tanh``)."""
        return self._pre_tanh_key if self.store_pre_tanh else None

    def get_dist(self, batch: Mapping) -> Any:
        """The distribution built from the batch entries at ``in_keys``."""
        kwargs = dict(zip(self.dist_keys, self._read(batch)))
        try:
            return self.distribution_class(**kwargs, **self.distribution_kwargs)
        except TypeError as err:
            raise TypeError(
                f"in_keys: the distribution arguments {self.dist_keys} (from keys "
                f"{', '.join(key_str(k) for k in self.in_keys)}) do not match {self.distribution_class.__name__}: {err}"
            ) from err

    def sample(self, dist: Any, generator: Any = None, interaction_type: str | None = None) -> Any:
        """A sample of ``dist`` according to the interaction type (see the class docstring)."""
        it = interaction_type or self.default_interaction_type
        if it == "deterministic":
            return dist.deterministic_sample
        if it == "mode":
            return dist.mode
        if it == "mean":
            return dist.mean
        if it == "random":
            if generator is None:
                raise ValueError("generator: required when interaction_type='random'")
            return dist.rsample(generator) if dist.has_rsample else dist.sample(generator)
        raise ValueError(f"interaction_type: expected one of {INTERACTION_TYPES}, got {it!r}")

    def _sample_pre_tanh(self, dist: Any, generator: Any, interaction_type: str | None) -> tuple:
        """``(action, log_prob or None, u)`` for ``store_pre_tanh`` (see the class docstring)."""
        it = interaction_type or self.default_interaction_type
        if it == "random":
            if generator is None:
                raise ValueError("generator: required when interaction_type='random'")
            draw = dist.rsample_and_log_prob if dist.has_rsample else dist.sample_and_log_prob
            action, lp, u = draw(generator, return_pre_tanh=True)
            return action, lp, u
        if it == "deterministic":
            u = dist.deterministic_pre_tanh
            action = dist.deterministic_sample
            return action, (dist.log_prob(action, pre_tanh=u) if self.return_log_prob else None), u
        self.sample(dist, generator, it)  # "mode"/"mean": raises as the distribution does (TanhNormal: no mode)
        raise ValueError(f"store_pre_tanh: interaction_type {it!r} has no pre-tanh sample")  # pragma: no cover

    def apply(self, params: Any, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        dist = self.get_dist(batch)
        if self.store_pre_tanh:
            action, lp, u = self._sample_pre_tanh(dist, generator, interaction_type)
            values = [action] + ([lp] if self.return_log_prob else []) + [u]
            return _write(batch, self.out_keys, values)
        action = self.sample(dist, generator, interaction_type)
        values = [action]
        if self.return_log_prob:
            values.append(dist.log_prob(action))
        return _write(batch, self.out_keys, values)

    def log_prob(self, batch: Mapping) -> Any:
        """``log p(batch[sample_key])`` under the distribution built from ``batch`` (scored at the stored
        pre-image ``batch[pre_tanh_key]`` when ``store_pre_tanh`` and the key is present)."""
        dist = self.get_dist(batch)
        action = get(batch, self.sample_key, what="sample key")
        u = get_or(batch, self._pre_tanh_key, None) if self.store_pre_tanh else None
        return dist.log_prob(action) if u is None else dist.log_prob(action, pre_tanh=u)

    def __repr__(self) -> str:
        return (
            f"ProbabilisticModule(in_keys={[_fmt_key(k) for k in self.in_keys]}, out_keys={[_fmt_key(k) for k in self.out_keys]}, "
            f"distribution_class={self.distribution_class.__name__})"
        )


class ProbabilisticActor(Sequential):
    """A keyed network producing distribution parameters followed by a :class:`ProbabilisticModule`.

    Args:
        module: a keyed module writing the distribution parameters (e.g. ``loc``, ``scale``).
        in_keys: the distribution arguments (keys written by ``module``), a list or ``{argument: key}``.
        out_keys: default ``["action"]``.
        **kwargs: ``distribution_class``, ``distribution_kwargs``, ``return_log_prob``, ``log_prob_key``,
            ``default_interaction_type``, ``store_pre_tanh``, ``pre_tanh_key`` (see :class:`ProbabilisticModule`).

    ``params`` is ``{"0": module.params, "1": {}}``. :meth:`get_dist` runs the network and returns the
    distribution, as TorchRL's ``actor.get_dist(td)``.
    """

    def __init__(self, module: KeyedModuleBase, in_keys: Any, out_keys: Any = None, **kwargs: Any):
        if not isinstance(module, KeyedModuleBase):
            raise TypeError(f"module: expected a keyed module writing the distribution parameters, got {type(module).__name__}")
        prob = ProbabilisticModule(in_keys, out_keys, **kwargs)
        missing = [k for k in prob.in_keys if k not in module.out_keys]
        if missing:
            raise KeyError(
                f"in_keys: {', '.join(key_str(k) for k in missing)} not among the keys written by module "
                f"({', '.join(key_str(k) for k in module.out_keys)})"
            )
        super().__init__(module, prob)

    @property
    def probabilistic_module(self) -> ProbabilisticModule:
        return cast(ProbabilisticModule, self.modules[-1])  # (built by __init__ as the last module)

    @property
    def log_prob_key(self) -> tuple:
        return self.probabilistic_module.log_prob_key

    @property
    def sample_key(self) -> tuple:
        return self.probabilistic_module.sample_key

    @property
    def pre_tanh_key(self) -> tuple | None:
        """``probabilistic_module.pre_tanh_key`` (``None`` unless ``store_pre_tanh=True``)."""
        return self.probabilistic_module.pre_tanh_key

    def get_dist_params(self, params: Any, batch: Mapping) -> dict:
        """The batch with the distribution parameters written (the network part only)."""
        return self.modules[0].apply(self._module_params(params, 0), batch)

    def get_dist(self, params: Any, batch: Mapping) -> Any:
        """Run the network with ``params`` and return the distribution of the action."""
        return self.probabilistic_module.get_dist(self.get_dist_params(params, batch))

    def log_prob(self, params: Any, batch: Mapping) -> Any:
        """``log p(batch[action] | batch)`` with the network parameters ``params``."""
        return self.probabilistic_module.log_prob(self.get_dist_params(params, batch))


class ValueOperator(KeyedModule):
    """A value network: ``in_keys`` default ``["observation"]``; ``out_keys`` default ``["state_value"]``, or
    ``["state_action_value"]`` when ``"action"`` is among the inputs (TorchRL's ``ValueOperator``)."""

    def __init__(self, module: Callable | Module, in_keys: Any = None, out_keys: Any = None, params: Any = None):
        in_keys = ["observation"] if in_keys is None else in_keys
        if out_keys is None:
            out_keys = ["state_action_value"] if ("action",) in _keys(in_keys, "in_keys") else ["state_value"]
        super().__init__(module, params=params, in_keys=in_keys, out_keys=out_keys)


# ------------------------------------------------------------------------------------------------ Q-values
_ACTION_SPACES = {
    "one_hot": "one_hot",
    "one-hot": "one_hot",
    "mult_one_hot": "mult_one_hot",
    "mult-one-hot": "mult_one_hot",
    "multi_one_hot": "mult_one_hot",
    "multi-one-hot": "mult_one_hot",
    "binary": "binary",
    "categorical": "categorical",
}


def normalize_action_space(action_space: str) -> str:
    """TorchRL's aliases (``"one-hot"``...) -> ``"one_hot"``, ``"mult_one_hot"``, ``"binary"`` or ``"categorical"``."""
    if action_space not in _ACTION_SPACES:
        raise ValueError(f"action_space: expected one of {sorted(set(_ACTION_SPACES.values()))} (or TorchRL's aliases), got {action_space!r}")
    return _ACTION_SPACES[action_space]


class QValueModule(_ParameterFree, KeyedModuleBase):
    """Greedy action from action values (TorchRL ``QValueModule``), on arrays of any backend.

    Reads ``action_value`` ``[*B, A]`` (and an optional boolean ``action_mask`` ``[*B, A]``: masked values are
    replaced by the dtype's lowest finite value, and this masked tensor is what gets written back under the
    action-value key, as TorchRL does). Writes (default ``out_keys``) ``["action", action_value_key,
    "chosen_action_value"]``:

    * ``one_hot``: ``action = (q == max q)`` as int64 ``[*B, A]`` (ties give several ones, as TorchRL);
      ``chosen_action_value = sum(action * q, -1, keepdims)`` ``[*B, 1]``.
    * ``categorical``: ``action = argmax(q)`` int64 ``[*B]`` (first maximum); chosen value ``q[action]`` ``[*B, 1]``.
    * ``mult_one_hot``: the last axis split into blocks of sizes ``var_nums`` (an int: equal blocks of that size, as
      ``torch.split``), one-hot greedy per block, concatenated; chosen value as ``one_hot``.
    * ``binary``: not implemented (TorchRL 0.14.1 raises too).

    ``chosen_action_value`` is differentiable w.r.t. the action values.
    """

    def __init__(
        self,
        action_space: str = "one_hot",
        action_value_key: NestedKey | None = None,
        action_mask_key: NestedKey | None = None,
        out_keys: Any = None,
        var_nums: int | Sequence[int] | None = None,
    ):
        self.action_space = normalize_action_space(action_space)
        if self.action_space == "binary":
            raise NotImplementedError(
                "action_space: 'binary' Q-value actions are not implemented (TorchRL 0.14.1's QValueModule._binary "
                "raises too)"
            )
        if self.action_space == "mult_one_hot" and var_nums is None:
            raise ValueError("var_nums: must be provided for the 'mult_one_hot' action space")
        self.var_nums = var_nums
        action_value_key = unravel_key(action_value_key if action_value_key is not None else "action_value")
        self.in_keys = [action_value_key]
        self.action_mask_key = unravel_key(action_mask_key) if action_mask_key is not None else None
        if self.action_mask_key is not None:
            self.in_keys.append(self.action_mask_key)
        if out_keys is None:
            out_keys = ["action", action_value_key, "chosen_action_value"]
        self.out_keys = _keys(out_keys, "out_keys")
        if len(self.out_keys) != 3:
            raise ValueError(f"out_keys: expected 3 keys (action, action value, chosen action value), got {len(self.out_keys)}")
        if self.out_keys[1] != action_value_key:
            raise ValueError(
                f"out_keys: expected the action-value key {key_str(action_value_key)} second, got {key_str(self.out_keys[1])}"
            )

    @property
    def action_value_key(self) -> tuple:
        return self.in_keys[0]

    @property
    def _action_value_name(self) -> str:
        name = self.__dict__.get("_avk_name")
        if name is None or name[0] != self.in_keys[0]:  # (cached per key: formatting it costs on every call)
            name = self.__dict__["_avk_name"] = (self.in_keys[0], key_str(self.in_keys[0]))
        return name[1]

    def _blocks(self, n: int) -> list[tuple[int, int]]:
        var_nums = self.var_nums
        if isinstance(var_nums, int):
            sizes = [var_nums] * (n // var_nums)
            if n % var_nums:
                sizes.append(n % var_nums)
        else:
            # (only called for 'mult_one_hot', for which __init__ requires var_nums)
            assert var_nums is not None, "var_nums: must be provided for the 'mult_one_hot' action space"
            sizes = list(var_nums)
        if sum(sizes) != n:
            raise ValueError(f"var_nums: block sizes {sizes} do not add up to the {n} action values")
        out, start = [], 0
        for s in sizes:
            out.append((start, start + s))
            start += s
        return out

    def greedy(self, action_values: Any) -> tuple[Any, Any]:
        """``(action, chosen_action_value)`` for action values ``[*B, A]`` (see the class docstring)."""
        name = self._action_value_name
        check_floating(action_values, name)
        if action_values.ndim < 1:
            raise ValueError(f"{name}: expected shape [*B, A], got a 0-d array")
        q = action_values
        if self.action_space == "categorical":
            # q[action] is the maximum itself (same value, and the gradient goes to one index, as the gather's)
            return ops.argmax_last(q), ops.max_last(q)
        xp = namespace_of(action_values)
        if self.action_space == "one_hot":
            action = xp.astype(q == ops.max_last(q), xp.int64)
        else:  # mult_one_hot
            parts = [q[..., a:b] for a, b in self._blocks(q.shape[-1])]
            action = xp.concat([xp.astype(p == ops.max_last(p), xp.int64) for p in parts], axis=-1)
        chosen = xp.sum(xp.multiply(xp.astype(action, q.dtype), q), axis=-1, keepdims=True)
        return action, chosen

    def apply(self, params: Any, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        inputs = self._read(batch)
        q = inputs[0]
        if self.action_mask_key is not None:
            mask = inputs[1]
            if tuple(mask.shape) != tuple(q.shape):
                raise ValueError(
                    f"{key_str(self.action_mask_key)}: expected shape {tuple(q.shape)} (that of "
                    f"{key_str(self.action_value_key)}), got {tuple(mask.shape)}"
                )
            xp = namespace_of(q)
            q = xp.where(mask, q, xp.finfo(q.dtype).min)
        action, chosen = self.greedy(q)
        return _write(batch, self.out_keys, [action, q, chosen])

    def __repr__(self) -> str:
        return f"QValueModule(action_space={self.action_space!r}, in_keys={[_fmt_key(k) for k in self.in_keys]})"


class QValueActor(Sequential):
    """``KeyedModule(module, in_keys, [action_value_key])`` followed by a :class:`QValueModule` (TorchRL
    ``QValueActor``). ``module`` may also be a keyed module that already writes ``action_value_key``.

    Args:
        module: a network (``MLP``...) or a keyed module.
        in_keys: default ``["observation"]`` (ignored for a keyed ``module``).
        action_space: ``"one_hot"`` (default), ``"categorical"``, ``"mult_one_hot"``.
        action_value_key, action_key, chosen_action_value_key, action_mask_key: TorchRL's key names.
        var_nums: block sizes for ``mult_one_hot``.
    """

    def __init__(
        self,
        module: Any,
        *,
        in_keys: Any = None,
        action_space: str = "one_hot",
        action_value_key: NestedKey | None = None,
        action_key: NestedKey | None = None,
        chosen_action_value_key: NestedKey | None = None,
        action_mask_key: NestedKey | None = None,
        var_nums: int | Sequence[int] | None = None,
        params: Any = None,
    ):
        action_value_key = unravel_key(action_value_key or "action_value")
        if isinstance(module, KeyedModuleBase):
            if action_value_key not in module.out_keys:
                raise KeyError(f"action_value_key: {key_str(action_value_key)} is not among the module's out_keys")
            net = module
        else:
            net = KeyedModule(module, params=params, in_keys=in_keys or ["observation"], out_keys=[action_value_key])
        qv = QValueModule(
            action_space,
            action_value_key=action_value_key,
            action_mask_key=action_mask_key,
            out_keys=[action_key or "action", action_value_key, chosen_action_value_key or "chosen_action_value"],
            var_nums=var_nums,
        )
        super().__init__(net, qv)
