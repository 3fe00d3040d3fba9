"""Random Network Distillation: :class:`RNDLoss` (TorchRL 0.14.1 ``torchrl.objectives.rnd.RNDLoss``) and the
observation statistics :class:`RunningMeanStd` as an explicit state.

Burda, Edwards, Storkey & Klimov 2018, "Exploration by Random Network Distillation" (arXiv:1810.12894). A frozen,
randomly initialised *target* network ``f`` and a trained *predictor* ``f^``; the predictor's error on the next
observation is the intrinsic reward, and this loss trains the predictor on a random fraction of each batch
(per sample, ``x`` the next observation, ``F`` features, ``u ~ U[0, 1)`` one draw per sample from the generator)::

    x   = clip((x - mean) / sqrt(max(var, 1e-8)), -obs_clip, obs_clip)      (only with obs_rms)
    e   = mean_F (f^(x) - sg f(x))**2                                       [*B]
    m   = u < update_fraction                                               (no draw when update_fraction == 1)
    loss_predictor = sum(e m) / max(sum(m), 1)    ("sum": sum(e m); "none": e with zeros where m is off)

which is CleanRL's ``ppo_rnd_envpool.py`` (``update_proportion``) and TorchRL's. Loss masks of the batch
(:attr:`~arrayrl.objectives.LossModule.loss_mask_key`) are ANDed with ``m``.

Explicit state (DESIGN section 7): ``obs_rms`` is the dict ``{"mean", "var", "count"}`` of :class:`RunningMeanStd`
(``state = RunningMeanStd(shape=(F,)).init(like=obs)``; ``state = rms.update(obs, state)`` returns a new one); the
loss only reads it (TorchRL's loss never updates the statistics either: the collection transform does). Assign a new
state with ``loss.obs_rms = state``. The target network's parameters are read live from ``target_network.params``
(``loss.target_network_params``, never in ``loss.params``, so never trained).

Dtype: floating observations keep their dtype (TorchRL casts to float32 with ``.float()``); integer observations
(pixels) are cast to the predictor's parameter dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from .. import data as _data
from .._backend import device_of, namespace_of
from .._checks import check_floating
from .._validate import check_choice, check_number
from ..tree import tree_leaves
from .common import LossModule
from .utils import stop_gradient
from .value_norm import ValueNorm, _moments

__all__ = ["RNDLoss", "RunningMeanStd", "normalize_observation"]


class RunningMeanStd(ValueNorm):
    """TorchRL's ``torchrl.envs.transforms.rnd.RunningMeanStd`` as a pure state update (the pattern of
    :mod:`arrayrl.objectives.value_norm`).

    State: ``mean [*shape]`` (zeros), ``var [*shape]`` (ones), ``count []`` (``epsilon``, default ``1e-4``).
    ``update(x, state)`` folds in a batch ``[*R, *shape]`` with the parallel (Chan et al.) update of the population
    variance::

        d = mean_b - mean;  n' = n + n_b;  mean' = mean + d n_b / n'
        var' = (var n + var_b n_b + d**2 n n_b / n') / n'

    ``normalize(x, state) = (x - mean) / sqrt(max(var, 1e-8))``. A ``mask`` over the leading axes drops rows (a
    batch with no valid row leaves the state unchanged).
    """

    _STATE = (("mean", True), ("var", True), ("count", False))

    def __init__(self, shape: int | Sequence[int] = (), epsilon: float = 1e-4, device: Any = None) -> None:
        super().__init__(shape=shape, epsilon=epsilon, device=device)

    def init(self, like: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> dict:
        state = super().init(like, xp=xp, dtype=dtype, device=device)
        xs = namespace_of(state["mean"])
        return {"mean": state["mean"], "var": xs.ones_like(state["var"]),
                "count": state["count"] + self.epsilon}

    def update(self, value_target: Any, state: Mapping, *, mask: Any = None) -> dict:
        x, w, count, axes = self._prepare(value_target, state, mask)
        xp = namespace_of(x)
        mean_b, mean_sq = _moments(x, w, count, axes)
        if not axes:
            n_b, var_b = 1.0, xp.zeros_like(x)
        elif w is None:
            n_b, var_b = float(count), xp.var(x, axis=axes, correction=0)
        else:
            n_b = xp.max(count)
            var_b = xp.sum((x - mean_b) ** 2 * w, axis=axes) / xp.clip(count, min=1.0)
        n = state["count"]
        d = mean_b - state["mean"]
        total = n + n_b
        new = {"mean": state["mean"] + d * (n_b / total),
               "var": (state["var"] * n + var_b * n_b + d ** 2 * (n * n_b / total)) / total,
               "count": total}
        return self._keep_if_empty(count, new, state)

    def normalize(self, value_target: Any, state: Mapping) -> Any:
        state = self._check_state(state)
        return normalize_observation(value_target, state)

    def denormalize(self, normalized_value: Any, state: Mapping) -> Any:
        return normalized_value * self.scale(state) + state["mean"]

    def scale(self, state: Mapping) -> Any:
        state = self._check_state(state)
        xp = namespace_of(state["var"])
        return xp.sqrt(xp.clip(state["var"], min=1e-8))


def normalize_observation(obs: Any, state: Mapping, clip: float | None = None) -> Any:
    """``(obs - mean) / sqrt(max(var, 1e-8))``, then clipped to ``[-clip, clip]`` (no clip with ``None``).

    ``state`` needs ``"mean"`` and ``"var"`` broadcasting against ``obs``'s trailing axes (a
    :class:`RunningMeanStd` state). The statistics are constants (no gradient); ``obs`` keeps its dtype.
    """
    if not isinstance(state, Mapping) or "mean" not in state or "var" not in state:
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"obs_rms: expected a state dict with 'mean' and 'var' (RunningMeanStd.init), got {got}")
    check_floating(obs, "observation")
    mean, var = stop_gradient(state["mean"]), stop_gradient(state["var"])
    for name, s in (("mean", mean), ("var", var)):
        n = s.ndim
        if n > obs.ndim or tuple(obs.shape[obs.ndim - n:]) != tuple(s.shape):
            raise ValueError(f"obs_rms[{name!r}]: shape {tuple(s.shape)} does not match the trailing axes of the "
                             f"observation, shape {tuple(obs.shape)}")
    xs = namespace_of(mean)
    if mean.dtype != obs.dtype:
        mean, var = xs.astype(mean, obs.dtype), xs.astype(var, obs.dtype)
    xp = namespace_of(obs, mean)
    out = (obs - mean) / xs.sqrt(xs.clip(var, min=1e-8))
    if clip is not None:
        out = xp.clip(out, min=-clip, max=clip)
    return out


class RNDLoss(LossModule):
    """The RND predictor loss (TorchRL ``RNDLoss``); see the module docstring.

    Args:
        predictor_network: the trained network (an arrayrl module with ``.params`` and ``.apply(params, x)``, e.g.
            :class:`arrayrl.nn.MLP`), ``[*B, D] -> [*B, F]``.
        target_network: the frozen random network of the same output shape (its ``.params`` are read live, never
            trained).

    Keyword Args:
        obs_rms: ``None`` (no normalisation) or a :class:`RunningMeanStd` state ``{"mean", "var", "count"}``.
        obs_clip: clip of the normalised observation (default 5.0; only with ``obs_rms``).
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"`` (``[*B]``, zeros where the sample is not drawn).
        update_fraction: the fraction of samples trained on, in ``[0, 1]`` (default 0.25; 1 draws nothing).
        generator: an :class:`arrayrl.random.Generator` (``uniform`` draws of shape ``[*B]``, torch's ``rand``), or
            ``Generator.from_noise(u)``; default ``Generator(0)`` of the observation's namespace.

    Key: ``observation`` (default ``("next", "observation")``). Output: ``loss_predictor``.
    ``loss.params = {"predictor_network": tree}``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        """``observation``: the (next) observation the networks read; default ``("next", "observation")``."""

        observation: Any = ("next", "observation")

    default_keys = _AcceptedKeys
    _OUT_KEYS = ("loss_predictor",)
    _POLICY_NETWORK = None

    def __init__(self, predictor_network: Any, target_network: Any, *, obs_rms: Mapping | None = None,
                 obs_clip: float = 5.0, reduction: str = "mean", update_fraction: float = 0.25,
                 generator: Any = None) -> None:
        check_choice(reduction, "reduction", ("mean", "sum", "none"))
        if not isinstance(update_fraction, (int, float)) or isinstance(update_fraction, bool) or \
                not 0.0 <= update_fraction <= 1.0:
            raise ValueError(f"update_fraction must be in the [0, 1] interval, got {update_fraction}.")
        self.obs_clip = check_number(obs_clip, "obs_clip", low=0.0)
        for name, net in (("predictor_network", predictor_network), ("target_network", target_network)):
            if getattr(net, "params", None) is None or not hasattr(net, "apply"):
                raise TypeError(f"{name}: expected an arrayrl network with .params and .apply(params, x), got "
                                f"{type(net).__name__}")
        if target_network is predictor_network:
            raise ValueError("target_network: must be a different network from predictor_network")
        self.reduction = reduction
        super().__init__()
        self.update_fraction = float(update_fraction)
        self.generator = generator
        self.obs_rms = obs_rms
        self.convert_to_functional(predictor_network, "predictor_network")
        self._target_network = target_network

    @property
    def target_network(self) -> Any:
        return self._target_network

    @property
    def target_network_params(self) -> Any:
        """The frozen target network's parameters (live, no tape)."""
        return stop_gradient(self._target_network.params)

    @property
    def obs_rms(self) -> Mapping | None:
        """The observation statistics (a :class:`RunningMeanStd` state) or ``None``."""
        return self._obs_rms

    @obs_rms.setter
    def obs_rms(self, state: Mapping | None) -> None:
        if state is not None and (not isinstance(state, Mapping) or "mean" not in state or "var" not in state):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"obs_rms: expected None or a state dict with 'mean' and 'var' (RunningMeanStd.init), "
                             f"got {got}")
        object.__setattr__(self, "_obs_rms", state)

    def _in_keys(self) -> list:
        return [self.tensor_keys.observation]

    def _draws(self, like: Any) -> Any:
        if self.generator is None:
            from ..random import Generator

            self.generator = Generator(0, xp=namespace_of(like), device=device_of(like))
        return self.generator

    def _forward(self, batch: Mapping, params: dict) -> dict:
        key = self.tensor_keys.observation
        name = _data.key_str(key)
        obs = stop_gradient(_data.get(batch, key, what="observation"))
        xo = namespace_of(obs)
        if not xo.isdtype(obs.dtype, "real floating"):
            if not xo.isdtype(obs.dtype, ("integral", "bool")):
                raise TypeError(f"{name}: expected a real observation, got {obs.dtype}")
            leaves = tree_leaves(params["predictor_network"])
            obs = xo.astype(obs, stop_gradient(leaves[0]).dtype if leaves else xo.float32)
        if obs.ndim < 1:
            raise ValueError(f"{name}: expected an observation of shape [*B, D], got a 0-d array")
        if self._obs_rms is not None:
            obs = normalize_observation(obs, self._obs_rms, self.obs_clip)
        target = stop_gradient(self._target_network.apply(stop_gradient(self._target_network.params), obs))
        pred = self._networks["predictor_network"].apply(params["predictor_network"], obs)
        check_floating(pred, "predictor_network output")
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"target_network: output shape {tuple(target.shape)} differs from the predictor's "
                             f"{tuple(pred.shape)}")
        if pred.ndim < 1:
            raise ValueError(f"predictor_network: expected an output of shape [*B, F], got {tuple(pred.shape)}")
        xp = namespace_of(pred, target)
        d = pred - target
        per_sample = xp.mean(d * d, axis=-1)
        mask = None
        if self.update_fraction < 1.0:
            raw = stop_gradient(per_sample)
            u = self._draws(raw).uniform(tuple(raw.shape), dtype=raw.dtype)
            mask = u < self.update_fraction
            per_sample = xp.where(mask, per_sample, xp.zeros_like(per_sample))
            if self.reduction == "none":
                mask = None
        return {"loss_predictor": self._reduce_loss(per_sample, batch, mask=mask)}
