"""``arrayrl check`` provider: the value estimators vs TorchRL and ``reference/`` (see :mod:`arrayrl.cli`).

Each entry of :data:`CHECKS` maps a component name to ``fn(n_cases, rng, tick) -> dict`` with keys ``cases``,
``value_abs``, ``value_rel``, ``grad_abs``, ``grad_rel``, ``ref_abs`` (against ``reference/``, NaN if not
applicable or when the oracle is absent, see :mod:`arrayrl.check._oracle`) and ``passed`` (see :class:`~arrayrl.check._common.Errors`: maxima over the cases, normwise relative
errors ``max |a - b| / max(1, max |b|)``). Everything is float64. ``tick()`` advances the progress bar once per
case.

TorchRL conventions handled here (see docs/divergences.md): Python-float gamma, lambda and V-trace thresholds are
passed to TorchRL as float64 0-d tensors (TorchRL would round them to float32); reward-to-go is compared where
TorchRL's 1e-7 filter truncation is exact (gamma >= 0.5, T <= 20) and gamma > 0 (TorchRL raises at 0); TorchRL's
TDLambdaEstimator runs with ``vectorized=False`` (its vectorized kernel truncates and raises for ``lmbda=0``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _oracle as oracle
from ._common import TOLERANCE, Errors

__all__ = ["CHECKS", "TOLERANCE"]


def _torch():
    import torch
    import torchrl.objectives.value as TV  # noqa: F401
    from torchrl.objectives.value import functional as TF

    return torch, TF


def _case(rng: np.random.Generator, *, per_step: bool = True, max_T: int = 32) -> dict:
    B, T, Fdim = int(rng.integers(1, 5)), int(rng.integers(1, max_T + 1)), int(rng.choice([1, 1, 2]))
    shape = (B, T, Fdim)
    p = float(rng.choice([0.0, 0.05, 0.2, 0.5]))
    done = rng.random(shape) < p
    if rng.random() < 0.3:
        done[:, -1] = True
    if rng.random() < 0.3:
        done[:, 0] = True
    term = done & (rng.random(shape) < 0.5)
    g = rng.uniform(0.5, 1.0, shape) if per_step and rng.random() < 0.4 else float(rng.choice([0.9, 0.99, 1.0,
                                                                                                rng.random()]))
    lm = rng.uniform(0.0, 1.0, shape) if per_step and rng.random() < 0.4 else float(rng.choice([0.0, 0.95, 1.0,
                                                                                                 rng.random()]))
    lmu = rng.normal(size=shape) * 0.5
    return {
        "state_value": rng.normal(size=shape), "next_state_value": rng.normal(size=shape),
        "reward": rng.normal(size=shape), "done": done, "terminated": term, "gamma": g, "lmbda": lm,
        "log_mu": lmu, "log_pi": lmu + rng.normal(size=shape) * 0.5 * (rng.random(shape) < 0.7),
        "time_dim": int(rng.choice([-2, -2, 1, -3, 0])) if B > 1 else -2,
    }


def _tt(torch, a: Any, grad: bool = False) -> Any:
    if isinstance(a, float):
        return torch.tensor(a, dtype=torch.float64)
    t = torch.tensor(np.asarray(a))
    return t.requires_grad_(True) if grad else t


# --------------------------------------------------------------------------------------------------- functional

# name -> (call(module, args, time_dim), reference call(args, time_dim), differentiable args, case options)
def _functional_specs() -> dict:
    R: Any = oracle.submodule("value")  # None without the oracle: the reference calls are then never made

    def f_td0(m, a, td):
        return m.td0_return_estimate(a["gamma"], a["next_state_value"], a["reward"], a["terminated"])

    def f_td1(m, a, td):
        return m.td1_return_estimate(a["gamma"], a["next_state_value"], a["reward"], a["done"], a["terminated"],
                                     time_dim=td)

    def f_tdl(m, a, td):
        return m.td_lambda_return_estimate(a["gamma"], a["lmbda"], a["next_state_value"], a["reward"], a["done"],
                                           a["terminated"], time_dim=td)

    def f_gae(m, a, td):
        return m.generalized_advantage_estimate(a["gamma"], a["lmbda"], a["state_value"], a["next_state_value"],
                                                a["reward"], a["done"], a["terminated"], time_dim=td)

    def f_vtrace(m, a, td):
        return m.vtrace_advantage_estimate(a["gamma"], a["log_pi"], a["log_mu"], a["state_value"],
                                           a["next_state_value"], a["reward"], a["done"], a["terminated"],
                                           time_dim=td)

    def f_r2g(m, a, td):
        return m.reward2go(a["reward"], a["done"], a["gamma"], time_dim=td)

    return {
        "td0_return_estimate": (f_td0, lambda a, td: R.td0_return(a["gamma"], a["next_state_value"], a["reward"],
                                                                  a["terminated"]),
                                ("next_state_value", "reward"), {}),
        "td1_return_estimate": (f_td1, lambda a, td: R.td1_return(a["gamma"], a["next_state_value"], a["reward"],
                                                                  a["done"], a["terminated"], time_dim=td),
                                ("next_state_value", "reward"), {}),
        "td_lambda_return_estimate": (f_tdl, lambda a, td: R.td_lambda_return(
            a["gamma"], a["lmbda"], a["next_state_value"], a["reward"], a["done"], a["terminated"], time_dim=td),
            ("next_state_value", "reward"), {}),
        "generalized_advantage_estimate": (f_gae, lambda a, td: R.gae(
            a["gamma"], a["lmbda"], a["state_value"], a["next_state_value"], a["reward"], a["done"],
            a["terminated"], time_dim=td), ("state_value", "next_state_value", "reward"), {}),
        "vtrace_advantage_estimate": (f_vtrace, lambda a, td: R.vtrace(
            a["gamma"], a["log_pi"], a["log_mu"], a["state_value"], a["next_state_value"], a["reward"], a["done"],
            a["terminated"], time_dim=td), ("state_value", "next_state_value", "reward"), {}),
        "reward2go": (f_r2g, lambda a, td: R.reward2go(a["reward"], a["done"], a["gamma"], time_dim=td),
                      ("reward",), {"per_step": False, "max_T": 20}),
    }


def _tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _check_functional(name: str) -> Callable:
    def run(n_cases: int, rng: np.random.Generator, tick: Callable[[], None]) -> dict:
        import warnings

        from arrayrl.autodiff import value_and_grad
        from arrayrl.value import functional as F

        torch, TF = _torch()
        call, ref, diff, opts = _functional_specs()[name]
        R = oracle.submodule("value")
        acc = Errors()
        for _ in range(n_cases):
            a = _case(rng, **opts)
            td = a.pop("time_dim")
            acc.label = f"shape={np.shape(a['reward'])}, time_dim={td}"
            if name == "reward2go":
                a["gamma"] = 0.5 + 0.5 * a["gamma"]  # TorchRL's filter is exact there
            ta = {k: _tt(torch, v, grad=k in diff) for k, v in a.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_out = _tuple(call(TF, ta, td))
            cot = [rng.normal(size=tuple(o.shape)) for o in t_out]
            total = sum((o * torch.tensor(c)).sum() for o, c in zip(t_out, cot))
            t_grads = torch.autograd.grad(total, [ta[k] for k in diff], allow_unused=True)

            def ours(*vals, a=a, td=td, cot=cot):
                out = _tuple(call(F, dict(a, **dict(zip(diff, vals))), td))
                xp = vals[0].__array_namespace__()
                s = None
                for o, c in zip(out, cot):
                    s = xp.sum(o * c) if s is None else s + xp.sum(o * c)
                return s, out

            (_, out), grads = value_and_grad(ours, argnums=tuple(range(len(diff))), has_aux=True)(
                *[a[k] for k in diff])
            for o, t in zip(out, t_out):
                acc.value(o, t.detach().numpy())
            for g, t in zip(grads, t_grads):
                acc.grad(g, np.zeros_like(g) if t is None else t.numpy())
            if R is not None:
                for o, e in zip(out, _tuple(ref(a, td))):
                    acc.ref(o, e)
            acc.cases += 1
            tick()
        return acc.result()

    return run


# -------------------------------------------------------------------------------------------- estimator classes


def _check_class(name: str) -> Callable:
    def run(n_cases: int, rng: np.random.Generator, tick: Callable[[], None]) -> dict:
        import tensordict

        import arrayrl.value as AV

        from arrayrl.autodiff import value_and_grad

        torch, _ = _torch()
        import torchrl.objectives.value as TV

        acc = Errors()
        for i in range(n_cases):
            B, T, obs_dim = int(rng.integers(1, 4)), int(rng.integers(1, 16)), 3
            n_agents = int(rng.integers(1, 4)) if name == "MultiAgentGAE" else None
            vshape = (B, T, n_agents, 1) if n_agents else (B, T, 1)
            sshape = (B, T, 1)
            W, b = rng.normal(size=(obs_dim, 1)), rng.normal(size=(1,))
            obs = rng.normal(size=vshape[:-1] + (obs_dim,))
            nobs = rng.normal(size=vshape[:-1] + (obs_dim,))
            r = rng.normal(size=sshape)
            d = rng.random(sshape) < float(rng.choice([0.0, 0.1, 0.3]))
            tm = d & (rng.random(sshape) < 0.5)
            lmu = rng.normal(size=vshape) * 0.3
            lin = torch.nn.Linear(obs_dim, 1).double()
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(W.T))
                lin.bias.copy_(torch.tensor(b))
            tnet = tensordict.nn.TensorDictModule(lin, in_keys=["obs"], out_keys=["state_value"])

            def anet(batch, W=W, b=b):
                return dict(batch, state_value=batch["obs"] @ W + b)

            anet.in_keys, anet.out_keys = [("obs",)], [("state_value",)]  # type: ignore[attr-defined]
            kw: dict = {"differentiable": True}
            if name in ("TDLambdaEstimator", "GAE", "MultiAgentGAE"):
                kw["lmbda"] = float(rng.choice([0.0, 0.5, 0.95, 1.0]))
            if name == "TDLambdaEstimator":  # TorchRL's vectorized TD(lambda) truncates, and fails at lmbda=0
                kw["vectorized"] = False
            if name == "GAE" or name == "MultiAgentGAE":
                kw["average_gae"] = bool(rng.random() < 0.3) and B * T > 1
            if name in ("TD0Estimator", "TD1Estimator", "TDLambdaEstimator"):
                kw["average_rewards"] = bool(rng.random() < 0.3) and B * T > 1
            gamma = float(rng.choice([0.9, 0.99, 1.0]))
            acc.label = f"B={B}, T={T}, gamma={gamma}, {kw}"
            tkw = {k: (torch.tensor(v, dtype=torch.float64) if k == "lmbda" else v) for k, v in kw.items()}
            if name == "VTrace":
                Wa = rng.normal(size=(obs_dim, 4))

                def actor(batch, Wa=Wa):
                    logits = batch["obs"] @ Wa
                    xp = logits.__array_namespace__() if hasattr(logits, "__array_namespace__") else np
                    m = xp.max(logits, axis=-1, keepdims=True)
                    return -xp.log(xp.sum(xp.exp(logits - m), axis=-1, keepdims=True))  # log pi(mode)

                from torch.distributions import Categorical
                from torchrl.modules import ProbabilisticActor

                la = torch.nn.Linear(obs_dim, 4, bias=False).double()
                with torch.no_grad():
                    la.weight.copy_(torch.tensor(Wa.T))
                tactor = ProbabilisticActor(
                    tensordict.nn.TensorDictModule(la, in_keys=["obs"], out_keys=["logits"]), in_keys=["logits"],
                    distribution_class=Categorical, return_log_prob=True)
                kw.update(actor_network=actor, rho_thresh=1.0, c_thresh=1.0)
                tkw.update(actor_network=tactor, rho_thresh=_tt(torch, 1.0), c_thresh=_tt(torch, 1.0))
            ours = getattr(AV, name)(gamma=gamma, value_network=anet, **kw)
            theirs = getattr(TV, name)(gamma=_tt(torch, gamma), value_network=tnet, **tkw)
            batch = {"obs": obs, "action_log_prob": lmu,
                     "next": {"obs": nobs, "reward": r, "done": d, "terminated": tm}}
            obs_t = torch.tensor(obs).requires_grad_(True)
            rew_t = torch.tensor(r).requires_grad_(True)
            td = tensordict.TensorDict({"obs": obs_t, "action_log_prob": torch.tensor(lmu), "next": {
                "obs": torch.tensor(nobs), "reward": rew_t, "done": torch.tensor(d),
                "terminated": torch.tensor(tm)}}, batch_size=[B, T])
            tout = theirs(td)
            w1, w2 = rng.normal(size=vshape), rng.normal(size=vshape)
            total = (tout["advantage"] * torch.tensor(w1)).sum() + (tout["value_target"] * torch.tensor(w2)).sum()
            t_obs, t_rew = torch.autograd.grad(total, [obs_t, rew_t], allow_unused=True)

            def f(o, rr, batch=batch, w1=w1, w2=w2):
                out = ours(dict(batch, obs=o, next=dict(batch["next"], reward=rr)))
                xp = o.__array_namespace__()
                return xp.sum(out["advantage"] * w1) + xp.sum(out["value_target"] * w2), out

            (_, out), (g_obs, g_rew) = value_and_grad(f, argnums=(0, 1), has_aux=True)(obs, r)
            for k in ("advantage", "value_target"):
                acc.value(np.asarray(out[k]), tout[k].detach().numpy())
            for g, t in ((g_obs, t_obs), (g_rew, t_rew)):
                acc.grad(g, np.zeros_like(g) if t is None else t.numpy())
            acc.cases += 1
            tick()
        return acc.result()

    return run


CHECKS: dict[str, Callable] = {
    **{f"value.functional.{n}": _check_functional(n) for n in (
        "td0_return_estimate", "td1_return_estimate", "td_lambda_return_estimate", "generalized_advantage_estimate",
        "vtrace_advantage_estimate", "reward2go")},
    **{f"value.{n}": _check_class(n) for n in (
        "TD0Estimator", "TD1Estimator", "TDLambdaEstimator", "GAE", "MultiAgentGAE", "VTrace")},
}
