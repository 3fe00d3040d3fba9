"""Self-checks of the losses for ``arrayrl check``.

Each case builds a small float64 loss and batch, then checks

1. the gradient of ``value_and_grad`` against central finite differences (:func:`arrayrl.autodiff.check_grads`);
2. the outputs on every other backend present (torch, array-api-strict) against NumPy's.

:func:`run_checks` returns one result dict per case and backend: ``{"name", "backend", "ok", "max_err", "detail"}``.
:func:`register` adds the cases to the ``arrayrl check`` registry (``registry(name, fn)`` or ``registry.register``).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import numpy as np

__all__ = ["CASES", "run_checks", "register"]


def _transition(rng: np.random.Generator, B: int, obs: tuple, action: np.ndarray) -> dict:
    term = rng.uniform(size=(B, 1)) < 0.3
    return {"observation": rng.normal(size=(B,) + obs), "action": action,
            "next": {"observation": rng.normal(size=(B,) + obs), "reward": rng.normal(size=(B, 1)), "done": term,
                     "terminated": term}}


def _dqn(rng: np.random.Generator) -> tuple:
    from ..nn import MLP, QValueActor
    from .dqn import DQNLoss

    loss = DQNLoss(QValueActor(MLP(in_features=3, out_features=4, num_cells=[8]), action_space="categorical"),
                   action_space="categorical", double_dqn=True, loss_function="smooth_l1")
    return loss, _transition(rng, 6, (3,), rng.integers(0, 4, 6))


def _qmixer(rng: np.random.Generator) -> tuple:
    from ..nn import KeyedModule, Linear, QValueActor
    from ..nn.multiagent import QMixer
    from .multiagent import QMixerLoss

    keys = dict(action_value_key=("agents", "action_value"), action_key=("agents", "action"),
                chosen_action_value_key=("agents", "chosen_action_value"))
    local = QValueActor(KeyedModule(Linear(5, 3), in_keys=[("agents", "observation")],
                                    out_keys=[("agents", "action_value")]), action_space="categorical", **keys)
    mixer = KeyedModule(QMixer((4,), 6, 2), in_keys=[("agents", "chosen_action_value"), "state"],
                        out_keys=["chosen_action_value"])
    loss = QMixerLoss(local, mixer, action_space="categorical")
    term = rng.uniform(size=(5, 1)) < 0.3
    batch = {"agents": {"observation": rng.normal(size=(5, 2, 5)), "action": rng.integers(0, 3, (5, 2))},
             "state": rng.normal(size=(5, 4)),
             "next": {"agents": {"observation": rng.normal(size=(5, 2, 5))}, "state": rng.normal(size=(5, 4)),
                      "reward": rng.normal(size=(5, 1)), "done": term, "terminated": term}}
    return loss, batch


def _iql(rng: np.random.Generator) -> tuple:
    from ..distributions import TanhNormal
    from ..nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, ValueOperator
    from .iql import IQLLoss

    net, ext = MLP(in_features=3, out_features=4, num_cells=[8]), NormalParamExtractor()
    module = KeyedModule(lambda p, o: ext.apply({}, net.apply(p, o)), params=net.params, in_keys=["observation"],
                         out_keys=["loc", "scale"])
    actor = ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal)
    q = ValueOperator(MLP(in_features=5, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    v = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[8]), in_keys=["observation"])
    loss = IQLLoss(actor, q, v, expectile=0.7, loss_function="l2")
    return loss, _transition(rng, 6, (3,), rng.uniform(-0.9, 0.9, size=(6, 2)))


CASES: dict[str, Callable] = {"DQNLoss(double)": _dqn, "QMixerLoss(QMIX)": _qmixer, "IQLLoss": _iql}
TERMS = {"IQLLoss": {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",),
                     "loss_value": ("value_network",)}}


def _backends() -> dict:
    out = {}
    if importlib.util.find_spec("torch") is not None:
        import array_api_compat.torch as t

        out["torch"] = (t, "cpu", t.float64)
    if importlib.util.find_spec("array_api_strict") is not None:
        import array_api_strict as s

        out["array_api_strict"] = (s, None, s.float64)
    return out


def _convert(tree: Any, xp: Any, device: Any, fdtype: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _convert(v, xp, device, fdtype) for k, v in tree.items()}
    a = np.asarray(tree)
    dtype = fdtype if a.dtype.kind == "f" else None
    return xp.asarray(a, dtype=dtype, device=device) if device is not None else xp.asarray(a, dtype=dtype)


def run_checks(seed: int = 0) -> list[dict]:
    """Run every case (see the module docstring); never raises for a numerical mismatch, reports it."""
    from .._backend import to_numpy
    from ..autodiff import check_grads

    results = []
    for name, build in CASES.items():
        loss, batch = build(np.random.default_rng(seed))
        loss.make_value_estimator(gamma=0.9)
        ref_out = loss(dict(batch))

        # semi-gradient losses (stop-gradients, targets) are checked term by term against the network each term
        # trains: finite differences of the other networks would also move the held-out values
        pairs = TERMS.get(name, {"loss": tuple(loss.params)})
        try:
            for term, nets in pairs.items():
                def f(sub: Any, _term: str = term, _nets: tuple = nets, _loss: Any = loss, _batch: Any = batch) -> Any:
                    params = dict(_loss.params)
                    params.update(dict(zip(_nets, sub)))
                    return _loss._forward(dict(_batch), params)[_term]

                check_grads(f, (tuple(loss.params[n] for n in nets),))
            results.append({"name": name, "backend": "numpy", "ok": True, "max_err": 0.0,
                            "detail": "gradients match central finite differences"})
        except AssertionError as err:
            results.append({"name": name, "backend": "numpy", "ok": False, "max_err": float("nan"), "detail": str(err)})
        for bname, (xp, device, fdtype) in _backends().items():
            try:
                loss_b, _ = build(np.random.default_rng(seed))
                loss_b.make_value_estimator(gamma=0.9)
                loss_b.params = _convert(_to_np_tree(loss.params), xp, device, fdtype)
                for tname in loss.delayed_targets:
                    loss_b._set_target(tname, _convert(_to_np_tree(loss.target_params[tname]), xp, device, fdtype))
                out = loss_b(_convert(batch, xp, device, fdtype))
                err = max(float(np.max(np.abs(to_numpy(out[k]) - ref_out[k]))) for k in ref_out)
                results.append({"name": name, "backend": bname, "ok": err < 1e-9, "max_err": err,
                                "detail": "outputs vs NumPy"})
            except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash the CLI
                results.append({"name": name, "backend": bname, "ok": False, "max_err": float("nan"),
                                "detail": f"{type(exc).__name__}: {exc}"})
    return results


def _to_np_tree(tree: Any) -> Any:
    from .._backend import to_numpy

    if isinstance(tree, dict):
        return {k: _to_np_tree(v) for k, v in tree.items()}
    return to_numpy(tree)


def register(registry: Any) -> None:
    """Add the loss checks to the ``arrayrl check`` registry: ``registry.register(name, fn)`` or ``registry(name, fn)``."""
    add = getattr(registry, "register", registry)
    add("objectives", run_checks)
