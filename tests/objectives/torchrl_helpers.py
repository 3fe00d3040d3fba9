"""Helpers shared by the TorchRL cross-validation tests of tests/objectives (``test_*_torchrl.py``, ``test_mappo.py``,
``test_iql_divergences.py``): torch's float64 default, TorchRL parameters as arrayrl trees, perturbed weights,
recorded draws, standard transitions and actors, and the output / gradient comparisons.

Imported as ``tests.objectives.torchrl_helpers`` (the repository root is on ``sys.path``). torch, tensordict and
torchrl are imported inside the functions, so a module without them can import this one (the callers skip first).
``arrayrl.check.losses`` has close relatives (``_torch_flat``, ``_tree``, ``NormalRecorder``) used by ``arrayrl
check``; they filter and record more than these tests do, so the tests keep their own exact versions here.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import pytest

__all__ = [
    "Comparer", "Recorder", "continuous_actor", "float64_default", "normal_actor", "perturb", "torch_float64",
    "torch_flat", "torch_tree", "transition",
]


# ------------------------------------------------------------------------------------------------ torch state
@contextlib.contextmanager
def torch_float64() -> Iterator[Any]:
    """torch's default dtype float64 and ``torch.manual_seed(0)`` inside; yields ``torch``."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield torch
    torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def float64_default() -> Iterator[None]:
    """Autouse in every module that imports it: each test runs under :func:`torch_float64`."""
    with torch_float64():
        yield


# ------------------------------------------------------------------------------------------------ parameters
def _floating(name: str, v: Any) -> bool:
    return v.dtype.is_floating_point and name != "support"


def torch_flat(td: Any, prefix: str = "", *, floats: bool = False) -> dict:
    """TorchRL params -> ``{dotted name without 'module' levels: tensor}`` for the names starting with ``prefix``
    (stripped); ``floats=True`` keeps only floating leaves whose stripped name is not ``support``."""
    out = {}
    for k, v in td.flatten_keys(".").items():
        name = ".".join(p for p in k.split(".") if p != "module")
        if name.startswith(prefix):
            out[name[len(prefix):]] = v
    return {k: v for k, v in out.items() if _floating(k, v)} if floats else out


def torch_tree(td: Any, prefix: str = "", *, floats: bool = False) -> dict:
    """TorchRL params -> an arrayrl parameter tree of NumPy copies (see :func:`torch_flat`)."""
    from arrayrl.nn.params import unflatten_params

    return unflatten_params({k: v.detach().numpy().copy() for k, v in torch_flat(td, prefix, floats=floats).items()})


def perturb(*tds: Any, scale: float = 0.1, floats: bool = False) -> None:
    """Add ``scale * randn_like`` to every leaf of the TorchRL params ``tds`` (``floats=True``: floating leaves only),
    moving online weights away from the target copies made at construction."""
    import torch

    with torch.no_grad():
        for td in tds:
            for p in td.values(True, True):
                if not floats or p.dtype.is_floating_point:
                    p.add_(scale * torch.randn_like(p))


# ------------------------------------------------------------------------------------------------ draws
class Recorder:
    """Records torch's draws made inside the ``with`` block, in call order, into ``draws`` (NumPy copies):
    ``normal``: the standard-normal draws of ``Normal.rsample`` (``_standard_normal``); ``randn_like``:
    ``torch.randn_like`` (TD3's target-policy noise); ``randperm``: ``torch.randperm`` (REDQ's critic subset);
    ``sample``: ``Normal.sample`` routed through ``rsample`` under ``no_grad`` (the same value ``loc + scale * eps``,
    so its draw is recorded too); ``uniform``: the results of ``Tensor.uniform_`` (CQL's random actions)."""

    def __init__(self, *, normal: bool = True, randn_like: bool = False, randperm: bool = False,
                 sample: bool = False, uniform: bool = False) -> None:
        self._flags = dict(normal=normal, randn_like=randn_like, randperm=randperm, sample=sample, uniform=uniform)

    def __enter__(self) -> "Recorder":
        import torch
        import torch.distributions.normal as tdn

        self.draws: list = []
        self._saved = [(tdn, "_standard_normal", tdn._standard_normal), (torch, "randn_like", torch.randn_like),
                       (torch, "randperm", torch.randperm), (tdn.Normal, "sample", tdn.Normal.sample),
                       (torch.Tensor, "uniform_", torch.Tensor.uniform_)]

        def recording(fn: Any) -> Any:
            def rec(*a: Any, **k: Any) -> Any:
                x = fn(*a, **k)
                self.draws.append(x.detach().numpy().copy())
                return x

            return rec

        def sample(dist: Any, sample_shape: Any = torch.Size()) -> Any:
            with torch.no_grad():
                return dist.rsample(sample_shape)

        for flag, (owner, name, orig) in zip(self._flags, self._saved):
            if self._flags[flag]:
                setattr(owner, name, sample if flag == "sample" else recording(orig))
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, orig in self._saved:
            setattr(owner, name, orig)


# ------------------------------------------------------------------------------------------------ data and nets
def transition(B: int, obs_shape: tuple, action: Any, *, term_p: float = 0.3, trunc_p: float = 0.3,
               weights: bool = False) -> Any:
    """A ``[B]`` TorchRL transition batch (terminations with probability ``term_p``, truncations ``trunc_p`` on
    top); ``weights``: a ``priority_weight`` in [0.5, 1.5)."""
    import torch
    from tensordict import TensorDict

    term = torch.rand(B, 1) < term_p
    done = term | (torch.rand(B, 1) < trunc_p)  # truncations too
    td = TensorDict({"observation": torch.randn(B, *obs_shape), "action": action,
                     ("next", "observation"): torch.randn(B, *obs_shape), ("next", "reward"): torch.randn(B, 1),
                     ("next", "done"): done, ("next", "terminated"): term}, [B])
    if weights:
        td["priority_weight"] = torch.rand(B) + 0.5
    return td


def normal_actor(nobs: int, na: int, distribution_class: Any, *, obs_key: Any = "observation",
                 loc_key: Any = "loc", scale_key: Any = "scale", mlp: Any = None, **kw: Any) -> Any:
    """arrayrl's ``obs -> MLP(8) -> NormalParamExtractor -> (loc, scale) -> distribution_class`` actor (``mlp``
    replaces the MLP; ``kw`` goes to ProbabilisticActor)."""
    from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor

    mlp = mlp or MLP(in_features=nobs, out_features=2 * na, num_cells=[8])
    ape = NormalParamExtractor()
    module = KeyedModule(lambda p, o: ape.apply({}, mlp.apply(p, o)), params=mlp.params, in_keys=[obs_key],
                         out_keys=[loc_key, scale_key])
    return ProbabilisticActor(module, in_keys=[loc_key, scale_key], distribution_class=distribution_class, **kw)


def continuous_actor(nobs: int, na: int, dist: str) -> tuple:
    """TorchRL's and arrayrl's ``TanhNormal`` (``dist="tanh"``) or ``IndependentNormal`` actor, same layout."""
    import torch
    from tensordict.nn import NormalParamExtractor as TNPE
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import IndependentNormal as TIN
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN

    from arrayrl.distributions import IndependentNormal, TanhNormal

    tdist, adist = (TTN, TanhNormal) if dist == "tanh" else (TIN, IndependentNormal)
    tactor = TPA(TensorDictModule(torch.nn.Sequential(TMLP(in_features=nobs, out_features=2 * na, num_cells=[8]),
                                                      TNPE()), ["observation"], ["loc", "scale"]),
                 in_keys=["loc", "scale"], distribution_class=tdist)
    return tactor, normal_actor(nobs, na, adist)


# ------------------------------------------------------------------------------------------------ comparisons
class Comparer:
    """Compares arrayrl's numbers with TorchRL's at ``rtol``/``atol`` and keeps the worst relative error seen per
    quantity in ``max_err`` (the modules' ``MAX_ERR``, printed by their last test). ``shapes``: also assert equal
    shapes; ``floats``: gradients of floating, non-``support`` parameters only (see :func:`torch_flat`);
    ``grad_label``: the prefix of the gradient comparisons' names."""

    def __init__(self, rtol: float, atol: float, *, shapes: bool = False, floats: bool = False,
                 grad_label: str = "grad_") -> None:
        self.rtol, self.atol, self.shapes, self.floats, self.grad_label = rtol, atol, shapes, floats, grad_label
        self.max_err: dict = {}

    def close(self, got: Any, want: Any, what: str) -> None:
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if self.shapes:
            assert got.shape == want.shape, (what, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=self.rtol, atol=self.atol, err_msg=what)
        err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3))) if got.size else 0.0
        kind = what.split(".")[0].split("[")[0]
        self.max_err[kind] = max(self.max_err.get(kind, 0.0), err)

    def flat_grads(self, flat_t: dict, agrads: Any, name: str) -> None:
        """``flat_t`` (``{name: TorchRL parameter}``, its ``.grad`` set) against arrayrl's gradient tree."""
        from arrayrl.nn.params import flatten_params

        flat_a = flatten_params(agrads)
        assert sorted(flat_t) == sorted(flat_a), (sorted(flat_t), sorted(flat_a))
        for k, p in flat_t.items():
            g = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape))
            self.close(flat_a[k], g, f"{self.grad_label}{name}.{k}")

    def grads(self, tparams: Any, agrads: Any, name: str, prefix: str = "") -> None:
        """The gradients of the TorchRL params ``tparams`` (names under ``prefix``) against arrayrl's tree."""
        self.flat_grads(torch_flat(tparams, prefix, floats=self.floats), agrads, name)

    def outputs(self, out: Any, aout: dict, keys: list | None = None) -> None:
        """Every key of TorchRL's output TensorDict (or ``keys``) against arrayrl's output dict; the key sets must be
        equal unless ``keys`` names a subset."""
        import torch

        keys = sorted(out.keys()) if keys is None else keys
        if keys == sorted(out.keys()):
            assert sorted(aout) == keys, (sorted(aout), keys)
        for k in keys:
            want = out.get(k)
            want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(getattr(want, "data", want))
            self.close(aout[k], want, f"out[{k}]")
