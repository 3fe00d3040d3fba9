"""Network plumbing shared by the loss classes: wrapping plain networks, action spaces, Q-ensembles.

* :func:`as_keyed` / :func:`as_qvalue_actor`: TorchRL's ``ensure_tensordict_compatible`` (a plain network becomes a
  keyed module with the loss's default keys);
* :func:`find_action_space`: the ``action_space`` argument, else the one of the Q-value head, else one-hot with a
  warning (TorchRL);
* :func:`make_ensemble` / :func:`ensemble_apply`: Q-ensembles as one parameter tree with a leading member axis
  ``[N, ...]``, run in one batched pass when the network supports it (arrayrl ``MLP``/``Linear``/``Ensemble``),
  else member by member.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

from .. import data as _data
from .._backend import namespace_of
from ..nn.keyed import KeyedModule, KeyedModuleBase, QValueActor, QValueModule, Sequential, ValueOperator
from ..nn.layers import MLP, Ensemble, Linear
from ..nn.params import stack
from ..tree import tree_flatten, tree_leaves, tree_map, tree_unflatten
from .functional import normalize_action_space

__all__ = ["as_keyed", "as_qvalue_actor", "find_action_space", "make_ensemble", "ensemble_apply", "ensemble_size",
           "action_values", "keyed_output"]

# keyed modules whose apply() is exactly "read in_keys, run the network, write out_keys" (not subclasses that
# override apply)
_PLAIN_KEYED = (KeyedModule, ValueOperator)


def as_keyed(module: Any, in_keys: Sequence, out_keys: Sequence, what: str) -> KeyedModuleBase:
    """``module`` itself if it is a keyed module, else ``KeyedModule(module, in_keys=..., out_keys=...)``."""
    if isinstance(module, KeyedModuleBase):
        return module
    if not callable(module):
        raise TypeError(f"{what}: expected a keyed module or a network, got {type(module).__name__}")
    return KeyedModule(module, in_keys=list(in_keys), out_keys=list(out_keys))


def _qvalue_head(module: Any) -> QValueModule | None:
    if isinstance(module, QValueModule):
        return module
    if isinstance(module, Sequential):
        for m in reversed(module.modules):
            head = _qvalue_head(m)
            if head is not None:
                return head
    return None


def find_action_space(module: Any, action_space: Any, loss_name: str) -> str:
    """The action space: the argument, else the Q-value head's, else ``module.action_space``, else one-hot (warns)."""
    if action_space is not None:
        return normalize_action_space(action_space)
    head = _qvalue_head(module)
    if head is not None:
        return head.action_space
    found = getattr(module, "action_space", None)
    if found is not None:
        return normalize_action_space(found)
    warnings.warn(
        f"action_space was not specified. {loss_name} will default to 'one-hot'. Pass action_space= to silence this.",
        stacklevel=3,
    )
    return "one_hot"


def as_qvalue_actor(module: Any, action_space: Any, *, in_keys: Sequence, action_value_key: Any, action_key: Any,
                    chosen_action_value_key: Any) -> KeyedModuleBase:
    """A keyed module is used as is; a plain network becomes a :class:`QValueActor` with the given keys."""
    if isinstance(module, KeyedModuleBase):
        return module
    space = normalize_action_space(action_space) if action_space is not None else "one_hot"
    return QValueActor(module, in_keys=list(in_keys), action_space=space, action_value_key=action_value_key,
                       action_key=action_key, chosen_action_value_key=chosen_action_value_key)


def _supports_stacked(module: Any) -> bool:
    """True if ``module.apply`` runs an ensemble tree (leading member axis) in one batched pass."""
    if isinstance(module, KeyedModule):
        return isinstance(module.fn, (MLP, Linear, Ensemble))
    if isinstance(module, Sequential):
        return all(_supports_stacked(m) or not tree_leaves(m.params) for m in module.modules)
    return False


def ensemble_size(tree: Any) -> int | None:
    """The common leading size of all leaves (``None`` for an empty tree)."""
    leaves = tree_leaves(tree)
    if not leaves:
        return None
    sizes = {int(x.shape[0]) if x.ndim else -1 for x in leaves}
    return sizes.pop() if len(sizes) == 1 else -1


def _resample_uniform(tree: Any, n: int, generator: Any) -> Any:
    """TorchRL's ensemble expansion of a single network: each member leaf drawn ``U(min(p), max(p))`` of the original
    leaf (so no member equals the passed network; a one-element leaf keeps its value)."""

    def _draw(x: Any) -> Any:
        xp = namespace_of(x)
        lo, hi = float(xp.min(x)), float(xp.max(x))
        return generator.uniform((n,) + tuple(x.shape), lo, hi, x.dtype)

    return tree_map(_draw, tree)


def make_ensemble(network: Any, n: int | None, generator: Any, what: str) -> tuple[Any, Any]:
    """``(template module, parameter tree)`` for a critic ensemble of ``n`` members (``n=None``: no ensemble axis).

    ``network`` may be:

    * a list/tuple of ``n`` keyed modules: their trees are stacked exactly (TorchRL ``from_modules``);
    * a keyed module whose parameters already carry a leading axis of size ``n`` (e.g. wrapping
      ``arrayrl.nn.Ensemble``): used as is;
    * a single keyed module: ``n`` members re-sampled as TorchRL does (``U(min, max)`` of each leaf), from
      ``generator``.

    Raises:
        ValueError: a list or a stacked tree whose size is not ``n``.
    """
    if isinstance(network, (list, tuple)):
        if n is None:
            n = 1
        if len(network) != n:
            raise ValueError(f"{what}: got a list of {len(network)} networks but num_qvalue_nets={n}")
        template = network[0]
        if n == 1:
            return template, template.params
        return template, stack([m.params for m in network])
    fn = getattr(network, "fn", None)
    if isinstance(fn, Ensemble):
        if n is None or fn.num_members != n:
            raise ValueError(
                f"{what}: the network is an ensemble of {fn.num_members} members but num_qvalue_nets={n or 1}"
            )
        return network, network.params
    if n is None:
        return network, network.params
    if generator is None:
        from ..random import Generator

        leaves = tree_leaves(network.params)
        generator = Generator(0, xp=namespace_of(leaves[0]) if leaves else None)
    return network, _resample_uniform(network.params, n, generator)


def _member(tree: Any, i: int) -> Any:
    leaves, treedef = tree_flatten(tree)
    return tree_unflatten(treedef, [x[i, ...] for x in leaves])


def ensemble_apply(module: KeyedModuleBase, params: Any, batch: Mapping, key: Any, n: int | None, *,
                   loop: bool = False) -> Any:
    """Run a critic ensemble on a shared batch; return the output at ``key`` with a leading member axis ``[N, ...]``.

    ``n=None`` (a single critic, TorchRL's ``num_qvalue_nets=1``) gives a leading axis of size 1.
    """
    if n is None:
        out = keyed_output(module, params, batch, key)
        return namespace_of(out).expand_dims(out, axis=0)
    if not loop and _supports_stacked(module):
        out = keyed_output(module, params, batch, key)
        if out.ndim >= 1 and out.shape[0] == n:
            return out
    outs = [keyed_output(module, _member(params, i), batch, key) for i in range(n)]
    return namespace_of(*outs).stack(outs, axis=0)


def keyed_output(module: KeyedModuleBase, params: Any, batch: Mapping, key: Any, what: str | None = None) -> Any:
    """``module.apply(params, batch)[key]``; a plain :class:`KeyedModule` writing ``key`` runs its network on the
    input arrays directly (same arrays, without building the output batch)."""
    if isinstance(module, KeyedModule) and type(module) in _PLAIN_KEYED:
        k = _data.unravel_key(key)
        if k in module.out_keys:
            return module.forward_arrays(params, *module._read(batch))[module.out_keys.index(k)]
    return _data.get(module.apply(params, batch), key, what=what)


def action_values(module: KeyedModuleBase, params: Any, batch: Mapping, key: Any) -> Any:
    """The action values at ``key`` written by ``module``; a Q-value actor (network + unmasked greedy head) runs only
    its network, since the greedy action and chosen value of the head are not needed."""
    if (isinstance(module, Sequential) and len(module.modules) == 2 and isinstance(module.modules[1], QValueModule)
            and module.modules[1].action_mask_key is None
            and module.modules[1].action_value_key == _data.unravel_key(key)):
        return keyed_output(module.modules[0], params["0"], batch, key)
    return keyed_output(module, params, batch, key)
