"""DreamerV3's world-model and critic losses: :class:`DreamerV3ModelLoss` and :class:`DreamerV3ValueLoss`
(TorchRL 0.14.1 ``torchrl.objectives.DreamerV3ModelLoss`` / ``DreamerV3ValueLoss``).

Hafner et al. 2023, "Mastering Diverse Domains through World Models", arXiv:2301.04104. The helpers (symlog,
two-hot, the KL terms) are those of :mod:`arrayrl.objectives.dreamer_utils`.

**DreamerV3ModelLoss** reads, under ``"next"``: the true reward (renamed ``reward -> true_reward`` before the world
model runs, as TorchRL), the prior and posterior logits ``[*B, C, K]``, each observation head and its
reconstruction, the reward logits ``[*B, n_bins]`` (or the decoded reward), and optionally ``continue_pred`` and
``terminated``/``done``. The batch shape ``*B`` is that of the true reward ``[*B, 1]``.

* KL: ``kl_mode="balanced"`` -> ``loss_model_kl = lambda_kl categorical_kl_balanced(post, prior, kl_alpha,
  free_bits)``; ``"separate"`` -> ``(dyn, rep) = categorical_kl_terms(post, prior, free_bits, unimix)``,
  ``loss_model_dynamic = lambda_kl lambda_dynamic dyn``, ``loss_model_representation = lambda_kl
  lambda_representation rep``.
* Reconstruction, per head: ``e = symlog(x) - symlog(x_hat)`` (or ``x - x_hat``, integer ``x`` divided by 255),
  ``e^2`` (``"l2"``) or ``|e|`` (``"l1"``), summed over the non-batch axes (unless ``global_average``), averaged;
  heads summed; times ``lambda_reco``.
* Reward: two-hot cross-entropy on symexp bins (``reward_two_hot``) or ``(symlog r - symlog r_hat)^2``; mean; times
  ``lambda_reward``.
* Continue (``lambda_continue > 0``): ``BCEWithLogits(continue_pred, (1 - terminated) continue_target_scale)``.

Outputs have shape ``[1]`` (TorchRL's). :meth:`DreamerV3ModelLoss.forward_with_output` also returns the world
model's output batch (TorchRL's second return value).

**DreamerV3ValueLoss** on imagined data ``fake_data [*B, T]`` holding ``lambda_target [*B, T, 1]`` and the value
model's inputs: per step ``(symlog V - symlog G)^2`` (``"symlog_mse"``) or the two-hot cross-entropy of the value
logits (``"two_hot"``), plus ``slow_critic_regularization`` times the same loss towards the slow (target) critic,
weighted by ``discount_weight`` (if present) or ``gamma^t`` (``discount_loss``), reduced. Outputs ``loss_value`` and
``value_slow_loss`` (detached). :meth:`DreamerV3ValueLoss.replay_value_loss` trains the critic on replay sequences
with TD(lambda) targets at ``gamma = 1 - 1/horizon`` bootstrapped from ``bootstrap``, weighted by ``~done``.

Defaults are TorchRL's, several of which differ from the paper (see ``docs/divergences.md``): the paper uses
``kl_mode="separate"``, ``lambda_dynamic=0.5``, ``lambda_representation=0.1``, ``free_bits=1`` on the sum over
categoricals, ``unimix=0.01``, ``lambda_continue=1``, ``reward_two_hot=True``, a two-hot critic
(``value_loss="two_hot"``) and a slow critic (``slow_critic_regularization=1``); every one is reachable by arguments.

Bad input raises: a missing key names it; with ``lambda_continue > 0`` the continue keys are required (TorchRL skips
the term silently when they are absent).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any, Mapping

from .. import data as _data
from .. import ops
from .._backend import device_of, namespace_of
from .._checks import check_floating
from .._validate import check_choice
from ..autodiff import stop_gradient
from .common import LossModule
from .dreamer_utils import (
    DEFAULT_NUM_BINS,
    categorical_kl_balanced,
    categorical_kl_terms,
    default_bins,
    symlog,
    two_hot_cross_entropy,
    two_hot_decode,
)
from .utils import reduce_loss

__all__ = ["DreamerV3ModelLoss", "DreamerV3ValueLoss", "replay_value_target"]


def _num(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a Python number, got {type(value).__name__}")
    return float(value)


def _nonneg(value: Any, name: str) -> float:
    v = _num(value, name)
    if not v >= 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return v


def _check_net(net: Any, name: str) -> None:
    if not hasattr(net, "apply") or getattr(net, "params", None) is None:
        raise TypeError(f"{name}: expected an arrayrl keyed module with parameters, got {type(net).__name__}")


def _next(key: Any) -> tuple:
    return ("next", *_data.unravel_key(key))


def _get(batch: Mapping, key: Any, what: str) -> Any:
    value = _data.get_or(batch, key, None)
    if value is None:
        raise KeyError(f"{_data.key_str(key)!r} ({what}) is missing from the batch")
    return value



def _bins(xp: Any, n: int, like: Any) -> Any:
    """The ``n`` symexp bins in the namespace, dtype and device of ``like``."""
    return default_bins(n, xp=xp, dtype=like.dtype, device=device_of(stop_gradient(like)))


# ------------------------------------------------------------------------------------------------ model loss
class DreamerV3ModelLoss(LossModule):
    """DreamerV3 world-model loss (module docstring). ``loss.params = {"world_model": tree}``.

    Args:
        world_model: a keyed module (``apply(params, batch, generator=...)``) writing the prior/posterior logits,
            the reconstructions, the reward logits (or reward) and optionally ``continue_pred`` under ``"next"``.

    Keyword Args (TorchRL's names and defaults): ``lambda_kl=1``, ``lambda_reco=1``, ``lambda_reward=1``,
    ``lambda_continue=0``, ``kl_mode="balanced" | "separate"``, ``lambda_dynamic=1``, ``lambda_representation=0.1``,
    ``unimix=0`` (separate mode only), ``continue_target_scale=1`` (in ``(0, 1]``), ``kl_alpha=0.8``,
    ``free_bits=1``, ``reco_loss="l2" | "l1"``, ``reco_symlog=True`` (a bool or one per head),
    ``reward_two_hot=True``, ``num_reward_bins=255``, ``global_average=False``, ``detach_output=True``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        reward: Any = "reward"
        reward_logits: Any = "reward_logits"
        true_reward: Any = "true_reward"
        prior_logits: Any = "prior_logits"
        posterior_logits: Any = "posterior_logits"
        pixels: Any = "pixels"
        reco_pixels: Any = "reco_pixels"
        continue_pred: Any = "continue_pred"
        done: Any = "done"
        terminated: Any = "terminated"

    default_keys = _AcceptedKeys
    _POLICY_NETWORK = None

    kl_mode: str
    reco_loss: str
    reco_symlog: bool | list | tuple
    reward_two_hot: bool
    num_reward_bins: int
    global_average: bool
    detach_output: bool

    def __init__(self, world_model: Any, *, lambda_kl: float = 1.0, lambda_reco: float = 1.0,
                 lambda_reward: float = 1.0, lambda_continue: float = 0.0, kl_mode: str = "balanced",
                 lambda_dynamic: float = 1.0, lambda_representation: float = 0.1, unimix: float = 0.0,
                 continue_target_scale: float = 1.0, kl_alpha: float = 0.8, free_bits: float = 1.0,
                 reco_loss: str = "l2", reco_symlog: bool | list = True, reward_two_hot: bool = True,
                 num_reward_bins: int = DEFAULT_NUM_BINS, global_average: bool = False,
                 detach_output: bool = True) -> None:
        _check_net(world_model, "world_model")
        check_choice(kl_mode, "kl_mode", ("balanced", "separate"))
        check_choice(reco_loss, "reco_loss", ("l1", "l2"))
        self.lambda_kl = _num(lambda_kl, "lambda_kl")
        self.lambda_reco = _num(lambda_reco, "lambda_reco")
        self.lambda_reward = _num(lambda_reward, "lambda_reward")
        self.lambda_continue = _nonneg(lambda_continue, "lambda_continue")
        self.lambda_dynamic = _num(lambda_dynamic, "lambda_dynamic")
        self.lambda_representation = _num(lambda_representation, "lambda_representation")
        self.unimix = _num(unimix, "unimix")
        if not 0 <= self.unimix < 1:
            raise ValueError(f"unimix: must be in [0, 1), got {unimix!r}")
        scale = _num(continue_target_scale, "continue_target_scale")
        if not 0 < scale <= 1:
            raise ValueError(f"continue_target_scale: must be in (0, 1], got {continue_target_scale!r}")
        self.continue_target_scale = scale
        self.kl_alpha = _num(kl_alpha, "kl_alpha")
        self.free_bits = _nonneg(free_bits, "free_bits")
        if not (isinstance(reco_symlog, bool) or (isinstance(reco_symlog, (list, tuple))
                                                  and all(isinstance(v, bool) for v in reco_symlog))):
            raise TypeError(f"reco_symlog: expected a bool or a list of bools, got {reco_symlog!r}")
        for name, v in (("reward_two_hot", reward_two_hot), ("global_average", global_average),
                        ("detach_output", detach_output)):
            if not isinstance(v, bool):
                raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
        if isinstance(num_reward_bins, bool) or not isinstance(num_reward_bins, numbers.Integral) \
                or num_reward_bins < 2:
            raise ValueError(f"num_reward_bins: expected an integer >= 2, got {num_reward_bins!r}")
        self.kl_mode = kl_mode
        self.reco_loss = reco_loss
        self.reco_symlog = reco_symlog
        self.reward_two_hot = reward_two_hot
        self.num_reward_bins = int(num_reward_bins)
        self.global_average = global_average
        self.detach_output = detach_output
        super().__init__()
        self.convert_to_functional(world_model, "world_model")

    def _all_out_keys(self) -> list:
        keys = ["loss_model_reco", "loss_model_reward"]
        keys += ["loss_model_dynamic", "loss_model_representation"] if self.kl_mode == "separate" \
            else ["loss_model_kl"]
        if self.lambda_continue > 0:
            keys.append("loss_model_continue")
        return keys

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        keys = [_next(tk.reward)]
        keys += [k for k in getattr(self._networks["world_model"], "in_keys", []) if k not in keys]
        return keys

    def _heads(self) -> list:
        tk = self.tensor_keys
        obs = tk.pixels if isinstance(tk.pixels, list) else [tk.pixels]
        pred = tk.reco_pixels if isinstance(tk.reco_pixels, list) else [tk.reco_pixels]
        sym = self.reco_symlog
        sym = [sym] * len(obs) if isinstance(sym, bool) else list(sym)
        if not obs or not len(obs) == len(pred) == len(sym):
            raise ValueError("pixels, reco_pixels and reco_symlog must describe the same nonzero number of "
                             f"reconstruction heads, got {len(obs)}, {len(pred)} and {len(sym)}")
        return list(zip(obs, pred, sym))

    def _run_world_model(self, batch: Mapping, params: dict, generator: Any) -> dict:
        tk = self.tensor_keys
        key = _next(tk.reward)
        reward = _get(batch, key, "the true reward")
        renamed = _data.with_(_data.without(batch, key), _next(tk.true_reward), reward)
        return self._networks["world_model"].apply(params["world_model"], renamed, generator=generator)

    def _losses(self, out: Mapping) -> dict:
        tk = self.tensor_keys
        true_reward = _get(out, _next(tk.true_reward), "the true reward")
        check_floating(true_reward, "('next', true_reward)")
        batch_shape = tuple(true_reward.shape[:-1])
        prior = _get(out, _next(tk.prior_logits), "prior logits written by the world model")
        post = _get(out, _next(tk.posterior_logits), "posterior logits written by the world model")
        xp = namespace_of(true_reward, prior, post)
        res: dict = {}
        # reconstruction
        reco = None
        for obs_key, pred_key, transform in self._heads():
            target = _get(out, _next(obs_key), "an observation head")
            pred = _get(out, _next(pred_key), "a reconstruction written by the world model")
            check_floating(pred, _data.key_str(_next(pred_key)))
            xp = namespace_of(target, pred)
            if transform:
                if not xp.isdtype(target.dtype, "real floating"):
                    target = xp.astype(target, pred.dtype)
                target, pred = symlog(target), symlog(pred)
            elif not xp.isdtype(target.dtype, "real floating"):
                target = xp.astype(target, pred.dtype) / 255.0
            if tuple(target.shape) != tuple(pred.shape):
                raise ValueError(f"{_data.key_str(_next(pred_key))}: shape {tuple(pred.shape)} differs from the "
                                 f"observation's {tuple(target.shape)}")
            err = stop_gradient(target) - pred
            r = err * err if self.reco_loss == "l2" else xp.abs(err)
            if not self.global_average:
                r = xp.sum(xp.reshape(r, batch_shape + (-1,)), axis=-1)
            r = xp.reshape(xp.mean(r), (1,))
            reco = r if reco is None else reco + r
        assert reco is not None  # _heads() returns at least one head
        res["loss_model_reco"] = self.lambda_reco * reco
        # reward
        if self.reward_two_hot:
            logits = _data.get_or(out, _next(tk.reward_logits), None)
            if logits is None:
                logits = _get(out, _next(tk.reward), "reward logits written by the world model")
                warnings.warn("Storing DreamerV3 categorical reward logits under the decoded reward key is "
                              "deprecated (TorchRL removes it in v0.16); write them to the reward_logits key.",
                              DeprecationWarning, stacklevel=4)
            if logits.ndim < 1 or logits.shape[-1] != self.num_reward_bins:
                raise ValueError(f"reward_two_hot=True expects the reward head to output logits over "
                                 f"{self.num_reward_bins} bins, got shape {tuple(logits.shape)}")
            rl = two_hot_cross_entropy(logits, stop_gradient(true_reward),
                                       _bins(xp, self.num_reward_bins, logits))
        else:
            pred = _get(out, _next(tk.reward), "the predicted reward")
            if tuple(pred.shape) != tuple(true_reward.shape):
                raise ValueError(f"('next', reward): predicted shape {tuple(pred.shape)} differs from the true "
                                 f"reward's {tuple(true_reward.shape)}")
            d = symlog(stop_gradient(true_reward)) - symlog(pred)
            rl = d * d
        res["loss_model_reward"] = self.lambda_reward * xp.reshape(xp.mean(rl), (1,))
        # KL
        if self.kl_mode == "separate":
            dyn, rep = categorical_kl_terms(post, prior, free_nats=self.free_bits, unimix=self.unimix)
            res["loss_model_dynamic"] = self.lambda_kl * self.lambda_dynamic * xp.reshape(dyn, (1,))
            res["loss_model_representation"] = self.lambda_kl * self.lambda_representation * xp.reshape(rep, (1,))
        else:
            kl = categorical_kl_balanced(post, prior, alpha=self.kl_alpha, free_bits=self.free_bits)
            res["loss_model_kl"] = self.lambda_kl * xp.reshape(kl, (1,))
        # continue
        if self.lambda_continue > 0:
            logit = _get(out, _next(tk.continue_pred), "continue logits (lambda_continue > 0)")
            term = _data.get_or(out, _next(tk.terminated), None)
            if term is None:
                term = _get(out, _next(tk.done), "terminated or done (lambda_continue > 0)")
            check_floating(logit, "('next', continue_pred)")
            if term.dtype != xp.bool:
                raise TypeError(f"('next', terminated): expected a bool array, got {term.dtype}")
            target = xp.astype(xp.logical_not(term), logit.dtype) * self.continue_target_scale
            if logit.ndim and logit.shape[-1] == 1:
                logit = xp.squeeze(logit, axis=-1)
            if target.ndim and target.shape[-1] == 1:
                target = xp.squeeze(target, axis=-1)
            if tuple(logit.shape) != tuple(target.shape):
                raise ValueError(f"('next', continue_pred): shape {tuple(logit.shape)} does not match terminated's "
                                 f"{tuple(target.shape)}")
            bce = ops.softplus(logit) - logit * target
            res["loss_model_continue"] = self.lambda_continue * xp.reshape(xp.mean(bce), (1,))
        return res

    def _forward(self, batch: Mapping, params: dict, generator: Any = None) -> dict:
        return self._losses(self._run_world_model(batch, params, generator))

    def forward_with_output(self, batch: Mapping, *, generator: Any = None) -> tuple:
        """``(losses, world_model_output)`` (TorchRL's return pair); the output is detached when ``detach_output``."""
        out = self._run_world_model(batch, self.params, generator)
        losses = self._select(self._losses(out))
        return losses, (stop_gradient(out) if self.detach_output else out)


# ------------------------------------------------------------------------------------------------ value loss
def replay_value_target(reward: Any, done: Any, terminated: Any, bootstrap: Any, horizon: float = 333.0,
                        lmbda: float = 0.95) -> Any:
    """TorchRL's ``_replay_value_target``: TD(lambda) returns ``[*B, T - 1]`` along a replay sequence ``[*B, T]``
    (``reward``/``done``/``terminated`` ``[*B, T]`` or ``[*B, T, 1]``, ``bootstrap`` ``[*B, T]`` or ``[*B, T, 1]``):
    element ``k`` uses the rewards, flags and bootstraps from ``k + 1`` on, ``gamma = 1 - 1 / horizon``."""
    from ..value.functional import td_lambda_return_estimate

    xp = namespace_of(reward, done, terminated, bootstrap)

    def col(x: Any) -> Any:
        x = xp.squeeze(x, axis=-1) if x.ndim and x.shape[-1] == 1 else x
        return xp.expand_dims(x, axis=-1)

    reward, done, terminated, bootstrap = col(reward), col(done), col(terminated), col(bootstrap)
    g = td_lambda_return_estimate(1.0 - 1.0 / float(horizon), float(lmbda), bootstrap[..., 1:, :],
                                  reward[..., 1:, :], done[..., 1:, :], terminated[..., 1:, :])
    return xp.squeeze(g, axis=-1)


class DreamerV3ValueLoss(LossModule):
    """DreamerV3 critic loss (module docstring). ``loss.params = {"value_model": tree}``; a slow critic
    (``loss.target_params["value_model"]``, moved by :class:`~arrayrl.objectives.SoftUpdate`) exists iff
    ``slow_critic_regularization > 0``.

    Args (TorchRL's): ``value_model`` (a keyed module writing ``state_value [*B, T, 1]`` and/or, for
    ``"two_hot"``, ``state_value_logits [*B, T, n_bins]``), ``value_loss="symlog_mse" | "two_hot"``,
    ``discount_loss=True``, ``gamma=0.99``, ``num_value_bins=255``, ``actor_loss=None`` (its ``gamma`` is used),
    ``slow_critic_regularization=0``, ``reduction="mean" | "sum" | "none"``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: Any = "state_value"
        value_logits: Any = "state_value_logits"
        discount_weight: Any = "discount_weight"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        bootstrap: Any = "bootstrap"

    default_keys = _AcceptedKeys
    _OUT_KEYS = ("loss_value", "value_slow_loss")
    _POLICY_NETWORK = None

    value_loss: str
    discount_loss: bool
    gamma: float
    num_value_bins: int
    actor_loss: Any
    slow_critic_regularization: float

    def __init__(self, value_model: Any, value_loss: str = "symlog_mse", discount_loss: bool = True,
                 gamma: float = 0.99, num_value_bins: int = DEFAULT_NUM_BINS, actor_loss: Any = None,
                 slow_critic_regularization: float = 0.0, reduction: str | None = None) -> None:
        _check_net(value_model, "value_model")
        check_choice(value_loss, "value_loss", ("symlog_mse", "two_hot"))
        reduction = "mean" if reduction is None else reduction
        check_choice(reduction, "reduction", ("mean", "sum", "none"))
        if not isinstance(discount_loss, bool):
            raise TypeError(f"discount_loss: expected a bool, got {type(discount_loss).__name__}")
        if isinstance(num_value_bins, bool) or not isinstance(num_value_bins, numbers.Integral) \
                or num_value_bins < 2:
            raise ValueError(f"num_value_bins: expected an integer >= 2, got {num_value_bins!r}")
        self.reduction = reduction
        self.value_loss = value_loss
        self.discount_loss = discount_loss
        self.gamma = _num(gamma, "gamma")
        self.num_value_bins = int(num_value_bins)
        self.actor_loss = actor_loss
        self.slow_critic_regularization = _nonneg(slow_critic_regularization, "slow_critic_regularization")
        super().__init__()
        self.convert_to_functional(value_model, "value_model",
                                   create_target_params=bool(self.slow_critic_regularization))

    def _in_keys(self) -> list:
        return ["lambda_target", *getattr(self._networks["value_model"], "in_keys", [])]

    def _resolved_gamma(self) -> float:
        if self.actor_loss is None:
            return self.gamma
        g = getattr(self.actor_loss, "gamma", None)
        if g is None:
            g = self.actor_loss.value_estimator.gamma
        return float(g)

    def _step_loss(self, pred: Any, target: Any, xp: Any) -> Any:
        """``pred``: logits ``[*S, n]`` (two-hot) or values ``[*S]``; ``target [*S]``."""
        if self.value_loss == "two_hot":
            return two_hot_cross_entropy(pred, target, _bins(xp, self.num_value_bins, pred))
        d = symlog(pred) - symlog(target)
        return d * d

    def _prediction(self, out: Mapping, xp: Any) -> Any:
        tk = self.tensor_keys
        if self.value_loss == "two_hot":
            pred = _data.get_or(out, tk.value_logits, None)
            if pred is None:
                pred = _get(out, tk.value, "value logits written by the value model")
                warnings.warn("Storing DreamerV3 categorical value logits under the decoded value key is deprecated "
                              "(TorchRL removes it in v0.16); write them to the value_logits key.",
                              DeprecationWarning, stacklevel=4)
            if pred.ndim < 1 or pred.shape[-1] != self.num_value_bins:
                raise ValueError(f"value_loss='two_hot' expects the value head to output logits over "
                                 f"{self.num_value_bins} bins, got shape {tuple(pred.shape)}")
            return pred
        pred = _get(out, tk.value, "the value written by the value model")
        check_floating(pred, _data.key_str(tk.value))
        xp = namespace_of(pred)
        return xp.squeeze(pred, axis=-1) if pred.ndim and pred.shape[-1] == 1 else pred

    def _slow_value(self, batch: Mapping, xp: Any) -> Any:
        tk = self.tensor_keys
        out = self._networks["value_model"].apply(stop_gradient(self.target_params["value_model"]), batch)
        v = _data.get_or(out, tk.value, None)
        if v is None or (self.value_loss == "two_hot" and v.shape[-1] == self.num_value_bins):
            logits = v if v is not None else _get(out, tk.value_logits, "slow-critic value or logits")
            return stop_gradient(two_hot_decode(logits, _bins(xp, self.num_value_bins, logits)))
        v = xp.squeeze(v, axis=-1) if v.ndim and v.shape[-1] == 1 else v
        return stop_gradient(v)

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        target = _get(batch, "lambda_target", "the imagined lambda-return written by the actor loss")
        check_floating(target, "lambda_target")
        xp = namespace_of(target)
        target = stop_gradient(xp.squeeze(target, axis=-1) if target.ndim and target.shape[-1] == 1 else target)
        out = self._networks["value_model"].apply(params["value_model"], stop_gradient(batch))
        pred = self._prediction(out, xp)
        xp = namespace_of(target, pred)
        lead = tuple(pred.shape[:-1]) if self.value_loss == "two_hot" else tuple(pred.shape)
        if lead != tuple(target.shape):
            raise ValueError(f"lambda_target: shape {tuple(target.shape)} does not match the value prediction's "
                             f"{lead}")
        weight = _data.get_or(batch, tk.discount_weight, None)
        if weight is not None:
            weight = stop_gradient(xp.squeeze(weight, axis=-1) if weight.ndim and weight.shape[-1] == 1 else weight)
        elif self.discount_loss and target.ndim >= 2:
            t = int(target.shape[-1])
            powers = xp.astype(xp.arange(t, **({} if getattr(target, "device", None) is None else
                                              {"device": target.device})), target.dtype)
            weight = xp.broadcast_to(self._resolved_gamma() ** powers, tuple(target.shape))
        else:
            weight = xp.ones_like(target)
        loss = self._step_loss(pred, target, xp)
        if self.slow_critic_regularization:
            slow = self._step_loss(pred, self._slow_value(stop_gradient(batch), xp), xp)
            loss = loss + self.slow_critic_regularization * slow
        else:
            slow = xp.zeros_like(loss)
        return {"loss_value": reduce_loss(weight * loss, self.reduction),
                "value_slow_loss": stop_gradient(reduce_loss(weight * slow, self.reduction))}

    def replay_value_loss(self, batch: Mapping, *, horizon: float = 333.0, lmbda: float = 0.95) -> dict:
        """``{"loss_replay_value"}`` on a replay sequence ``[*B, T]`` (TorchRL's ``replay_value_loss``). The
        gradient also flows into the value model's inputs (the representation)."""
        return self._replay(batch, self.params, horizon, lmbda)

    def _replay(self, batch: Mapping, params: dict, horizon: float = 333.0, lmbda: float = 0.95) -> dict:
        tk = self.tensor_keys
        reward = _get(batch, _next(tk.reward), "the replay reward")
        done = _get(batch, _next(tk.done), "the replay done flag")
        term = _get(batch, _next(tk.terminated), "the replay terminated flag")
        boot = _get(batch, tk.bootstrap, "the imagined bootstrap return")
        xp = namespace_of(reward)
        target = stop_gradient(replay_value_target(stop_gradient(reward), done, term, stop_gradient(boot),
                                                   horizon, lmbda))
        d = xp.squeeze(done, axis=-1) if done.ndim and done.shape[-1] == 1 else done
        weight = xp.astype(xp.logical_not(d[..., :-1]), reward.dtype)
        out = self._networks["value_model"].apply(params["value_model"], batch)
        if self.value_loss == "two_hot":
            pred = _get(out, tk.value_logits, "value logits written by the value model")[..., :-1, :]
        else:
            pred = _get(out, tk.value, "the value written by the value model")[..., :-1, 0]
        xp = namespace_of(target, pred)
        loss = self._step_loss(pred, target, xp)
        if self.slow_critic_regularization:
            v = _get(self._networks["value_model"].apply(stop_gradient(self.target_params["value_model"]),
                                                         stop_gradient(batch)), tk.value, "slow-critic value")
            loss = loss + self.slow_critic_regularization * self._step_loss(pred, stop_gradient(v[..., :-1, 0]), xp)
        return {"loss_replay_value": reduce_loss(weight * loss, self.reduction)}


# ------------------------------------------------------------------------------------------------ actor loss
from .dreamer import DreamerActorLoss as _DreamerV1ActorLoss  # noqa: E402  (the imagination rollout is shared)
from .dreamer import DreamerEnv as _DreamerEnv  # noqa: E402
from .actor_critic import _sg_tree  # noqa: E402
from .dreamer import _check_bool  # noqa: E402
from .value_norm import PercentileValueNorm  # noqa: E402


def _col(x: Any, like: Any) -> Any:
    """TorchRL's ``_match_trailing_dim``: ``x`` aligned to ``like`` ``[*B, H, 1]`` (unsqueeze / sum a feature axis)."""
    xp = namespace_of(x)
    if x.ndim == like.ndim:
        return x
    if x.ndim == like.ndim - 1:
        return xp.expand_dims(x, axis=-1)
    if x.ndim == like.ndim + 1:
        return xp.sum(x, axis=-1, keepdims=True)
    raise ValueError(f"Cannot align source shape {tuple(x.shape)} to reference shape {tuple(like.shape)}")


class DreamerV3ActorLoss(_DreamerV1ActorLoss):
    """DreamerV3 actor loss (TorchRL 0.14.1 ``torchrl.objectives.DreamerV3ActorLoss``) on latent imagination.

    From ``state`` and ``belief`` (without tape) the actor and the world model of ``model_based_env`` (a
    :class:`~arrayrl.objectives.dreamer.DreamerEnv`, held out) are rolled for ``imagination_horizon`` steps **on the
    tape** (the rollout of :class:`~arrayrl.objectives.dreamer.DreamerActorLoss`); ``V' = V(s_{t+1})`` from
    ``value_model`` (held out: constant parameters, gradient through its inputs). Then, over ``[*B, H, 1]``:

    * continuation ``c_t`` (with ``continuation_model``, held out): ``c`` at ``s_{t+1}`` and ``root c`` at ``s_t``;
      ``G_t = r_t + gamma c_t ((1 - lambda) V'_t + lambda G_{t+1})``, ``G_H = V'_{H-1}``.
      Without it: TD(lambda) along the horizon with ``c = 1`` (default) or TorchRL's one-step ``r_t + gamma V'_t``
      (``torchrl_compat=True``; see the divergences).
    * ``w_t = cumprod([root c_0, gamma root c_1, ...])`` (``discount_loss``; ``root c = 1`` without the model) or 1,
      detached (written as ``discount_weight``).
    * return scale ``S = max(hi - lo, min_scale)`` of a :class:`~arrayrl.objectives.value_norm.PercentileValueNorm`
      (``loss.retnorm``) whose explicit state ``loss.retnorm_state`` (``{"low", "high"}`` ``[1]``, zeros at first)
      is updated from ``G`` before use in training mode (``loss.train()`` / ``loss.eval()``); 1 without
      ``return_normalization``.
    * reparameterised (default): ``loss_actor = -mean(w G / S)``; ``use_reinforce=True``:
      ``-mean(w log pi(sg a_t | sg s_t) sg(G_t - V(s_t)) / S)``.
    * entropy bonus (``entropy_bonus > 0``): ``H_t`` analytic, else ``-log pi`` of one reparameterised draw at the
      detached imagined states; ``actor_entropy = sg mean(w H)``, ``loss_actor -= entropy_bonus mean(w H)``.

    Outputs (0-d): ``loss_actor``, ``actor_entropy``, ``return_low``, ``return_high``, ``return_scale``,
    ``continuation_mean`` (1 without the model). ``forward`` and ``value_and_grad`` return ``(loss_dict, fake_data)``
    (``fake_data [*B, H, ...]`` without tape, with ``lambda_target``, ``discount_weight`` and, with the model,
    ``continuation`` and ``("next", continuation)``: the input of :class:`DreamerV3ValueLoss`).

    Args (TorchRL's): ``actor_model`` (a :class:`~arrayrl.nn.ProbabilisticActor` reading ``state``, ``belief``),
    ``value_model`` (a keyed module writing ``state_value``), ``model_based_env``; keyword: ``continuation_model=None``
    (a keyed module writing ``continuation`` probabilities), ``imagination_horizon=15``, ``discount_loss=True``,
    ``entropy_bonus=3e-4``, ``use_reinforce=False``, ``return_normalization=True``,
    ``return_normalization_rate=0.01``, ``return_normalization_quantiles=(0.05, 0.95)``,
    ``return_normalization_min_scale=1.0``; ``gamma``/``lmbda`` raise ``TypeError`` (use
    :meth:`make_value_estimator`; default TDLambda(0.99, 0.95)); arrayrl: ``torchrl_compat=False``, ``generator``.
    Draws, TorchRL's order: per imagined step the action noise ``[*B, A]`` then the world model's (the prior's
    uniforms ``[*B, C]``); then, for a non-analytic entropy, one standard normal ``[*B, H, A]``.
    ``loss.params = {"actor_model": tree}``.

    The seed example (TorchRL's documentation sizes):

    >>> import numpy as np
    >>> from arrayrl.distributions import TanhNormal
    >>> from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, Sequential
    >>> from arrayrl.nn.rssm import RSSMPriorV3
    >>> from arrayrl.nn.rssm_v1 import DreamerActor, StochasticKeyedModule
    >>> from arrayrl.objectives.dreamer import DreamerEnv
    >>> from arrayrl.objectives.dreamer_v3 import DreamerV3ActorLoss
    >>> from arrayrl.random import Generator
    >>> from arrayrl.value import ValueEstimators
    >>> g = Generator(0)
    >>> action_dim = 7
    >>> rssm_prior = RSSMPriorV3(hidden_dim=8, rnn_hidden_dim=8, num_categoricals=4, num_classes=4,
    ...                          action_dim=action_dim, generator=g)
    >>> transition = StochasticKeyedModule(rssm_prior, in_keys=["state", "belief", "action"],
    ...                                    out_keys=["_", "state", "belief"])
    >>> reward = KeyedModule(MLP(16 + 8, 1, depth=1, num_cells=8, generator=g), in_keys=["state", "belief"],
    ...                      out_keys=["reward"])
    >>> mb_env = DreamerEnv(Sequential(transition, reward), prior_shape=[16], belief_shape=[8])
    >>> actor_module = DreamerActor(action_dim, depth=1, num_cells=8, in_features=16 + 8, generator=g)
    >>> actor = ProbabilisticActor(KeyedModule(actor_module, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
    ...                            in_keys=["loc", "scale"], distribution_class=TanhNormal)
    >>> value = KeyedModule(MLP(16 + 8, 1, depth=1, num_cells=8, generator=g), in_keys=["state", "belief"],
    ...                     out_keys=["state_value"])
    >>> loss = DreamerV3ActorLoss(actor, value, mb_env, imagination_horizon=3)
    >>> loss = loss.make_value_estimator(ValueEstimators.TDLambda)
    >>> rng = np.random.default_rng(0)
    >>> td = {"state": rng.normal(size=(2, 16)), "belief": rng.normal(size=(2, 8))}
    >>> loss_td, fake_data = loss(td, generator=g)
    >>> "loss_actor" in loss_td
    True
    >>> fake_data["lambda_target"].shape
    (2, 3, 1)
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        state: Any = "state"
        belief: Any = "belief"
        reward: Any = "reward"
        value: Any = "state_value"
        action: Any = "action"
        action_log_prob: Any = "action_log_prob"
        done: Any = "done"
        terminated: Any = "terminated"
        continuation: Any = "continuation"
        discount_weight: Any = "discount_weight"

    default_keys: Any = _AcceptedKeys
    _OUT_KEYS: tuple = ("loss_actor", "actor_entropy", "return_low", "return_high", "return_scale", "continuation_mean")
    training = True

    def __init__(self, actor_model: Any, value_model: Any, model_based_env: _DreamerEnv, *,
                 continuation_model: Any = None, imagination_horizon: int = 15, discount_loss: bool = True,
                 entropy_bonus: float = 3e-4, use_reinforce: bool = False, return_normalization: bool = True,
                 return_normalization_rate: float = 0.01, return_normalization_quantiles: tuple = (0.05, 0.95),
                 return_normalization_min_scale: float = 1.0, gamma: Any = None, lmbda: Any = None,
                 torchrl_compat: bool = False, generator: Any = None):
        super().__init__(actor_model, value_model, model_based_env, imagination_horizon=imagination_horizon,
                         discount_loss=discount_loss, gamma=gamma, lmbda=lmbda, torchrl_compat=torchrl_compat,
                         generator=generator)
        if continuation_model is not None:
            _check_net(continuation_model, "continuation_model")
        self.continuation_model = continuation_model
        self.entropy_bonus = _nonneg(entropy_bonus, "entropy_bonus")
        self.use_reinforce = _check_bool(use_reinforce, "use_reinforce")
        self.return_normalization = _check_bool(return_normalization, "return_normalization")
        q = tuple(return_normalization_quantiles)
        if len(q) != 2:
            raise ValueError(f"return_normalization_quantiles: expected (low, high), got "
                             f"{return_normalization_quantiles!r}")
        self.retnorm = PercentileValueNorm(quantiles=(_num(q[0], "return_normalization_quantiles[0]"),
                                                      _num(q[1], "return_normalization_quantiles[1]")),
                                           rate=_num(return_normalization_rate, "return_normalization_rate"),
                                           min_scale=_num(return_normalization_min_scale,
                                                          "return_normalization_min_scale"))
        self.retnorm_state: Any = None

    # ------------------------------------------------------------------------------------------------ mode/state
    def train(self, mode: bool = True) -> "DreamerV3ActorLoss":
        """Training mode (the return statistics move at each forward) or not; returns the loss."""
        self.training = bool(mode)
        return self

    def eval(self) -> "DreamerV3ActorLoss":
        return self.train(False)

    @property
    def return_normalization_rate(self) -> float:
        return self.retnorm.rate

    @property
    def return_normalization_quantiles(self) -> tuple:
        return self.retnorm.quantiles

    @property
    def return_normalization_min_scale(self) -> float:
        return self.retnorm.min_scale

    @property
    def return_low(self) -> Any:
        """The low return quantile's EMA, 0-d (``None`` before the first forward)."""
        s = self.retnorm_state
        return None if s is None else namespace_of(s["low"]).squeeze(s["low"], axis=-1)

    @property
    def return_high(self) -> Any:
        s = self.retnorm_state
        return None if s is None else namespace_of(s["high"]).squeeze(s["high"], axis=-1)

    # ------------------------------------------------------------------------------------------------ targets
    def lambda_target(self, reward: Any, value: Any, continuation: Any = None) -> Any:
        """``reward``, ``value = V(s_{t+1})``, ``continuation`` (at ``s_{t+1}``), all ``[*B, H, 1]``: TD(lambda)
        along ``H`` weighted by the continuation; without it as :class:`DreamerActorLoss` (``torchrl_compat``:
        ``r + gamma V'``)."""
        if continuation is None:
            return super().lambda_target(reward, value)
        check_floating(reward, "reward")
        check_floating(value, "value")
        check_floating(continuation, "continuation")
        for name, v in (("value", value), ("continuation", continuation)):
            if tuple(v.shape) != tuple(reward.shape) or reward.ndim < 2:
                raise ValueError(f"{name}: expected the shape of reward {tuple(reward.shape)} ([*B, H, 1]), got "
                                 f"{tuple(v.shape)}")
        gamma, lmbda = self._gamma_lmbda()
        xp = namespace_of(reward, value, continuation)
        h = int(reward.shape[-2])
        nxt = value[..., h - 1, :]
        out = []
        for t in range(h - 1, -1, -1):
            nxt = reward[..., t, :] + gamma * continuation[..., t, :] * (
                (1 - lmbda) * value[..., t, :] + lmbda * nxt)
            out.append(nxt)
        return xp.stack(out[::-1], axis=-2)

    def _return_scale(self, returns: Any) -> Any:
        xp = namespace_of(returns)
        state = self.retnorm_state
        if state is None:
            state = self.retnorm.init(like=returns)
        if self.return_normalization and self.training:
            state = self.retnorm.update(stop_gradient(returns), state)
        self.retnorm_state = state
        if not self.return_normalization:
            return xp.ones((), dtype=returns.dtype, **_dev_kw(returns))
        return xp.astype(xp.squeeze(self.retnorm.scale(state), axis=-1), returns.dtype)

    # ------------------------------------------------------------------------------------------------ loss
    def _forward_full(self, batch: Mapping, params: dict) -> tuple:
        tk = self.tensor_keys
        fake = self._imagine(batch, params)
        nxt = fake["next"]
        next_td = _data.with_({"state": nxt["state"]}, tk.belief, _data.get(nxt, tk.belief))
        next_value = _get(self.value_model.apply(_sg_tree(self.value_model.params), next_td), tk.value,
                          "value written by value_model")
        reward = _data.get(nxt, tk.reward)
        xp = namespace_of(reward)
        cont = root = None
        cm = self.continuation_model
        if cm is not None:
            cparams = _sg_tree(cm.params)
            cur_td = _data.with_({"state": fake["state"]}, tk.belief, _data.get(fake, tk.belief))
            first = _get(cm.apply(cparams, _tree_slice0(cur_td)), tk.continuation, "continuation written by "
                         "continuation_model")
            cont = _get(cm.apply(cparams, next_td), tk.continuation, "continuation written by continuation_model")
            check_floating(cont, "continuation")
            root = xp.concat([first, cont[..., :-1, :]], axis=-2)
            fake = _data.with_(fake, tk.continuation, root)
            fake = _data.with_(fake, ("next", *_data.unravel_key(tk.continuation)), cont)
        lam = self.lambda_target(reward, next_value, cont)
        fake = _data.with_(fake, "lambda_target", lam)
        if self.discount_loss:
            gamma, _ = self._gamma_lmbda()
            c = stop_gradient(root) if root is not None else xp.ones_like(stop_gradient(lam))
            w_t = c[..., 0:1, :]
            ws = [w_t]
            for t in range(1, int(lam.shape[-2])):
                w_t = w_t * (gamma * c[..., t:t + 1, :])
                ws.append(w_t)
            discount = xp.concat(ws, axis=-2)
        else:
            discount = xp.ones_like(stop_gradient(lam))
        discount = stop_gradient(discount)
        fake = _data.with_(fake, tk.discount_weight, discount)

        actor = self._networks["actor_model"]
        dist = None
        if self.use_reinforce or self.entropy_bonus > 0:
            inputs = _data.with_({"state": stop_gradient(fake["state"])}, tk.belief,
                                 stop_gradient(_data.get(fake, tk.belief)))
            dist = actor.get_dist(params["actor_model"], inputs)
        scale = self._return_scale(lam)
        if self.use_reinforce:
            assert dist is not None  # built above when use_reinforce
            action = stop_gradient(_get(fake, tk.action, "imagined action"))
            log_prob = _col(dist.log_prob(action), lam)
            base_td = _data.with_({"state": fake["state"]}, tk.belief, _data.get(fake, tk.belief))
            baseline = _get(self.value_model.apply(_sg_tree(self.value_model.params), base_td), tk.value,
                            "value written by value_model")
            adv = stop_gradient(lam - baseline) / scale
            actor_loss = -xp.mean(discount * log_prob * adv)
        else:
            actor_loss = -xp.mean(discount * lam / scale)
        if self.entropy_bonus > 0:
            from .policy_gradient import has_analytic_entropy

            assert dist is not None  # built above when entropy_bonus > 0
            if has_analytic_entropy(dist):
                ent = dist.entropy()
            else:
                _, lp = dist.rsample_and_log_prob(self._gen())
                ent = -lp
            ent = xp.mean(discount * _col(ent, discount))
            actor_loss = actor_loss - self.entropy_bonus * ent
        else:
            ent = xp.zeros((), dtype=lam.dtype, **_dev_kw(lam))
        st = self.retnorm_state
        out = {"loss_actor": actor_loss, "actor_entropy": stop_gradient(ent),
               "return_low": xp.astype(xp.squeeze(st["low"], axis=-1), lam.dtype),
               "return_high": xp.astype(xp.squeeze(st["high"], axis=-1), lam.dtype),
               "return_scale": stop_gradient(scale),
               "continuation_mean": (stop_gradient(xp.mean(cont)) if cont is not None
                                     else xp.ones((), dtype=lam.dtype, **_dev_kw(lam)))}
        return out, fake


def _dev_kw(x: Any) -> dict:
    from .._backend import device_of

    dev = device_of(stop_gradient(x))
    return {} if dev is None else {"device": dev}


def _tree_slice0(tree: Any) -> Any:
    """``tree[..., :1]`` along the imagination axis (``-2`` of the ``[*B, H, F]`` leaves)."""
    if isinstance(tree, Mapping):
        return {k: _tree_slice0(v) for k, v in tree.items()}
    return tree[..., 0:1, :]


__all__ += ["DreamerV3ActorLoss"]


# ------------------------------------------------------------------------------------------------ composite loss
class DreamerV3Loss(LossModule):
    """DreamerV3's composite objective (TorchRL 0.14.1 ``torchrl.objectives.DreamerV3Loss``).

    One call runs, in TorchRL's order:

    1. the world-model loss on the real sequences ``[*B]`` (its outputs squeezed to 0-d);
    2. the actor loss from the posterior ``("next", state)`` / ``("next", belief)``, detached and flattened to
       ``[prod(B), F]`` (imagination starts from every posterior state);
    3. the critic loss on the imagined trajectory, detached;
    4. with ``replay_value_loss_weight > 0``: the replay-value loss (:meth:`DreamerV3ValueLoss.replay_value_loss`)
       on the posterior features **with** their path to the world model, bootstrapped from the first imagined
       ``lambda_target`` of each start state (reshaped to ``[*B]``), against the real ``("next", reward/done/
       terminated)``, ``gamma = 1 - 1 / continuation_horizon``, ``lmbda``.

    Outputs: the three losses' entries, ``loss_replay_value = replay_value_loss_weight * replay`` (0 when disabled),
    ``replay_value`` (detached) and, under ``replay_context``, the detached posterior ``{state, belief}`` ``[*B, F]``.
    The training objective is the sum of the ``loss_*`` entries (:meth:`value_and_grad`). ``loss.params =
    {"world_model", "actor_model", "value_model"}`` (the sub-losses' live trees). As in TorchRL the imagination's
    world model and the actor loss's critic are held out, so the world model is trained by the model and the
    replay-value terms, the actor by ``loss_actor``, the critic by ``loss_value`` and ``loss_replay_value``.

    Args: ``model_loss`` (:class:`DreamerV3ModelLoss`, ``detach_output=False`` when the replay weight is nonzero),
    ``actor_loss`` (:class:`DreamerV3ActorLoss`), ``value_loss`` (:class:`DreamerV3ValueLoss`); keyword
    ``replay_value_loss_weight=0.3`` (``>= 0``), ``continuation_horizon=333.0``, ``lmbda=0.95``.
    ``forward``/``value_and_grad`` take ``generator=`` (the world model's and, if given, the actor loss's draws).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        state: Any = "state"
        belief: Any = "belief"
        is_init: Any = "is_init"
        replay_context: Any = "replay_context"

    default_keys = _AcceptedKeys
    _POLICY_NETWORK = None

    def __init__(self, model_loss: DreamerV3ModelLoss, actor_loss: DreamerV3ActorLoss,
                 value_loss: DreamerV3ValueLoss, *, replay_value_loss_weight: float = 0.3,
                 continuation_horizon: float = 333.0, lmbda: float = 0.95) -> None:
        for name, obj, cls in (("model_loss", model_loss, DreamerV3ModelLoss),
                               ("actor_loss", actor_loss, DreamerV3ActorLoss),
                               ("value_loss", value_loss, DreamerV3ValueLoss)):
            if not isinstance(obj, cls):
                raise TypeError(f"{name}: expected a {cls.__name__}, got {type(obj).__name__}")
        w = _num(replay_value_loss_weight, "replay_value_loss_weight")
        if w < 0:
            raise ValueError("replay_value_loss_weight must be non-negative.")
        if w and model_loss.detach_output:
            raise ValueError("Replay-value learning requires model_loss.detach_output=False.")
        horizon = _num(continuation_horizon, "continuation_horizon")
        if not horizon > 0:
            raise ValueError(f"continuation_horizon: must be > 0, got {continuation_horizon!r}")
        super().__init__()
        self.model_loss = model_loss
        self.actor_loss = actor_loss
        self.value_loss = value_loss
        self.replay_value_loss_weight = w
        self.continuation_horizon = horizon
        self.lmbda = _num(lmbda, "lmbda")
        for sub in (model_loss, actor_loss, value_loss):
            for name, net in sub._networks.items():
                self.convert_to_functional(net, name)
                self._owners[name] = sub._owners[name]

    def _in_keys(self) -> list:
        mk, vk = self.model_loss.tensor_keys, self.value_loss.tensor_keys
        obs = mk.pixels if isinstance(mk.pixels, list) else [mk.pixels]
        keys = [*getattr(self.model_loss._networks["world_model"], "in_keys", []),
                _data.unravel_key(self.tensor_keys.is_init), *(_next(k) for k in obs), _next(mk.reward),
                _next(vk.reward), _next(vk.done), _next(vk.terminated)]
        return list(dict.fromkeys(keys))

    def _all_out_keys(self) -> list:
        keys = list(self.model_loss._all_out_keys()) + list(self.actor_loss._OUT_KEYS)
        keys += list(self.value_loss._OUT_KEYS) + ["loss_replay_value", "replay_value", "replay_context"]
        return list(dict.fromkeys(keys))

    def _forward(self, batch: Mapping, params: dict, generator: Any = None) -> dict:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")
        tk = self.tensor_keys
        ml, al, vl = self.model_loss, self.actor_loss, self.value_loss
        out = ml._run_world_model(batch, {"world_model": params["world_model"]}, generator)
        model_losses = ml._losses(out)
        nxt = _get(out, "next", "the world model's output under 'next'")
        state = _get(nxt, tk.state, "the posterior state written by the world model")
        belief = _get(nxt, tk.belief, "the posterior belief written by the world model")
        check_floating(state, "('next', state)")
        batch_shape = tuple(_get(batch, _next(ml.tensor_keys.reward), "the true reward").shape[:-1])
        if tuple(state.shape[:-1]) != batch_shape or tuple(belief.shape[:-1]) != batch_shape:
            raise ValueError(f"posterior state {tuple(state.shape)} / belief {tuple(belief.shape)}: expected the "
                             f"batch shape {batch_shape} of the true reward plus one feature axis")
        xp = namespace_of(state, belief)
        actor_input = _data.with_({}, al.tensor_keys.belief,
                                  stop_gradient(xp.reshape(belief, (-1, int(belief.shape[-1])))))
        actor_input = _data.with_(actor_input, tk.state, stop_gradient(xp.reshape(state, (-1, int(state.shape[-1])))))
        actor_gen = generator if generator is not None else al._generator
        actor_losses, imagined = al._run(lambda: al._forward_full(actor_input, {"actor_model": params["actor_model"]}),
                                         actor_gen)
        imagined = stop_gradient(imagined)
        value_losses = vl._forward(imagined, {"value_model": params["value_model"]})
        replay_value = None
        if self.replay_value_loss_weight:
            vk = vl.tensor_keys
            feats: dict = {}
            for key in getattr(vl._networks["value_model"], "in_keys", []):
                feats = _data.with_(feats, key, _get(nxt, key, "a value-model input written by the world model"))
            lam = _get(imagined, "lambda_target", "the imagined lambda-return")
            feats = _data.with_(feats, vk.bootstrap, xp.reshape(lam[..., 0, 0], batch_shape))
            for k in (vk.reward, vk.done, vk.terminated):
                feats = _data.with_(feats, _next(k), _get(batch, _next(k), "a replay reward/done/terminated entry"))
            replay_value = vl._replay(feats, {"value_model": params["value_model"]}, self.continuation_horizon,
                                      self.lmbda)["loss_replay_value"]
        else:
            replay_value = xp.zeros((), dtype=state.dtype, **_dev_kw(state))
        res: dict = {k: xp.reshape(v, ()) for k, v in model_losses.items()}
        res.update(actor_losses)
        res.update(value_losses)
        res["loss_replay_value"] = self.replay_value_loss_weight * replay_value
        res["replay_value"] = stop_gradient(replay_value)
        ctx = _data.with_({}, tk.state, stop_gradient(state))
        res["replay_context"] = _data.with_(ctx, tk.belief, stop_gradient(belief))
        return res

    def forward(self, batch: Mapping, *, generator: Any = None) -> dict:
        """The outputs (``dict``) with the current parameters."""
        return self._select(self._forward(batch, self.params, generator))

    def __call__(self, batch: Mapping, /, *, generator: Any = None) -> dict:  # type: ignore[override]
        return self.forward(batch, generator=generator)

    def value_and_grad(self, batch: Mapping, /, *, terms: Any = None,  # type: ignore[override]
                       generator: Any = None) -> tuple:
        """``(outputs, grads)``: the gradient of the sum of the ``loss_*`` outputs (or of ``terms``) w.r.t.
        :attr:`params` (``{"world_model", "actor_model", "value_model"}``)."""
        from ..autodiff import value_and_grad

        all_keys = self._all_out_keys()
        names = [k for k in all_keys if k.startswith("loss_")] if terms is None else list(terms)
        bad = [t for t in names if t not in all_keys or t == "replay_context"]
        if bad:
            raise ValueError(f"terms: {bad} are not scalar outputs of DreamerV3Loss; outputs: {all_keys}")

        def total(p: dict) -> tuple:
            out = self._forward(batch, p, generator)
            acc = None
            for k in names:
                v = out[k]
                v = namespace_of(v).sum(v) if v.ndim else v
                acc = v if acc is None else acc + v
            return acc, out

        (_, out), grads = value_and_grad(total, has_aux=True)(self.params)
        return self._select(stop_gradient(out)), grads


__all__ += ["DreamerV3Loss"]
