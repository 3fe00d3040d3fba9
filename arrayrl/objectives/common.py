"""``LossModule``: the base class of every arrayrl loss (TorchRL's ``torchrl.objectives.LossModule``).

What it provides (TorchRL 0.14.1 semantics, catalog section 1):

* **keys**: each loss declares a ``@dataclass _AcceptedKeys`` with TorchRL's default key names; :meth:`set_keys`
  renames them (an unknown name raises ``ValueError``; ``None`` restores the default) and forwards the renaming to
  the value estimator.
* **outputs**: ``loss(batch)`` returns a ``dict`` with TorchRL's output keys; :meth:`select_out_keys` keeps a subset,
  :meth:`reset_out_keys` reverts. ``loss(observation=..., next_reward=...)`` (flat keyword names, nested keys joined
  with ``_``) returns the outputs in ``out_keys`` order (one array if there is one output, a tuple otherwise).
* **parameters**: each network's parameters are one tree, ``loss.params = {"value_network": tree, ...}``
  (also ``loss.value_network_params``). ``delay_*`` flags create target trees (``loss.target_params``,
  ``loss.target_value_network_params``), copied at construction and moved only by
  :class:`~arrayrl.objectives.SoftUpdate`/:class:`~arrayrl.objectives.HardUpdate`. A non-delayed target *is* the live
  online tree, without tape (TorchRL's detached ``params.data`` view).
* **gradients**: :meth:`value_and_grad` returns ``(outputs, grads)`` where ``grads`` has the structure of
  ``loss.params`` and is the gradient of the sum of the ``loss_*`` terms (or of ``terms=``).
* **reduction**: :meth:`_reduce_loss` (masks from the batch, prioritized-replay weights), see
  :func:`arrayrl.objectives.utils.reduce_loss`.
* **validation, once per structure**: the shape/dtype checks of the batch entries
  (:func:`~arrayrl._validate.batch_entry`), of the estimator's signals and of the chosen action values remember the
  signatures (keys, array types, shapes, dtypes, devices) that passed (:class:`~arrayrl._validate.StructureCache`)
  and are skipped for a batch of the same structure; a new structure is checked in full. Data checks (a categorical
  action's range) run on every call.
* **value estimators**: :meth:`make_value_estimator` accepts ``None`` (the loss's default), a
  :class:`~arrayrl.value.ValueEstimators` member, a string alias (``"td0"``, ``"tdlambda"``...), an estimator class or
  an estimator instance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Sequence

from .. import data as _data
from .._backend import namespace_of
from ..tree import tree_flatten, tree_map, tree_paths
from .utils import expand_mask, reduce_loss, stop_gradient

__all__ = ["LossModule", "AUTO_LOSS_MASK_KEYS"]

AUTO_LOSS_MASK_KEYS = (("collector", "mask"), "shifted_valid")
_MISSING = object()


def _copy_tree(tree: Any) -> Any:
    def _copy(x: Any) -> Any:
        x = stop_gradient(x)
        return namespace_of(x).asarray(x, copy=True)

    return tree_map(_copy, tree)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _same_layout(new: Any, old: Any) -> bool:
    """True if ``new`` has the nesting, keys, shapes and dtype names of ``old`` (the setter's fast path: one walk,
    no flattening; :func:`_check_like` explains a mismatch)."""
    if isinstance(old, dict):
        if not isinstance(new, dict) or new.keys() != old.keys():
            return False
        for k, v in old.items():  # (a loop, not all(generator): this runs for every node of every update)
            b = new[k]
            if type(b) is type(v) and b.__class__ is not dict and getattr(b, "shape", None) is not None:
                # a leaf of the same array type: compare in place (no recursion)
                if b.shape != v.shape or (b.dtype is not v.dtype and b.dtype != v.dtype):
                    return False
            elif not _same_layout(b, v):
                return False
        return True
    if isinstance(old, (list, tuple)):
        return (type(new) is type(old) and len(new) == len(old)
                and all(_same_layout(a, b) for a, b in zip(new, old)))
    return (hasattr(new, "shape") and tuple(new.shape) == tuple(old.shape)
            and ((type(new.dtype) is type(old.dtype) and new.dtype == old.dtype)  # (no cross-library comparison)
                 or _dtype_name(new.dtype) == _dtype_name(old.dtype)))


def _check_like(what: str, new: Any, old: Any) -> None:
    """``new`` must have the structure, shapes and dtypes of ``old`` (``what`` names it in the message)."""
    if _same_layout(new, old):
        return
    _, nd = tree_flatten(new)
    ol, od = tree_flatten(old)
    if nd != od:
        raise ValueError(f"{what}: expected the structure {od!r}, got {nd!r}")
    for (path, a), b in zip(tree_paths(new), ol):
        p = ".".join(str(k) for k in path)
        if not hasattr(a, "shape") or tuple(a.shape) != tuple(b.shape):
            got = tuple(a.shape) if hasattr(a, "shape") else type(a).__name__
            raise ValueError(f"{what}.{p}: expected shape {tuple(b.shape)}, got {got}")
        if _dtype_name(a.dtype) != _dtype_name(b.dtype):  # by name: moving a loss to another backend is allowed
            raise ValueError(f"{what}.{p}: expected dtype {b.dtype}, got {a.dtype}")


class LossModule:
    """Base class of the arrayrl losses (see the module docstring).

    Subclasses define ``_AcceptedKeys``, ``_OUT_KEYS``, ``default_value_estimator``, ``SUPPORTED_VALUE_ESTIMATORS``,
    :meth:`_in_keys` and :meth:`_forward` (``batch, params -> dict of outputs``; ``params`` may be taped).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        pass

    default_keys: Any = _AcceptedKeys  # each loss binds its own _AcceptedKeys dataclass
    default_value_estimator: Any = None
    SUPPORTED_VALUE_ESTIMATORS: tuple = ()
    _OUT_KEYS: tuple = ()
    # names of the estimator's keys that the loss forwards under the same name (see _forward_value_estimator_keys)
    _VALUE_KEY_MAP: dict = {}
    # the network ``loss.policy`` returns (subclasses: "value_network" for DQN...)
    _POLICY_NETWORK: str | None = "actor_network"

    def __init__(self) -> None:
        self._tensor_keys = self.default_keys()
        self._networks: dict[str, Any] = {}
        self._owners: dict[str, Any] = {}  # name -> the object whose .params is that network's tree
        self._targets: dict[str, Any] = {}
        self._value_estimator: Any = None
        self.value_type = self.default_value_estimator
        self._selected_out_keys: tuple | None = None
        self._loss_mask_key: Any = "auto"
        if not hasattr(self, "reduction"):
            self.reduction = "mean"

    # ------------------------------------------------------------------------------------------------ keys
    @property
    def tensor_keys(self) -> Any:
        return self._tensor_keys

    def set_keys(self, **kwargs: Any) -> "LossModule":
        """Rename input/output keys: ``loss.set_keys(reward="r", action=("agents", "action"))``.

        Raises:
            ValueError: a name that is not a field of the loss's ``_AcceptedKeys`` (the message lists them).
        """
        fields = [f.name for f in dataclasses.fields(self._AcceptedKeys)]
        for key, value in kwargs.items():
            if key not in fields:
                raise ValueError(f"{key} is not an accepted key of {type(self).__name__}; accepted keys: {fields}")
            setattr(self._tensor_keys, key, getattr(self.default_keys(), key) if value is None else value)
        self._forward_value_estimator_keys()
        return self

    def _adopt_actor_keys(self, actor: Any, log_prob_field: str | None, convert: Any = None) -> None:
        """Take the actor's ``sample_key`` as ``action`` and its ``log_prob_key`` as ``log_prob_field`` (both needed;
        ``log_prob_field=None``: the sample key alone), each passed through ``convert`` if given."""
        conv = convert if convert is not None else (lambda k: k)
        sample_key = getattr(actor, "sample_key", None)
        if log_prob_field is None:
            if sample_key is not None:
                self.set_keys(action=conv(sample_key))
            return
        lp_key = getattr(actor, "log_prob_key", None)
        if lp_key is not None and sample_key is not None:
            self.set_keys(**{log_prob_field: conv(lp_key), "action": conv(sample_key)})

    def _value_estimator_keys(self) -> dict:
        """``{estimator key name: batch key}`` forwarded to the estimator (subclasses map e.g. ``value``)."""
        tk = self.tensor_keys
        out = {}
        for name in ("advantage", "value_target", "value", "reward", "done", "terminated"):
            src = self._VALUE_KEY_MAP.get(name, name)
            if hasattr(tk, src):
                out[name] = getattr(tk, src)
        return out

    def _forward_value_estimator_keys(self) -> None:
        est = self._value_estimator
        if est is not None and hasattr(est, "set_keys"):
            keys = self._value_estimator_keys()
            if keys:
                est.set_keys(**keys)

    @property
    def in_keys(self) -> list:
        """The batch entries the loss reads (nested keys as tuples)."""
        seen, out = set(), []
        for k in self._in_keys():
            t = _data.unravel_key(k)
            if t not in seen:
                seen.add(t)
                out.append(k)
        return out

    def _in_keys(self) -> list:  # pragma: no cover - overridden
        return []

    # ------------------------------------------------------------------------------------------------ outputs
    def _all_out_keys(self) -> list:
        return list(self._OUT_KEYS)

    @property
    def out_keys(self) -> list:
        if self._selected_out_keys is not None:
            return list(self._selected_out_keys)
        return self._all_out_keys()

    def select_out_keys(self, *keys: str) -> "LossModule":
        """Keep only ``keys`` in the outputs (all terms are still computed, as TorchRL)."""
        allowed = self._all_out_keys()
        for k in keys:
            if k not in allowed:
                raise ValueError(f"select_out_keys: {k!r} is not an output of {type(self).__name__}; outputs: {allowed}")
        self._selected_out_keys = tuple(keys)
        return self

    def reset_out_keys(self) -> "LossModule":
        self._selected_out_keys = None
        return self

    def _select(self, out: dict) -> dict:
        return {k: out[k] for k in self.out_keys if k in out}

    # ------------------------------------------------------------------------------------------------ masks
    @property
    def loss_mask_key(self) -> Any:
        """``"auto"`` (AND of the present ``("collector", "mask")`` and ``"shifted_valid"``), a key, or ``None``."""
        return self._loss_mask_key

    @loss_mask_key.setter
    def loss_mask_key(self, value: Any) -> None:
        if value is None or value == "auto":
            self._loss_mask_key = value
            return
        if not isinstance(value, (str, tuple)):
            raise ValueError(f"loss_mask_key must be 'auto', None or a nested key, got {value!r}")
        self._loss_mask_key = value

    def _loss_mask_keys(self) -> tuple:
        key = self._loss_mask_key
        if key is None:
            return ()
        if isinstance(key, str) and key == "auto":
            return AUTO_LOSS_MASK_KEYS
        return (key,)

    def _batch_mask(self, batch: Mapping, loss: Any) -> Any:
        mask = None
        for key in self._loss_mask_keys():
            m = _data.get_or(batch, key, None)
            if m is not None:
                m = expand_mask(m, loss, _data.key_str(key))
                mask = m if mask is None else namespace_of(m).logical_and(mask, m)
        return mask

    def _reduce_loss(self, loss: Any, batch: Mapping | None = None, *, mask: Any = None, reduction: str | None = None,
                     weights: Any = None) -> Any:
        """TorchRL's ``_reduce_loss``: masks found in ``batch`` (see :attr:`loss_mask_key`) AND ``mask``, then
        :func:`~arrayrl.objectives.utils.reduce_loss` with ``self.reduction`` (or ``reduction``)."""
        reduction = self.reduction if reduction is None else reduction
        if batch is not None:
            bm = self._batch_mask(batch, loss)
            if bm is not None:
                mask = bm if mask is None else namespace_of(bm).logical_and(mask, bm)
        return reduce_loss(loss, reduction, mask=mask, weights=weights)

    def _priority_weights(self, batch: Mapping) -> Any:
        key = getattr(self.tensor_keys, "priority_weight", None)
        if key is None or getattr(self, "use_prioritized_weights", "auto") not in (True, "auto"):
            return None
        return _data.get_or(batch, key, None)

    # ------------------------------------------------------------------------------------------------ parameters
    def convert_to_functional(self, module: Any, name: str, *, create_target_params: bool = False,
                              params: Any = None) -> None:
        """Register ``module`` under ``name``; ``loss.params[name]`` is then a live view of ``module.params``.

        With ``params`` (a tree that no module holds, e.g. a critic ensemble stacked or re-sampled by the loss) the
        loss owns that tree in a :class:`~arrayrl.nn.ParamSlot`. ``create_target_params`` (TorchRL's ``delay_*``)
        copies the tree into ``loss.target_params[name]``, which only :class:`SoftUpdate`/:class:`HardUpdate` or an
        assignment to :attr:`target_params` move afterwards.
        """
        from ..nn.module import ParamSlot

        if params is None or params is getattr(module, "params", None):
            if getattr(module, "params", None) is None:
                raise TypeError(f"{name}: expected an arrayrl network with a .params tree, got {type(module).__name__}")
            owner = module
        else:
            owner = ParamSlot(params)
        self._networks[name] = module
        self._owners[name] = owner
        if create_target_params:
            self._targets[name] = _copy_tree(owner.params)

    @property
    def _params(self) -> dict:
        """``{name: tree}`` read live from the owners (raw trees: owners never hold taped leaves)."""
        return {name: owner.params for name, owner in self._owners.items()}

    @property
    def params(self) -> dict:
        """The trainable parameter trees, ``{network name: tree}``, read live from the networks (a new dict; the
        trees are the networks' own). Assigning writes each tree into its network, so every module handed to the
        loss (the actor collecting data, say) sees it at once. The new trees must have the old structure and
        shapes; taped leaves are stripped of their tape."""
        return self._params

    @params.setter
    def params(self, new: Mapping) -> None:
        if not isinstance(new, Mapping) or set(new) != set(self._owners):
            got = sorted(new) if isinstance(new, Mapping) else type(new).__name__
            raise ValueError(f"params: expected the networks {sorted(self._owners)}, got {got}")
        for name, tree in new.items():
            _check_like(f"params[{name!r}]", tree, self._owners[name].params)
        for name, owner in self._owners.items():
            owner.params = stop_gradient(new[name])

    @property
    def target_params(self) -> dict:
        """Target trees: the delayed copies, or the live online trees (no tape) for non-delayed networks.

        Assign a dict with some or all of :attr:`delayed_targets` to set them (same structure and shapes; the trees
        are copied): ``loss.target_params = {"value_network": tree}``. A non-delayed network has no target of its
        own (its target *is* the online tree), so naming it raises ``KeyError``."""
        return {name: self._targets.get(name, stop_gradient(owner.params)) for name, owner in self._owners.items()}

    @target_params.setter
    def target_params(self, new: Mapping) -> None:
        if not isinstance(new, Mapping):
            raise TypeError(f"target_params: expected a dict {{network name: tree}}, got {type(new).__name__}")
        for name in new:
            self._check_delayed(name)
        for name, tree in new.items():
            _check_like(f"target_params[{name!r}]", tree, self._targets[name])
        for name, tree in new.items():
            self._targets[name] = _copy_tree(tree)

    def _check_delayed(self, name: str) -> None:
        if name not in self._targets:
            if name in self._owners:
                raise KeyError(
                    f"target_params: {name!r} has no delayed target (its delay_* flag is False: the target is the "
                    f"online tree); delayed targets: {list(self._targets)}"
                )
            raise KeyError(f"target_params: unknown network {name!r}; networks: {list(self._owners)}")

    def _target_tree(self, name: str) -> Any:
        """``target_params[name]`` without building the whole dict (the losses' hot path): the delayed copy, else
        the raw online tree (owners never hold taped leaves)."""
        tree = self._targets.get(name)
        return self._owners[name].params if tree is None else tree

    @property
    def delayed_targets(self) -> tuple:
        """Names of the networks that have their own (delayed) target tree."""
        return tuple(self._targets)

    def _set_target(self, name: str, tree: Any) -> None:
        """Set one delayed target tree (a copy); what :class:`SoftUpdate`/:class:`HardUpdate` call."""
        self.target_params = {name: tree}

    @property
    def policy(self) -> Any:
        """The network to act with (``loss.policy(batch)``), bound to the parameters being trained: e.g. DQN's
        Q-value actor, the actor network of IQL/SAC/PPO. ``AttributeError`` for losses without a policy."""
        name = self._POLICY_NETWORK
        if name is None or name not in self._networks:
            raise AttributeError(f"{type(self).__name__} has no policy network")  # (re-raised by __getattr__)
        return self._networks[name]

    def __getattr__(self, item: str) -> Any:
        # only called when normal lookup fails: <net>_params / target_<net>_params / <net>
        if item.startswith("_"):
            raise AttributeError(item)
        d = self.__dict__
        if item.endswith("_params") and "_owners" in d:
            if item.startswith("target_"):
                name = item[len("target_") : -len("_params")]
                if name in d["_owners"]:
                    return d["_targets"].get(name, stop_gradient(d["_owners"][name].params))
            name = item[: -len("_params")]
            if name in d["_owners"]:
                return d["_owners"][name].params
        if "_networks" in d and item in d["_networks"]:
            return d["_networks"][item]
        if item == "policy":
            raise AttributeError(f"{type(self).__name__} has no policy network")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def __setattr__(self, item: str, value: Any) -> None:
        # ``loss.<net>_params = tree`` / ``loss.target_<net>_params = tree`` write through (an instance attribute of
        # that name would silently shadow the live tree)
        owners = self.__dict__.get("_owners")
        if owners and item.endswith("_params"):
            if item.startswith("target_") and item[len("target_") : -len("_params")] in owners:
                self.target_params = {item[len("target_") : -len("_params")]: value}
                return
            name = item[: -len("_params")]
            if name in owners:
                self.params = {**self._params, name: value}
                return
        object.__setattr__(self, item, value)

    def get_stateful_net(self, name: str, copy: bool = True) -> Any:
        """The network ``name``. With ``copy=False`` the live network (it always carries the loss's current
        parameters); with ``copy=True`` a deep copy holding a snapshot of them, detached from the loss."""
        import copy as _copy

        net = self._networks[name]
        if not copy:
            return net
        snapshot = _copy.deepcopy(net)
        snapshot.params = _copy_tree(self._owners[name].params)
        return snapshot

    def from_stateful_net(self, name: str, net: Any) -> None:
        """Load ``net.params`` as the parameters of network ``name``."""
        self.params = {**self._params, name: net.params}

    def reset(self) -> None:
        """No-op (TorchRL: only PPO-KL resets state)."""

    # ------------------------------------------------------------------------------------------------ estimators
    @property
    def value_estimator(self) -> Any:
        if self._value_estimator is None:
            self.make_value_estimator(self.default_value_estimator)
        return self._value_estimator

    @value_estimator.setter
    def value_estimator(self, value: Any) -> None:
        self._value_estimator = value

    def _estimator_network(self) -> Any:
        """The value network handed to a newly built estimator (``None``: the loss injects ``next_value``)."""
        return None

    def make_value_estimator(self, value_type: Any = None, **hyperparams: Any) -> "LossModule":
        """Build the value estimator used for the targets.

        Args:
            value_type: ``None`` (the loss's ``default_value_estimator``), a ``ValueEstimators`` member or its string
                alias (``"td0"``, ``"td1"``, ``"tdlambda"``, ``"gae"``...), an estimator class (instantiated with
                ``hyperparams``) or an estimator instance (used as is).
            **hyperparams: override :func:`~arrayrl.value.default_value_kwargs` (``gamma=0.99``, ``lmbda=0.95``,
                ``differentiable=True``...).

        Raises:
            NotImplementedError: a value type the loss does not support (the message lists the supported ones).
        """
        import enum

        if value_type is None:
            value_type = self.default_value_estimator
        if isinstance(value_type, type) and not issubclass(value_type, enum.Enum):
            self._value_estimator = value_type(**hyperparams)  # an estimator class
            self.value_type = value_type
        elif not isinstance(value_type, (str, enum.Enum)):
            if not hasattr(value_type, "value_estimate"):
                raise TypeError(
                    f"value_type: expected a ValueEstimators member, a string alias, an estimator class or instance, "
                    f"got {type(value_type).__name__}"
                )
            self._value_estimator = value_type  # an estimator instance
            self.value_type = type(value_type)
        else:
            from .. import value as _value

            vt = _coerce_value_type(value_type)
            supported = [_coerce_value_type(v) for v in self.SUPPORTED_VALUE_ESTIMATORS]
            if vt not in supported:
                raise NotImplementedError(
                    f"value type {vt.name} is not implemented for {type(self).__name__}; supported: "
                    f"{[v.name for v in supported]}"
                )
            hp = dict(_value.default_value_kwargs(vt))
            hp.update(hyperparams)
            self._value_estimator = _build_estimator(vt, hp, self._estimator_network())
            self.value_type = vt
        self._forward_value_estimator_keys()
        return self

    # ------------------------------------------------------------------------------------------------ calling
    def _forward(self, batch: Mapping, params: dict) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, batch: Mapping) -> dict:
        """The outputs (``dict``) of the loss on ``batch`` with the current parameters."""
        if type(batch) is not dict and not isinstance(batch, Mapping):  # (the ABC check only for other types)
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")
        return self._select(self._forward(batch, self.params))

    def _batch_from_kwargs(self, kwargs: dict) -> dict:
        batch: dict = {}
        names = {"_".join(_data.unravel_key(k)): k for k in self.in_keys}
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unexpected keyword argument(s) {unknown}; expected (flat names of in_keys): "
                f"{sorted(names)}"
            )
        for flat, key in names.items():
            if flat in kwargs:
                _data.set_(batch, key, kwargs[flat])
        return batch

    def __call__(self, batch: Mapping | None = None, /, **kwargs: Any) -> Any:
        """``loss(batch) -> dict``; or ``loss(observation=..., next_reward=...)`` -> the outputs in ``out_keys`` order
        (an array if there is one output, else a tuple), as TorchRL's ``@dispatch``."""
        if batch is not None:
            if kwargs:
                raise TypeError("pass either a batch or keyword arrays, not both")
            return self.forward(batch)
        out = self.forward(self._batch_from_kwargs(kwargs))
        vals = tuple(out[k] for k in self.out_keys if k in out)
        return vals[0] if len(vals) == 1 else vals

    def value_and_grad(self, batch: Mapping | None = None, /, *, terms: Sequence[str] | None = None,
                       **kwargs: Any) -> tuple[dict, dict]:
        """Outputs and the gradient of ``sum(loss_* terms)`` (or of ``terms``) w.r.t. :attr:`params`.

        Non-scalar terms (``reduction="none"``) are summed over all their elements. Returns ``(outputs, grads)``:
        ``outputs`` as :meth:`forward` (raw arrays), ``grads`` a dict with the structure of ``loss.params``.
        """
        from ..autodiff import value_and_grad

        if batch is None:
            batch = self._batch_from_kwargs(kwargs)
        elif kwargs:
            raise TypeError("pass either a batch or keyword arrays, not both")
        all_keys = self._all_out_keys()
        if terms is None:
            names = [k for k in all_keys if k.startswith("loss")]
        else:
            names = list(terms)
            bad = [t for t in names if t not in all_keys]
            if bad:
                raise ValueError(f"terms: {bad} are not outputs of {type(self).__name__}; outputs: {all_keys}")

        def total(params: dict) -> tuple:
            out = self._forward(batch, params)
            acc = None
            for k in names:
                v = out[k]
                xp = namespace_of(v)
                v = xp.sum(v) if v.ndim else v
                acc = v if acc is None else acc + v
            return acc, out

        (_, out), grads = value_and_grad(total, has_aux=True)(self.params)
        return self._select(out), grads

    # ------------------------------------------------------------------------------------------------ helpers
    def _write_priority(self, batch: Mapping, value: Any) -> None:
        """Write ``td_error`` into the caller's batch (the one mutation TorchRL documents)."""
        if isinstance(batch, dict):
            _data.set_(batch, self.tensor_keys.priority, stop_gradient(value))

    def __repr__(self) -> str:
        nets = ", ".join(f"{k}{'+target' if k in self._targets else ''}" for k in self._params)
        return f"{type(self).__name__}(networks=[{nets}], out_keys={self.out_keys})"


def _coerce_value_type(value_type: Any) -> Any:
    from .. import value as _value

    VE = _value.ValueEstimators
    if isinstance(value_type, VE):
        return value_type
    if isinstance(value_type, str):
        key = value_type.lower()
        for member in VE:
            if member.name.lower() == key:
                return member
        raise ValueError(f"value_type: unknown alias {value_type!r}; known: {[m.name.lower() for m in VE]}")
    raise TypeError(f"value_type: expected a ValueEstimators member or a string alias, got {type(value_type).__name__}")


def _build_estimator(vt: Any, hp: dict, value_network: Any) -> Any:
    from .. import value as _value

    classes = {
        "TD0": "TD0Estimator",
        "TD1": "TD1Estimator",
        "TDLambda": "TDLambdaEstimator",
        "GAE": "GAE",
        "MAGAE": "MultiAgentGAE",
        "VTrace": "VTrace",
    }
    cls = getattr(_value, classes[vt.name])
    return cls(value_network=value_network, **hp)

