"""Value-estimator classes on nested-dict batches (TorchRL 0.14.1's ``torchrl.objectives.value.advantages``).

``TD0Estimator``, ``TD1Estimator``, ``TDLambdaEstimator``, ``GAE``, ``MultiAgentGAE`` and ``VTrace`` take TorchRL's
keyword arguments (``gamma``, ``lmbda``, ``value_network``, ``average_gae``, ``average_rewards``,
``differentiable``, ``skip_existing``, ``time_dim``, ``rho_thresh``, ``c_thresh``, ``group_key``...) and keys
(``set_keys(advantage=..., value_target=..., value=..., reward=..., done=..., terminated=...)``).

Batches
-------
A batch is a nested ``dict`` of arrays (keys as tuples, see :mod:`arrayrl.data`) laid out as TorchRL's
tensordicts: ``value`` at the root, ``("next", reward|done|terminated|value)``, observations at the root and under
``"next"``. Arrays carry a trailing feature axis: ``[*B, T, 1]``. The batch dimensions are the leading
``value.ndim - 1`` axes (``MultiAgentGAE``: the axes before ``agent_dim``).

* **Time axis**: ``time_dim`` (forward argument, then constructor argument) indexes the batch dimensions as in
  TorchRL (negative values count from the last batch dimension); by default the last batch dimension. A ``[B, 1]``
  replay batch is therefore one trajectory of length ``B`` (TorchRL's behaviour).
* **forward returns a new dict**: ``out = estimator(batch)`` is a shallow copy of ``batch`` with ``advantage`` and
  ``value_target`` (and, when the value network ran, ``value`` and ``("next", value)``; with
  ``average_rewards``, the standardised ``("next", reward)``) written. The caller's dicts and arrays are never
  modified (TorchRL writes into its tensordict in place: write ``td = estimator(td)``).
* **Value network**: any callable ``batch -> batch`` that writes the value key (an :mod:`arrayrl.nn` keyed module, or a
  plain function). With ``params=`` (and ``target_params=``), it is called as ``value_network.apply(params, batch)``.
  It runs on the root batch and on ``batch["next"]``; NaN entries of ``("next", in_key)`` are replaced by the root
  entry first (TorchRL's ``_sanitize_next_obs_nan``). Values already in the batch are reused only with
  ``skip_existing=True``. The next value is always a constant for the tape (TorchRL detaches it), and the network
  parameters never receive a gradient through the estimator (TorchRL detaches ``params``).
* **differentiable**: ``False`` (the class default, as TorchRL) wraps every written array with
  :func:`arrayrl.autodiff.stop_gradient`; ``True`` (the registry default) lets gradients flow to the values and
  rewards through the tape. ``value_estimate`` is not affected (as in TorchRL).

Bad input
---------
Before any arithmetic, the arrays an estimator reads are checked with the functional layer's checks, named by
their batch key (``key ('next', 'reward'): expected shape (4, 1) (the shape of key 'state_value'), got (4,)``):
one library and device, dtype float32 or float64 shared by every floating array, bool flags, one shape (never
broadcast; ``MultiAgentGAE`` broadcasts team signals along ``agent_dim`` first). Python-number hyper-parameters
are range checked in the constructor (``gamma`` and ``lmbda`` in ``[0, 1]``, V-trace's ``rho_thresh`` and
``c_thresh`` in ``(0, inf]``, NaN rejected; array hyper-parameters are not, that would read device data), and
again by the functional call (an attribute assigned later is checked too). Empty batches (a zero batch or time
size) give empty outputs.

Standardisation (``average_gae``, ``average_rewards``, ``average_adv``) of a single element returns 0 instead of
TorchRL's NaN (the unbiased std of one element is taken as 0, then clamped at ``eps``: ``(x - x) / eps``); the
choice is made on the static shape, without reading data.

``device`` and ``deactivate_vmap`` are accepted and ignored (arrays carry their device; there is no vmap).

Single value-network call (``shifted=True``)
--------------------------------------------
TorchRL 0.14.1's budgeted single call. Along the time axis (length ``T``) the network is run once on a sequence of
``L = T + shifted_budget`` slots: the observations ``s_0..s_{T-1}`` in order, with the true next observation
``("next", in_key)[t]`` inserted right after every *truncated* step (``done & ~terminated``, the last step
excluded), and the last next observation ``("next", in_key)[T-1]`` after ``s_{T-1}``. With no truncation inside the
trajectory this is the concatenation ``[s_0, ..., s_{T-1}, s'_{T-1}]`` (plus ``shifted_budget - 1`` zero slots).
``state_value[t]`` is read at the slot of ``s_t`` and ``("next", state_value)[t]`` at the slot that follows it.
It relies on TorchRL's single-step layout: ``("next", obs)[t] == obs[t+1]`` whenever ``done[t]`` is False
(n-step/``MultiStep`` batches break it: use ``shifted=False``). At done boundaries inside the trajectory:

* **truncated step** (``done & ~terminated``): its true next observation is inserted, so it bootstraps from
  ``V(("next", obs)[t])``, exactly as with ``shifted=False``; each insertion uses one slot of the budget.
* **terminated step** (``done & terminated``): nothing is inserted (no budget used); ``("next", state_value)[t]`` is
  the value of the *reset* observation ``obs[t+1]`` (of the last next observation for ``t = T-1``). The estimators
  never read it (a terminated step does not bootstrap), but the written ``("next", state_value)`` differs from
  ``shifted=False`` there.
* **budget exhausted** (more truncations than ``shifted_budget - 1``): the steps whose next slot falls beyond ``L``
  are dropped: ``"shifted_valid"`` (written at the root, shape ``[*B]``, bool) is False there, their advantage and
  value target are 0 and their written values are meaningless. The last kept step is cut like the end of the
  rollout (``done := True``): a non-terminated one bootstraps from its own next observation; a *terminated* one
  stays terminated (TorchRL sets ``terminated := False`` there and bootstraps from the terminal observation: a
  defect, reproduced with ``torchrl_compat=True``, see docs/divergences.md). ``average_gae`` then uses the
  masked (biased) mean and std over the kept steps, as TorchRL; ``shifted_budget >= T`` never drops a step.
* **time axis**: the sequence is built along the estimator's time axis (``time_dim``). TorchRL builds it along the
  last batch dimension (the dimension named ``"time"``, which arrayrl batches do not have) whatever ``time_dim``
  says, which mixes environments when ``time_dim`` is not the last batch dimension; ``torchrl_compat=True``
  reproduces it.
* A batch that holds ``"shifted_valid"`` (the output of a shifted estimator) is treated as TorchRL does, by every
  estimator: the last kept step is cut and the outputs are zeroed where it is False.

One set of parameters serves both ``t`` and ``t+1``: ``target_params`` other than ``params`` raise ``ValueError``
(``params`` alone is accepted; TorchRL raises then too, because it clones ``params`` into ``target_params``). With
``skip_existing=True`` and both values present in the batch, the network does not run and nothing is shifted.
``MultiAgentGAE`` supports it with team-level reward/done/terminated only.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Mapping, TypeVar

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_array, normalize_axis
from .._validate import StructureCache, structure_signature
from ..autodiff import stop_gradient
from ..tree import tree_map
from . import functional as F
from .registry import ValueEstimators, register_value_estimator

__all__ = [
    "ValueEstimatorBase",
    "TD0Estimator",
    "TD1Estimator",
    "TDLambdaEstimator",
    "GAE",
    "MultiAgentGAE",
    "VTrace",
    "TD0Estimate",
    "TD1Estimate",
    "TDLambdaEstimate",
]


# ------------------------------------------------------------------------------------------------ standardising


def _standardize(x: Any, eps: float, axis: Any = None) -> Any:
    """``(x - mean) / max(std, eps)`` with the unbiased std (``torch.std``), over ``axis`` (all by default).

    Decided on the static shape (no data read): a reduction over one element uses std 0 (so the result is 0,
    where ``torch.std`` gives NaN), and an empty ``x`` is returned as it is (nothing to standardise)."""
    xp = namespace_of(x)
    n = math.prod(x.shape[a] for a in (range(x.ndim) if axis is None else axis))
    if n == 0:
        return x
    keep = axis is not None
    loc = xp.mean(x, axis=axis, keepdims=keep)
    scale = xp.clip(xp.std(x, axis=axis, correction=1 if n > 1 else 0, keepdims=keep), min=eps)
    return (x - loc) / scale


def _masked_standardize(x: Any, mask: Any, eps: float, axis: Any = None) -> Any:
    """``(x - mean) / max(std, eps)`` over the entries where the bool ``mask`` (``x``'s shape) is True, with the
    biased std (TorchRL's masked ``average_gae``); the count is clamped at 1."""
    xp = namespace_of(x)
    w = xp.astype(stop_gradient(mask), x.dtype)
    keep = axis is not None
    count = xp.clip(xp.sum(w, axis=axis, keepdims=keep), min=1.0)
    loc = xp.sum(x * w, axis=axis, keepdims=keep) / count
    c = x - loc
    scale = xp.clip(xp.sqrt(xp.sum(c * c * w, axis=axis, keepdims=keep) / count), min=eps)
    return c / scale


def _standardize_by_group(x: Any, groups: Any, eps: float, mask: Any = None) -> Any:
    """Standardise ``x`` within the groups of the integer array ``groups`` (leading dims of ``x``; TorchRL's
    ``_standardize_by_group``). The number of groups is data dependent, as in TorchRL. ``mask`` (bool, ``x``'s
    shape): only those entries count in the means and (unbiased) variances."""
    xp = namespace_of(x)
    while groups.ndim < x.ndim:
        groups = xp.expand_dims(groups, axis=-1)
    if groups.ndim > x.ndim:
        raise ValueError(f"group ids of shape {tuple(groups.shape)} cannot index values of shape {tuple(x.shape)}")
    raw = stop_gradient(groups)
    gxp = namespace_of(raw)
    flat_g = gxp.reshape(gxp.broadcast_to(raw, tuple(x.shape)), (-1,))
    _, inv = gxp.unique_inverse(flat_g)
    n_groups = int(gxp.max(inv)) + 1 if inv.shape[0] else 0
    onehot = gxp.astype(inv[:, None] == gxp.arange(n_groups, device=inv.device)[None, :], x.dtype)  # [n, G]
    flat = xp.reshape(x, (-1,))
    if mask is not None:
        wm = gxp.astype(gxp.reshape(stop_gradient(mask), (-1,)), x.dtype)
        onehot = onehot * wm[:, None]
    count = gxp.sum(onehot, axis=0)
    mean = (flat @ onehot) / gxp.clip(count, min=1.0)
    centered = flat - xp.take(mean, inv, axis=0)
    var = ((centered * centered) @ onehot) / gxp.clip(count - 1.0, min=1.0)
    scale = xp.clip(xp.sqrt(var), min=eps)
    return xp.reshape(centered / xp.take(scale, inv, axis=0), tuple(x.shape))


# --------------------------------------------------------------------------------------------------------- base

_Estimator = TypeVar("_Estimator", bound="ValueEstimatorBase")


class ValueEstimatorBase:
    """Common machinery: keys, value-network calls, time axis, ``forward``/``value_estimate`` protocol.

    Keyword Args:
        value_network: a callable ``batch -> batch`` writing the value key, or ``None`` (the batch must then hold
            ``value`` and ``("next", value)``).
        shifted: ``True``: one value-network call on ``T + shifted_budget`` slots (see the module docstring).
        shifted_budget: the number of extra slots (``>= 1``) of the ``shifted=True`` sequence.
        torchrl_compat: with ``shifted=True``, reproduce TorchRL 0.14.1 where it departs from the correct semantics
            (the sequence built along the last batch dimension whatever ``time_dim``; a terminated last kept step
            bootstraps). Default ``False``.
        differentiable: see the module docstring (default ``False``, as TorchRL).
        skip_existing: reuse values already present in the batch instead of running the network.
        device, deactivate_vmap: accepted for TorchRL compatibility, ignored.
        value_chunk_size, num_chunks (alias ``num_chunk``), value_chunk_dim: split the value-network calls along
            ``value_chunk_dim`` (numerics unchanged).
        group_key: key of an integer array of group ids (leading dims of the values) within which the
            ``average_*`` standardisations are done.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        """Key names (TorchRL defaults). ``sample_log_prob`` is ``"action_log_prob"`` (tensordict 0.14 default)."""

        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "state_value"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        steps_to_next_obs: Any = "steps_to_next_obs"
        sample_log_prob: Any = "action_log_prob"

    default_keys = _AcceptedKeys
    value_network: Any
    gamma: Any  # (set by every concrete estimator's constructor)
    time_dim: int | None = None

    def __init__(
        self,
        *,
        value_network: Any,
        shifted: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        advantage_key: Any = None,
        value_target_key: Any = None,
        value_key: Any = None,
        device: Any = None,
        deactivate_vmap: bool = False,
        value_chunk_size: int | None = None,
        num_chunks: int | None = None,
        num_chunk: int | None = None,
        value_chunk_dim: int = 0,
        shifted_budget: int = 1,
        group_key: Any = None,
        torchrl_compat: bool = False,
    ):
        for name, val in (("advantage_key", advantage_key), ("value_target_key", value_target_key),
                          ("value_key", value_key)):
            if val is not None:
                raise RuntimeError(
                    f"Setting '{name}' via constructor is deprecated, use .set_keys({name[:-4]}='some_key') instead."
                )
        if shifted is not True and shifted is not False:
            raise ValueError(f"shifted must be a boolean, got {shifted!r}.")
        if isinstance(shifted_budget, bool) or not isinstance(shifted_budget, int):
            raise TypeError(f"shifted_budget must be an integer, got {type(shifted_budget)}.")
        if shifted_budget < 1:
            raise ValueError(f"shifted_budget must be >= 1, got {shifted_budget}.")
        if value_network is not None and not callable(value_network):
            raise TypeError(f"value_network: expected a callable batch -> batch, got {type(value_network).__name__}")
        self.value_network = value_network
        self.differentiable = bool(differentiable)
        self.skip_existing = skip_existing
        self.device = device
        self.deactivate_vmap = deactivate_vmap
        self.value_chunk_size = _positive_int(value_chunk_size, "value_chunk_size")
        nc, nc_alias = _positive_int(num_chunks, "num_chunks"), _positive_int(num_chunk, "num_chunk")
        if nc is not None and nc_alias is not None and nc != nc_alias:
            raise ValueError("num_chunks and num_chunk cannot both be set to different values.")
        self.num_chunks = nc if nc is not None else nc_alias
        if self.value_chunk_size is not None and self.num_chunks is not None:
            raise ValueError("value_chunk_size and num_chunks cannot both be set.")
        if isinstance(value_chunk_dim, bool) or not isinstance(value_chunk_dim, int):
            raise TypeError(f"value_chunk_dim must be an integer, got {type(value_chunk_dim)}.")
        self.value_chunk_dim = value_chunk_dim
        self.shifted = shifted
        self.shifted_budget = shifted_budget
        self.torchrl_compat = bool(torchrl_compat)
        self.group_key = group_key
        self._tensor_keys: ValueEstimatorBase._AcceptedKeys | None = None
        self.dep_keys: dict = {}

    # ------------------------------------------------------------------------------------------- construction
    @classmethod
    def for_loss(cls: type[_Estimator], loss_module: Any, **hyperparams: Any) -> _Estimator:
        """Build against a loss: ``value_network`` defaults to ``loss.critic_network``, else ``loss.value_network``."""
        if "value_network" not in hyperparams:
            net = getattr(loss_module, "critic_network", None)
            if net is None:
                net = getattr(loss_module, "value_network", None)
            hyperparams["value_network"] = net
        return cls(**hyperparams)

    # ---------------------------------------------------------------------------------------------------- keys
    @property
    def tensor_keys(self) -> Any:
        if self._tensor_keys is None:
            self.set_keys()
        return self._tensor_keys

    def set_keys(self, **kwargs: Any) -> None:
        """Rename batch keys (``advantage``, ``value_target``, ``value``, ``reward``, ``done``, ``terminated``,
        ``steps_to_next_obs``, ``sample_log_prob``). Unknown names raise ``KeyError``; a ``value`` key that the
        value network does not write raises ``KeyError`` (when the network declares ``out_keys``)."""
        fields = {f.name for f in dataclasses.fields(self._AcceptedKeys)}
        clean = {}
        for name, value in kwargs.items():
            if value is None:
                raise ValueError("tensordict keys cannot be None")
            if not isinstance(value, (str, tuple)):
                raise ValueError(f"key name must be of type NestedKey (str or tuple of str) but got {type(value)}")
            if name not in fields:
                raise KeyError(f"{name} is not an accepted tensordict key for advantages; accepted: {sorted(fields)}")
            value = _data.unravel_key(value)
            value = value[0] if len(value) == 1 else value
            out_keys = getattr(self.value_network, "out_keys", None)
            if name == "value" and out_keys is not None:
                if _data.unravel_key(value) not in [_data.unravel_key(k) for k in out_keys]:
                    raise KeyError(f"value key '{value}' not found in value network out_keys {list(out_keys)}")
            clean[name] = value
        if self._tensor_keys is None:
            conf = dataclasses.asdict(self.default_keys())
            conf.update(self.dep_keys)
        else:
            conf = dataclasses.asdict(self._tensor_keys)
        conf.update(clean)
        self._tensor_keys = self._AcceptedKeys(**conf)

    advantage_key = property(lambda self: self.tensor_keys.advantage)
    value_key = property(lambda self: self.tensor_keys.value)
    value_target_key = property(lambda self: self.tensor_keys.value_target)
    reward_key = property(lambda self: self.tensor_keys.reward)
    done_key = property(lambda self: self.tensor_keys.done)
    terminated_key = property(lambda self: self.tensor_keys.terminated)
    steps_to_next_obs_key = property(lambda self: self.tensor_keys.steps_to_next_obs)
    sample_log_prob_key = property(lambda self: self.tensor_keys.sample_log_prob)

    @property
    def in_keys(self) -> list:
        net_in = getattr(self.value_network, "in_keys", None)
        if net_in is None:
            keys: list = []
        else:
            tk = self.tensor_keys
            keys = list(net_in) + [("next", tk.reward), ("next", tk.done), ("next", tk.terminated)]
            keys += [("next",) + _data.unravel_key(k) for k in net_in]
        if self.group_key is not None and self.group_key not in keys:
            keys.append(self.group_key)
        return keys

    @property
    def out_keys(self) -> list:
        return [self.tensor_keys.advantage, self.tensor_keys.value_target]

    # ----------------------------------------------------------------------------------------------- calling
    def __call__(self, batch: Mapping | None = None, /, **kwargs: Any) -> Any:
        """``estimator(batch, params=..., target_params=..., time_dim=...)`` -> a new batch; or
        ``estimator(observation=..., next_reward=...)`` (flat key names) -> ``(advantage, value_target)``."""
        if batch is not None:
            return self.forward(batch, **kwargs)
        options = {k: kwargs.pop(k) for k in ("params", "target_params", "time_dim") if k in kwargs}
        built: dict = {}
        for flat, value in kwargs.items():
            key = tuple(flat.split("_", 1)) if flat.startswith("next_") else flat
            _data.set_(built, key, value)
        out = self.forward(built, **options)
        return _data.get(out, self.tensor_keys.advantage), _data.get(out, self.tensor_keys.value_target)

    def forward(self, batch: Mapping, *, params: Any = None, target_params: Any = None,
                time_dim: int | None = None) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def value_estimate(self, batch: Mapping, *, params: Any = None, target_params: Any = None,
                       next_value: Any = None, time_dim: int | None = None,
                       **kwargs: Any) -> Any:  # pragma: no cover - overridden
        """The value target only. Subclasses take the options they use (also positionally) and ignore the rest."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ helpers
    def _check_batch(self, batch: Any) -> None:
        if type(batch) is not dict and not isinstance(batch, Mapping):  # (the ABC check only for other types)
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")

    def _batch_ndim(self, value: Any) -> int:
        """Number of batch dimensions of the arrays (all but the trailing feature axis)."""
        return value.ndim - 1

    def _time_axis(self, time_dim: int | None, value: Any) -> int:
        return self._axis_in(time_dim, self._batch_ndim(value), value)

    def _axis_in(self, time_dim: int | None, nb: int, value: Any) -> int:
        """``time_dim`` (or ``self.time_dim``, or the last) as one of ``nb`` batch dimensions."""
        if nb < 1:
            raise ValueError(
                f"Expected a batch with at least one batch dimension (arrays [*B, T, F]), got a value of shape "
                f"{tuple(value.shape)}"
            )
        td = time_dim if time_dim is not None else self.time_dim
        if td is None:
            return nb - 1
        if isinstance(td, bool) or not isinstance(td, int) or not -nb <= td < nb:
            raise ValueError(f"time_dim: expected a batch dimension in [{-nb}, {nb}), got {td!r}")
        return td % nb

    def _gamma(self, batch: Mapping, reward: Any, gamma: Any = None) -> Any:
        """``gamma``, raised to the ``steps_to_next_obs`` power (n-step) when that key is present at the root."""
        gamma = self.gamma if gamma is None else gamma
        steps = _data.get_or(batch, self.tensor_keys.steps_to_next_obs, None)
        if steps is None:
            return gamma
        xp = namespace_of(reward)
        steps = xp.astype(xp.reshape(stop_gradient(steps), tuple(reward.shape)), reward.dtype)
        if not isinstance(gamma, (int, float)):
            gamma = xp.astype(gamma, reward.dtype)
        return gamma**steps

    def _signals(self, batch: Mapping, time_dim: int | None = None) -> tuple:
        """``(reward, done, terminated)``; with ``"shifted_valid"`` in the batch, the last kept step is cut
        (``done := True``; ``terminated := False`` too with ``torchrl_compat``), as TorchRL's
        ``_prepare_shifted_tensordict``."""
        tk = self.tensor_keys
        reward = _data.get(batch, ("next", tk.reward), what="reward")
        done = _data.get(batch, ("next", tk.done), what="done")
        terminated = _data.get_or(batch, ("next", tk.terminated), done)
        valid = _data.get_or(batch, _VALID_KEY, None)
        if valid is not None:
            check_array(done, _key_name(("next", tk.done)))
            check_array(terminated, _key_name(("next", tk.terminated)))
            last = self._last_valid(valid, time_dim, done)
            xp = namespace_of(done, terminated)
            done = xp.logical_or(done, last)
            if self.torchrl_compat:
                terminated = xp.logical_and(terminated, xp.logical_not(last))
        return reward, done, terminated

    def _last_valid(self, valid: Any, time_dim: int | None, like: Any) -> Any:
        """``valid & ~valid[t+1]`` along the time axis (False at the last step), broadcast to ``like``'s shape."""
        check_array(valid, _key_name(_VALID_KEY))
        xp = namespace_of(valid)
        if not xp.isdtype(valid.dtype, "bool"):
            raise TypeError(f"{_key_name(_VALID_KEY)}: expected a bool array, got dtype {valid.dtype}")
        ax = self._axis_in(time_dim, valid.ndim, valid)
        last = xp.logical_and(valid, xp.logical_not(_shift_up(xp, valid, ax, True)))
        return _broadcast_trailing(xp, last, like, _VALID_KEY)

    def _mask_valid(self, out: Mapping, x: Any) -> Any:
        """``x`` zeroed where ``out["shifted_valid"]`` is False (TorchRL's ``_mask_shifted_output``)."""
        valid = _data.get_or(out, _VALID_KEY, None)
        if valid is None:
            return x
        xp = namespace_of(x)
        mask = _broadcast_trailing(namespace_of(valid), valid, x, _VALID_KEY)
        return xp.where(mask, x, xp.zeros((), dtype=x.dtype, device=x.device))

    def _check_signals(self, value: Any, next_value: Any, reward: Any, done: Any, terminated: Any) -> None:
        """The functional layer's checks (:func:`arrayrl.value.functional._validate`) on the value (the reference;
        skipped when ``None``), next value, reward, done and terminated, named by their batch keys.

        Once per structure: the outcome depends only on the five arrays' signatures
        (:func:`~arrayrl._validate.structure_signature`), remembered in :data:`_SIGNALS_CHECKED` once they passed."""
        sig = structure_signature(value, next_value, reward, done, terminated)
        if sig in _SIGNALS_CHECKED:
            return
        tk = self.tensor_keys
        floats = {} if value is None else {_key_name(tk.value): value}
        floats[_key_name(("next", tk.value))] = next_value
        floats[_key_name(("next", tk.reward))] = reward
        F._validate(floats, {_key_name(("next", tk.done)): done, _key_name(("next", tk.terminated)): terminated})
        _SIGNALS_CHECKED.add(sig)

    def _standardized_reward(self, batch: Mapping, reward: Any, eps: float) -> Any:
        groups = self._group_ids(batch)
        return _standardize(reward, eps) if groups is None else _standardize_by_group(reward, groups, eps)

    def _group_ids(self, batch: Mapping) -> Any:
        if self.group_key is None:
            return None
        groups = _data.get_or(batch, self.group_key, None)
        if groups is None:
            raise KeyError(
                f"group_key {self.group_key!r} is missing from the batch; it is needed to standardize within groups."
            )
        return groups

    def _run_net(self, data: Mapping, params: Any) -> Any:
        """Run the value network on ``data`` (chunked if asked) and return the value array."""
        net = self.value_network
        key = self.tensor_keys.value

        def call(d: Mapping) -> Any:
            if params is None:
                out = net(d)
            else:
                if not hasattr(net, "apply"):
                    raise TypeError("params given, but value_network has no apply(params, batch) method")
                out = net.apply(params, d)
            if not isinstance(out, Mapping):
                raise TypeError(f"value_network must return a batch (dict), got {type(out).__name__}")
            return _data.get(out, key, what="value written by value_network")

        chunks = self._chunks(data)
        if chunks is None:
            return call(data)
        vals = [call(c) for c in chunks]
        xp = namespace_of(*vals)
        return xp.concat(vals, axis=self.value_chunk_dim)

    def _chunks(self, data: Mapping) -> list | None:
        chunk_size = self.value_chunk_size
        if chunk_size is None and self.num_chunks is None:
            return None
        leaves = [v for _, v in _leaf_items(data)]
        if not leaves:
            return None
        dim = self.value_chunk_dim
        size = leaves[0].shape[dim]
        if self.num_chunks is not None:
            n = min(self.num_chunks, size)
            base, extra = divmod(size, n) if n else (size, 0)
            bounds, start = [], 0
            for i in range(n):
                stop = start + base + (1 if i < extra else 0)
                bounds.append((start, stop))
                start = stop
        else:
            assert chunk_size is not None  # (one of the two is set: returned above otherwise)
            bounds = [(s, min(size, s + chunk_size)) for s in range(0, size, chunk_size)]
        if len(bounds) <= 1:
            return None

        def cut(a: Any, s: int, e: int) -> Any:
            d = dim % a.ndim
            return a[(slice(None),) * d + (slice(s, e), ...)]

        return [tree_map(lambda a, s=s, e=e: cut(a, s, e), data) for s, e in bounds]

    def _net_inputs(self, batch: Mapping) -> tuple[Mapping, Mapping]:
        """Root and next inputs of the value network (``is_init`` propagated, NaN next inputs sanitised)."""
        root = batch
        nxt = _data.get(batch, "next", what='"next" sub-batch')
        if not isinstance(nxt, Mapping):
            raise TypeError('batch["next"]: expected a nested dict')
        if "is_init" in root and "is_init" in nxt:
            xp = namespace_of(root["is_init"], nxt["is_init"])
            nxt = _data.with_(nxt, "is_init", xp.logical_or(nxt["is_init"], root["is_init"]))
        for k in getattr(self.value_network, "in_keys", None) or []:
            r = _data.get_or(root, k, None)
            n = _data.get_or(nxt, k, None)
            if r is None or n is None or tuple(r.shape) != tuple(n.shape):
                continue
            xp = namespace_of(r, n)
            if not xp.isdtype(stop_gradient(n).dtype, "real floating"):
                continue
            nxt = _data.with_(nxt, k, xp.where(xp.isnan(n), r, n))
        return root, nxt

    def _values(self, batch: Mapping, params: Any, target_params: Any,
                time_dim: int | None = None) -> tuple[Any, Any, dict]:
        """``(value, next_value, out)``; ``out`` is ``batch`` with the network's values written (if it ran) and,
        with ``shifted=True``, ``"shifted_valid"``."""
        tk = self.tensor_keys
        out = dict(batch)
        if self.value_network is None:
            value = _data.get(batch, tk.value, what="state value (no value_network given)")
            next_value = _data.get(batch, ("next", tk.value), what="next state value (no value_network given)")
            return value, next_value, out
        if params is not None:
            params = stop_gradient(params)
            if target_params is None:
                target_params = params
        elif target_params is not None:
            raise ValueError("params and target_params must be either both provided or not.")
        root, nxt = self._net_inputs(batch)
        skip = bool(self.skip_existing)
        if self.shifted and not (skip and _data.has(batch, tk.value) and _data.has(batch, ("next", tk.value))):
            if target_params is not None and target_params is not params:
                raise ValueError("the value at t and t+1 cannot be retrieved in a single call (shifted=True) when "
                                 "target_params differ from params.")
            value, next_value, valid = self._shifted_values(batch, root, nxt, params, time_dim)
            out = _data.with_(out, tk.value, value)
            out = _data.with_(out, ("next", tk.value), next_value)
            out = _data.with_(out, _VALID_KEY, valid)
            return value, stop_gradient(next_value), out
        value = _data.get_or(batch, tk.value, None) if skip else None
        if value is None:
            value = self._run_net(root, params)
            out = _data.with_(out, tk.value, value)
        next_value = _data.get_or(batch, ("next", tk.value), None) if skip else None
        if next_value is None:
            next_value = self._run_net(nxt, stop_gradient(target_params) if target_params is not None else None)
            out = _data.with_(out, ("next", tk.value), next_value)
        return value, stop_gradient(next_value), out

    def _shifted_values(self, batch: Mapping, root: Mapping, nxt: Mapping, params: Any,
                        time_dim: int | None) -> tuple[Any, Any, Any]:
        """``(value, next_value, valid)`` from one network call on ``T + shifted_budget`` slots (module docstring).

        The slot of every item is computed from ``done``/``terminated`` only (no data-dependent control flow):
        ``root_slot[t] = t + #truncations before t``, ``next_slot = root_slot + 1``. The sequence is gathered (no
        scatter in the array API) from the interleaved ``[s_0, s'_0, s_1, s'_1, ...]`` by a stable argsort of the
        slots of the kept items; where a dropped step's observation and the last kept step's next observation
        claim the same slot, the next observation wins (it comes first in the interleaved order), as in TorchRL.
        """
        tk = self.tensor_keys
        done_key, term_key = ("next", tk.done), ("next", tk.terminated)
        done = _data.get(batch, done_key, what="done")
        terminated = _data.get_or(batch, term_key, done)
        for k, a in ((done_key, done), (term_key, terminated)):
            check_array(a, _key_name(k))
            if not namespace_of(a).isdtype(stop_gradient(a).dtype, "bool"):
                raise TypeError(f"{_key_name(k)}: expected a bool array, got dtype {a.dtype}")
            if a.ndim < 2:
                raise ValueError(f"{_key_name(k)}: expected [*B, T, F] with at least one batch dimension, "
                                 f"got shape {tuple(a.shape)}")
        if tuple(done.shape) != tuple(terminated.shape):
            raise ValueError(f"{_key_name(term_key)}: expected shape {tuple(done.shape)} (the shape of "
                             f"{_key_name(done_key)}), got {tuple(terminated.shape)}")
        d, tm = stop_gradient(done), stop_gradient(terminated)
        ixp = namespace_of(d, tm)
        if d.shape[-1] == 1:
            d, tm = d[..., 0], tm[..., 0]
        else:
            d, tm = ixp.any(d, axis=-1), ixp.any(tm, axis=-1)
        shape = tuple(d.shape)
        nb = len(shape)
        ax = nb - 1 if self.torchrl_compat else self._axis_in(time_dim, nb, done)
        T = shape[ax]
        L = T + self.shifted_budget
        dev = d.device
        bshape = tuple(T if i == ax else 1 for i in range(nb))
        arange = ixp.reshape(ixp.arange(T, dtype=ixp.int64, device=dev), bshape)
        is_last = arange == (T - 1)
        reset = ixp.logical_and(ixp.logical_and(d, ixp.logical_not(tm)), ixp.logical_not(is_last))
        reset_i = ixp.astype(reset, ixp.int64)
        root_slot = arange + ixp.cumulative_sum(reset_i, axis=ax) - reset_i
        next_slot = root_slot + 1
        valid = next_slot < L
        next_valid = _shift_up(ixp, valid, ax, True)
        keep_next = ixp.logical_and(valid, ixp.logical_or(ixp.logical_or(reset, is_last), ixp.logical_not(next_valid)))
        keep_root = root_slot < L
        big = ixp.full((), 2 * L + 2, dtype=ixp.int64, device=dev)
        key_root = ixp.where(keep_root, root_slot, big)
        key_next = ixp.where(keep_next, next_slot, big)
        keys = _interleave(ixp, key_root, key_next, ax)  # [.., 2T, ..]
        order = ixp.argsort(keys, axis=ax, stable=True)
        take = tuple(slice(0, L) if i == ax else slice(None) for i in range(nb))
        order = order[take]
        filled = ixp.take_along_axis(keys, order, axis=ax) < L

        in_keys = getattr(self.value_network, "in_keys", None)
        if in_keys is None:
            in_keys = [k for k, v in _leaf_items(root) if k[0] != "next" and tuple(v.shape[:nb]) == shape]
        data_in = dict(root)
        data_in.pop("next", None)
        for k in in_keys:
            r = _data.get_or(root, k, None)
            if r is None:
                continue
            n = _data.get_or(nxt, k, r)
            name = _key_name(k)
            if tuple(r.shape[:nb]) != shape:
                raise ValueError(f"{name}: shifted=True needs the batch shape {shape} (of the done flags) in front, "
                                 f"got {tuple(r.shape)}")
            if tuple(n.shape) != tuple(r.shape):
                raise ValueError(f"key {_data.key_str(('next',) + _data.unravel_key(k))}: expected shape "
                                 f"{tuple(r.shape)} (the shape of {name}), got {tuple(n.shape)}")
            xp = namespace_of(r, n)
            seq = _interleave(xp, r, n, ax)
            idx = _broadcast_trailing(ixp, order, seq, k, axis_len=(ax, L))
            seq = xp.take_along_axis(seq, idx, axis=ax)
            mask = _broadcast_trailing(ixp, filled, seq, k)
            seq = xp.where(mask, seq, xp.zeros((), dtype=seq.dtype, device=seq.device))
            data_in = _data.with_(data_in, k, seq)
        values = self._run_net(data_in, params)
        check_array(values, "value written by value_network")
        if tuple(values.shape[:nb]) != tuple(L if i == ax else s for i, s in enumerate(shape)):
            raise ValueError(f"value written by value_network: expected the batch shape of its input in front, got "
                             f"{tuple(values.shape)}")
        vxp = namespace_of(values)

        def gather(slot: Any) -> Any:
            idx = _broadcast_trailing(ixp, ixp.clip(slot, max=L - 1), values, tk.value, axis_len=(ax, T))
            return vxp.take_along_axis(values, idx, axis=ax)

        return gather(root_slot), gather(next_slot), valid

    def _next_value(self, batch: Mapping, target_params: Any) -> Any:
        """``V(s')``: ``batch["next"][value]`` without a network, else the network run on ``batch["next"]``."""
        tk = self.tensor_keys
        if self.value_network is None:
            return _data.get(batch, ("next", tk.value), what="next state value")
        _, nxt = self._net_inputs(batch)
        return stop_gradient(self._run_net(nxt, stop_gradient(target_params) if target_params is not None else None))

    def _finish(self, batch: Mapping, out: dict, written: dict) -> dict:
        """Write ``{key: array}`` into ``out``; with ``differentiable=False`` every array the estimator wrote
        (including the values computed by the network) is a constant for the tape."""
        tk = self.tensor_keys
        if not self.differentiable:
            for k in (tk.value, ("next", tk.value)):
                v = _data.get_or(out, k, None)
                if v is not None and _data.get_or(batch, k, None) is not v:
                    out = _data.with_(out, k, stop_gradient(v))
        for k, v in written.items():
            if k in (tk.advantage, tk.value_target):
                v = self._mask_valid(out, v)
            out = _data.with_(out, k, v if self.differentiable else stop_gradient(v))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={getattr(self, 'gamma', None)!r}, differentiable={self.differentiable})"


_VALID_KEY = "shifted_valid"


def _shift_up(xp: Any, a: Any, ax: int, fill: bool) -> Any:
    """``a[t+1]`` along ``ax``, ``fill`` at the last index (bool arrays)."""
    n = a.shape[ax]
    rest = a[tuple(slice(1, n) if i == ax else slice(None) for i in range(a.ndim))]
    pad_shape = tuple(1 if i == ax else s for i, s in enumerate(a.shape))
    return xp.concat([rest, xp.full(pad_shape, fill, dtype=a.dtype, device=a.device)], axis=ax)


def _interleave(xp: Any, a: Any, b: Any, ax: int) -> Any:
    """``[a_0, b_0, a_1, b_1, ...]`` along ``ax`` (``a``, ``b`` of one shape)."""
    st = xp.stack([a, b], axis=ax + 1)
    shape = list(a.shape)
    shape[ax] = 2 * shape[ax]
    return xp.reshape(st, tuple(shape))


def _broadcast_trailing(xp: Any, a: Any, like: Any, key: Any, axis_len: tuple | None = None) -> Any:
    """``a`` (shape a prefix of ``like``'s) with trailing axes added and broadcast to ``like``'s shape (with
    ``axis_len=(ax, n)``, axis ``ax`` of the result has length ``n``)."""
    target = list(like.shape)
    if axis_len is not None:
        target[axis_len[0]] = axis_len[1]
    if a.ndim > len(target) or tuple(a.shape) != tuple(target[: a.ndim]):
        raise ValueError(f"{_key_name(key)}: shape {tuple(like.shape)} does not start with the batch shape "
                         f"{tuple(a.shape)}")
    a = xp.reshape(a, tuple(a.shape) + (1,) * (len(target) - a.ndim))
    return xp.broadcast_to(a, tuple(target))


#: signatures of (value, next value, reward, done, terminated) that passed ``_check_signals``
_SIGNALS_CHECKED = StructureCache(128)


def _key_name(key: Any) -> str:
    """How messages name a batch key: ``key ('next', 'reward')``, ``key 'state_value'``."""
    return f"key {_data.key_str(key)}"


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer or None, got {type(value)}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return value


def _leaf_items(tree: Mapping, prefix: tuple = ()) -> list:
    items = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            items.extend(_leaf_items(v, prefix + (k,)))
        else:
            items.append((prefix + (k,), v))
    return items


# ------------------------------------------------------------------------------------------- TD(0), TD(1), TD(λ)


class _ReturnEstimator(ValueEstimatorBase):
    """Shared forward of the return-based estimators: ``value_target = value_estimate(...)``, advantage = target - V."""

    _reward_eps = 1e-5

    def __init__(self, *, gamma: Any, average_rewards: bool = False, time_dim: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        F._check_hyperparameter(gamma, "gamma")
        self.gamma = gamma
        self.average_rewards = average_rewards
        self.time_dim = time_dim

    def forward(self, batch: Mapping, *, params: Any = None, target_params: Any = None,
                time_dim: int | None = None) -> dict:
        self._check_batch(batch)
        value, next_value, out = self._values(batch, params, target_params, time_dim)
        target, reward = self._target(out, next_value, time_dim, value)
        written = {self.tensor_keys.advantage: target - value, self.tensor_keys.value_target: target}
        if self.average_rewards:
            written[("next", self.tensor_keys.reward)] = reward
        return self._finish(batch, out, written)

    def value_estimate(self, batch: Mapping, target_params: Any = None, next_value: Any = None,
                       time_dim: int | None = None, **kwargs: Any) -> Any:
        """The value target only (``next_value`` given, or computed from ``batch["next"]``)."""
        self._check_batch(batch)
        if next_value is None:
            next_value = self._next_value(batch, target_params)
        return self._target(batch, next_value, time_dim)[0]

    def _target(self, batch: Mapping, next_value: Any, time_dim: int | None, value: Any = None) -> tuple[Any, Any]:
        """``(value target, reward used)``; ``value`` (when given) is checked with the other arrays."""
        reward, done, terminated = self._signals(batch, time_dim)
        self._check_signals(value, next_value, reward, done, terminated)
        if self.average_rewards:
            reward = self._standardized_reward(batch, reward, self._reward_eps)
        gamma = self._gamma(batch, reward)
        return self._estimate(gamma, next_value, reward, done, terminated, time_dim), reward

    def _estimate(self, gamma, next_value, reward, done, terminated, time_dim):  # pragma: no cover
        raise NotImplementedError


@register_value_estimator(ValueEstimators.TD0, default_kwargs={"gamma": 0.99, "differentiable": True})
class TD0Estimator(_ReturnEstimator):
    """TD(0): ``value_target = r + gamma (1 - terminated) V(s')``, ``advantage = value_target - V(s)``.

    Keyword Args:
        gamma: discount. average_rewards: standardise the rewards first (unbiased std clamped at 1e-5).
        Others: see :class:`ValueEstimatorBase`.
    """

    def __init__(self, *, gamma: Any, value_network: Any, average_rewards: bool = False, **kwargs: Any):
        kwargs.pop("time_dim", None)
        super().__init__(gamma=gamma, value_network=value_network, average_rewards=average_rewards, **kwargs)

    def _estimate(self, gamma, next_value, reward, done, terminated, time_dim):
        """:func:`~arrayrl.value.functional.td0_return_estimate`. With a Python ``float`` gamma (the common case) its
        unchecked formula :func:`~arrayrl.value.functional._td0_target` is applied directly: ``_target`` has just
        checked these arrays (``_check_signals``: one library and device, one float dtype, one shape), so the
        functional's re-check of the same arrays is skipped (``float32 in, float32 out``: a Python float does not
        promote). A gamma outside ``[0, 1]`` (reassigned after construction) goes to the functional, which raises."""
        if type(gamma) is float and 0.0 <= gamma <= 1.0:
            return F._td0_target(gamma, next_value, reward, terminated)
        return F.td0_return_estimate(gamma, next_value, reward, terminated)


@register_value_estimator(ValueEstimators.TD1, default_kwargs={"gamma": 0.99, "differentiable": True})
class TD1Estimator(_ReturnEstimator):
    """TD(1): the Monte-Carlo return bootstrapped at truncations and at the end of the rollout
    (:func:`~arrayrl.value.functional.td1_return_estimate`).

    Keyword Args:
        gamma: discount. average_rewards: standardise the rewards (clamp 1e-5). time_dim: see the module docstring.
    """

    def __init__(self, *, gamma: Any, value_network: Any, average_rewards: bool = False,
                 time_dim: int | None = None, **kwargs: Any):
        super().__init__(gamma=gamma, value_network=value_network, average_rewards=average_rewards,
                         time_dim=time_dim, **kwargs)

    def _estimate(self, gamma, next_value, reward, done, terminated, time_dim):
        ax = self._time_axis(time_dim, reward)
        return F.td1_return_estimate(gamma, next_value, reward, done, terminated, time_dim=ax)


@register_value_estimator(ValueEstimators.TDLambda,
                          default_kwargs={"gamma": 0.99, "lmbda": 0.95, "differentiable": True})
class TDLambdaEstimator(_ReturnEstimator):
    """TD(lambda) return (:func:`~arrayrl.value.functional.td_lambda_return_estimate`).

    Keyword Args:
        gamma, lmbda: discount and lambda. average_rewards: standardise the rewards (clamp 1e-4).
        vectorized: accepted for TorchRL compatibility (both paths are the same exact scan).
    """

    _reward_eps = 1e-4

    def __init__(self, *, gamma: Any, lmbda: Any, value_network: Any, average_rewards: bool = False,
                 vectorized: bool = True, time_dim: int | None = None, **kwargs: Any):
        super().__init__(gamma=gamma, value_network=value_network, average_rewards=average_rewards,
                         time_dim=time_dim, **kwargs)
        F._check_hyperparameter(lmbda, "lmbda")
        self.lmbda = lmbda
        self.vectorized = vectorized

    def _estimate(self, gamma, next_value, reward, done, terminated, time_dim):
        ax = self._time_axis(time_dim, reward)
        return F.td_lambda_return_estimate(gamma, self.lmbda, next_value, reward, done, terminated, time_dim=ax)


# ---------------------------------------------------------------------------------------------------------- GAE


@register_value_estimator(ValueEstimators.GAE, default_kwargs={"gamma": 0.99, "lmbda": 0.95, "differentiable": True})
class GAE(ValueEstimatorBase):
    """Generalized advantage estimation (Schulman et al., 2016; :func:`~arrayrl.value.functional.generalized_advantage_estimate`).

    Keyword Args:
        gamma, lmbda: discount and lambda (scalars or per-step arrays).
        value_network: see :class:`ValueEstimatorBase` (``None``: read ``value`` and ``("next", value)``).
        average_gae: standardise the advantage (unbiased std clamped at 1e-4) *after* ``value_target = A + V``
            (so the target uses the raw advantage, as TorchRL).
        vectorized: accepted for TorchRL compatibility (one exact implementation).
        time_dim: see the module docstring.
        auto_reset_env: read ``("next", "truncated")``: ``r += gamma V(s) truncated`` and ``terminated := done``.
    """

    def __init__(self, *, gamma: Any, lmbda: Any, value_network: Any, average_gae: bool = False,
                 differentiable: bool = False, vectorized: bool | None = None, time_dim: int | None = None,
                 auto_reset_env: bool = False, **kwargs: Any):
        super().__init__(value_network=value_network, differentiable=differentiable, **kwargs)
        F._check_hyperparameter(gamma, "gamma")
        F._check_hyperparameter(lmbda, "lmbda")
        self.gamma = gamma
        self.lmbda = lmbda
        self.average_gae = average_gae
        self.vectorized = vectorized
        self.time_dim = time_dim
        self.auto_reset_env = auto_reset_env

    def forward(self, batch: Mapping, *, params: Any = None, target_params: Any = None,
                time_dim: int | None = None) -> dict:
        self._check_batch(batch)
        value, next_value, out = self._values(batch, params, target_params, time_dim)
        adv, target = self._gae(out, value, next_value, time_dim)
        if self.average_gae:
            adv = self._normalize_advantage(adv, self._group_ids(batch), _data.get_or(out, _VALID_KEY, None))
        return self._finish(batch, out, {self.tensor_keys.advantage: adv, self.tensor_keys.value_target: target})

    def value_estimate(self, batch: Mapping, params: Any = None, target_params: Any = None,
                       time_dim: int | None = None, **kwargs: Any) -> Any:
        """The GAE value target ``A + V`` (runs the value network like :meth:`forward`)."""
        self._check_batch(batch)
        value, next_value, out = self._values(batch, params, target_params, time_dim)
        return self._gae(out, value, next_value, time_dim)[1]

    def _gae(self, batch: Mapping, value: Any, next_value: Any, time_dim: int | None) -> tuple[Any, Any]:
        reward, done, terminated = self._signals(batch, time_dim)
        tk = self.tensor_keys
        reward, done, terminated = (self._broadcast(a, value, ("next", k))
                                    for a, k in ((reward, tk.reward), (done, tk.done), (terminated, tk.terminated)))
        self._check_signals(value, next_value, reward, done, terminated)
        gamma = self._gamma(batch, reward)
        if self.auto_reset_env:
            truncated = self._broadcast(_data.get(batch, ("next", "truncated"), what="truncated"), value,
                                        ("next", "truncated"))
            F._validate({_key_name(tk.value): value}, {_key_name(("next", "truncated")): truncated})
            xp = namespace_of(reward, value)
            reward = reward + xp.where(truncated, gamma * value, xp.zeros((), dtype=reward.dtype, device=reward.device))
            terminated = done
        ax = self._time_axis(time_dim, value)
        return F.generalized_advantage_estimate(
            gamma, self.lmbda, value, next_value, reward, done, terminated, time_dim=ax
        )

    def _broadcast(self, a: Any, value: Any, key: Any) -> Any:
        """The batch array ``a`` (read at ``key``) as the estimator sees it: unchanged here (see MultiAgentGAE)."""
        return a

    def _normalize_advantage(self, adv: Any, groups: Any, valid: Any = None) -> Any:
        """Standardise (clamp 1e-4); with ``valid`` (``"shifted_valid"``), over the kept steps only: the biased
        std without groups, the unbiased one within groups (TorchRL's two masked variants)."""
        if valid is None:
            return _standardize(adv, 1e-4) if groups is None else _standardize_by_group(adv, groups, 1e-4)
        mask = _broadcast_trailing(namespace_of(valid), valid, adv, _VALID_KEY)
        if groups is None:
            return _masked_standardize(adv, mask, 1e-4)
        return _standardize_by_group(adv, groups, 1e-4, mask=mask)


@register_value_estimator(ValueEstimators.MAGAE, default_kwargs={"gamma": 0.99, "lmbda": 0.95, "differentiable": True})
class MultiAgentGAE(GAE):
    """GAE with per-agent values ``[*B, T, n_agents, 1]`` and team-level reward/done/terminated ``[*B, T, 1]``.

    Team signals (one dimension fewer than the value) are broadcast along ``agent_dim``; per-agent signals pass
    through; any other rank raises ``ValueError``. ``average_gae`` standardises per agent. The batch dimensions
    (for ``time_dim``) are the axes before ``agent_dim``.

    Keyword Args:
        agent_dim: the agent axis of the value (default ``-2``). Others: see :class:`GAE`.
    """

    def __init__(self, *, agent_dim: int = -2, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(agent_dim, bool) or not isinstance(agent_dim, int):
            raise TypeError(f"agent_dim: expected an int, got {type(agent_dim).__name__}")
        self.agent_dim = agent_dim

    def _shifted_values(self, batch: Mapping, root: Mapping, nxt: Mapping, params: Any,
                        time_dim: int | None) -> tuple[Any, Any, Any]:
        value, next_value, valid = super()._shifted_values(batch, root, nxt, params, time_dim)
        done = _data.get(batch, ("next", self.tensor_keys.done))
        if done.ndim != value.ndim - 1:
            raise NotImplementedError(
                f"MultiAgentGAE with shifted=True needs team-level {_key_name(('next', self.tensor_keys.done))} "
                f"(one dimension fewer than the value {tuple(value.shape)}), got shape {tuple(done.shape)}; "
                f"use shifted=False for per-agent done flags."
            )
        return value, next_value, valid

    def _agent_axis(self, value: Any) -> int:
        """``agent_dim`` as an axis of ``value`` (``ValueError`` naming ``agent_dim`` when out of range; no wrap)."""
        return normalize_axis(self.agent_dim, value.ndim, "agent_dim")

    def _batch_ndim(self, value: Any) -> int:
        return self._agent_axis(value)

    def _broadcast(self, a: Any, value: Any, key: Any) -> Any:
        check_array(a, _key_name(key))
        if a.ndim == value.ndim:
            return a
        if a.ndim != value.ndim - 1:
            raise ValueError(
                f"{_key_name(key)}: MultiAgentGAE expected the reward/done/terminated tensor to have either the same "
                f"number of dims as the value tensor (per-agent) or one fewer (team-shared). "
                f"Got tensor.shape={tuple(a.shape)}, value.shape={tuple(value.shape)}."
            )
        ax = self._agent_axis(value)
        xp = namespace_of(a)
        expanded = xp.expand_dims(a, axis=ax)
        shape = list(expanded.shape)
        shape[ax] = value.shape[ax]
        return xp.broadcast_to(expanded, tuple(shape))

    def _normalize_advantage(self, adv: Any, groups: Any, valid: Any = None) -> Any:
        ax = self._agent_axis(adv)
        mask = None if valid is None else _broadcast_trailing(namespace_of(valid), valid, adv, _VALID_KEY)
        if groups is None:
            reduce = tuple(d for d in range(adv.ndim) if d != ax)
            if mask is not None:
                return _masked_standardize(adv, mask, 1e-4, axis=reduce)
            return _standardize(adv, 1e-4, axis=reduce)
        xp = namespace_of(stop_gradient(groups))
        g = stop_gradient(groups)
        while g.ndim < adv.ndim:
            g = xp.expand_dims(g, axis=-1)
        n = adv.shape[ax]
        agents = xp.reshape(xp.arange(n, device=g.device), tuple(n if d == ax else 1 for d in range(adv.ndim)))
        composite = xp.broadcast_to(g, tuple(adv.shape)) * n + xp.astype(agents, g.dtype)
        return _standardize_by_group(adv, composite, 1e-4, mask=mask)


# ------------------------------------------------------------------------------------------------------ V-trace


_VTraceT = TypeVar("_VTraceT", bound="VTrace")


@register_value_estimator(ValueEstimators.VTrace, default_kwargs={"gamma": 0.99, "differentiable": True})
class VTrace(ValueEstimatorBase):
    """V-trace (Espeholt et al., 2018; :func:`~arrayrl.value.functional.vtrace_advantage_estimate`).

    ``log_mu`` (behaviour policy) is read from ``sample_log_prob`` (default ``"action_log_prob"``); it (and
    ``log_pi``) must have the value's shape ``[*B, T, 1]`` or TorchRL's ``[*B, T]`` (reshaped). Any other shape is
    a ``ValueError`` naming the key, even one of the same size (TorchRL's ``view_as`` accepts those). ``log_pi``
    (current policy) comes from ``actor_network(batch)``: either an array, or a batch from which ``sample_log_prob``
    is read. TorchRL's actor call returns ``log pi`` of a *fresh* (deterministic) sample,
    not of the stored action; an arrayrl ``ProbabilisticActor`` called on the batch does the same. For IMPALA's
    ``log pi(a_t | s_t)``, pass ``actor_network=lambda b: actor.log_prob(actor.params, b)``.

    Keyword Args:
        gamma: scalar discount (``NotImplementedError`` for an array, as TorchRL).
        actor_network: see above. value_network: see :class:`ValueEstimatorBase`.
        rho_thresh, c_thresh: truncation levels in ``(0, inf]`` (default 1). average_adv: standardise (clamp 1e-5).
    """

    def __init__(self, *, gamma: Any, actor_network: Callable, value_network: Any, rho_thresh: Any = 1.0,
                 c_thresh: Any = 1.0, average_adv: bool = False, differentiable: bool = False,
                 time_dim: int | None = None, **kwargs: Any):
        super().__init__(value_network=value_network, differentiable=differentiable, **kwargs)
        if getattr(gamma, "ndim", 0) != 0:
            raise NotImplementedError("Per-value gamma is not supported yet. Gamma must be a scalar.")
        if actor_network is None or not callable(actor_network):
            raise TypeError("actor_network: expected a callable batch -> log-probability (array or batch)")
        F._check_hyperparameter(gamma, "gamma")
        for name, thresh in (("rho_thresh", rho_thresh), ("c_thresh", c_thresh)):
            F._check_hyperparameter(thresh, name, **F._THRESHOLD_RANGE)
        self.gamma = gamma
        self.actor_network = actor_network
        self.rho_thresh = rho_thresh
        self.c_thresh = c_thresh
        self.average_adv = average_adv
        self.time_dim = time_dim

    @classmethod
    def for_loss(cls: type[_VTraceT], loss_module: Any, **hyperparams: Any) -> _VTraceT:
        """Also picks ``actor_network`` from ``loss_module.actor_network``."""
        hyperparams.setdefault("actor_network", getattr(loss_module, "actor_network", None))
        return super().for_loss(loss_module, **hyperparams)

    @property
    def in_keys(self) -> list:
        return super().in_keys + [self.tensor_keys.sample_log_prob]

    def forward(self, batch: Mapping, *, params: Any = None, target_params: Any = None,
                time_dim: int | None = None) -> dict:
        self._check_batch(batch)
        value, next_value, out = self._values(batch, params, target_params, time_dim)
        adv, vs = self._vtrace(out, value, next_value, time_dim)
        if self.average_adv:
            groups = self._group_ids(batch)
            adv = _standardize(adv, 1e-5) if groups is None else _standardize_by_group(adv, groups, 1e-5)
        return self._finish(batch, out, {self.tensor_keys.advantage: adv, self.tensor_keys.value_target: vs})

    def value_estimate(self, batch: Mapping, params: Any = None, target_params: Any = None,
                       time_dim: int | None = None, **kwargs: Any) -> Any:
        """The V-trace target ``vs``."""
        self._check_batch(batch)
        value, next_value, out = self._values(batch, params, target_params, time_dim)
        return self._vtrace(out, value, next_value, time_dim)[1]

    def _log_pi(self, batch: Mapping, value: Any) -> tuple[Any, str]:
        """``(log pi of the value's shape, how messages name it)`` from ``actor_network(batch)``."""
        res = self.actor_network(batch)
        name = "log-probability returned by actor_network"
        if isinstance(res, Mapping):
            key = self.tensor_keys.sample_log_prob
            res = _data.get(res, key, what="log-probability written by actor_network")
            name = f"{_key_name(key)} written by actor_network"
        return _as_value_shape(res, value, name), name

    def _vtrace(self, batch: Mapping, value: Any, next_value: Any, time_dim: int | None) -> tuple[Any, Any]:
        tk = self.tensor_keys
        reward, done, terminated = self._signals(batch, time_dim)
        lp = _data.get(batch, tk.sample_log_prob, what="behaviour log-probability")
        self._check_signals(value, next_value, reward, done, terminated)
        mu_name = _key_name(tk.sample_log_prob)
        log_mu = _as_value_shape(lp, value, mu_name)
        log_pi, pi_name = self._log_pi(batch, value)
        F._validate({_key_name(tk.value): value, mu_name: log_mu, pi_name: log_pi}, {})
        gamma = self._gamma(batch, reward)
        ax = self._time_axis(time_dim, value)
        return F.vtrace_advantage_estimate(
            gamma, log_pi, log_mu, value, next_value, reward, done, terminated,
            rho_thresh=self.rho_thresh, c_thresh=self.c_thresh, time_dim=ax,
        )


def _as_value_shape(log_prob: Any, value: Any, name: str) -> Any:
    """A log-probability of the value's shape ``[*B, T, 1]``, or of that shape without the trailing 1 (TorchRL's
    ``[*B, T]`` ``sample_log_prob``), reshaped to the value's shape. Any other shape (even one of the same size)
    raises ``ValueError`` naming ``name``."""
    check_array(log_prob, name)
    want, got = tuple(value.shape), tuple(log_prob.shape)
    if got == want:
        return log_prob
    if want[-1:] == (1,) and got == want[:-1]:
        return namespace_of(log_prob).reshape(log_prob, want)
    raise ValueError(f"{name}: expected shape {want} (the value's shape) or {want[:-1]}, got {got}")


# ---------------------------------------------------------------------------------------------- deprecated names


def _deprecated(cls: type[ValueEstimatorBase], old: str) -> type:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(f"class {old} is deprecated, please use {cls.__name__} instead.", DeprecationWarning,
                      stacklevel=2)
        cls.__init__(self, *args, **kwargs)

    return type(old, (cls,), {"__init__": __init__, "__doc__": f"Deprecated alias of :class:`{cls.__name__}`."})


TD0Estimate = _deprecated(TD0Estimator, "TD0Estimate")
TD1Estimate = _deprecated(TD1Estimator, "TD1Estimate")
TDLambdaEstimate = _deprecated(TDLambdaEstimator, "TDLambdaEstimate")
