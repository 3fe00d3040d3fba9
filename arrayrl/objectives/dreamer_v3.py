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
from .._backend import namespace_of
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


def _without(batch: Mapping, key: tuple) -> dict:
    """A copy of ``batch`` without the nested ``key`` (only the dicts on the path are copied)."""
    out = dict(batch)
    if len(key) == 1:
        out.pop(key[0], None)
    else:
        out[key[0]] = _without(out[key[0]], key[1:])
    return out


def _bins(xp: Any, n: int, like: Any) -> Any:
    return default_bins(n, xp=xp, dtype=like.dtype)


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
        renamed = _data.with_(_without(batch, key), _next(tk.true_reward), reward)
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
